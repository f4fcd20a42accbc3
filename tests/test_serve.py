"""The HTTP service, end to end on loopback: real WAV uploads, a real library, a fake encoder.

The fake ``embed`` stands in for the trained encoder: it finds the loudest frequency of the decoded wave and maps
each known test-tone frequency to a fixed embedding (220 Hz -> e0, 330 Hz -> e1, 440 Hz -> e2, 550 Hz -> e3), so
the expected answers can be worked out by hand from the enrolled vectors below.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest

from singerid.audio import write_audio
from singerid.errors import SignalError, SingerIdError
from singerid.library import SingerLibrary
from singerid.serve import ServeError, check_singer_id, exposure_warning, make_server

DIM = 8
TONE_EMBEDDINGS = {
    frequency: np.eye(DIM, dtype=np.float32)[index] for index, frequency in enumerate((220, 330, 440, 550))
}


def fake_embed(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """The embedding of the known tone nearest to the wave's loudest frequency."""
    assert sample_rate == 16000 and wave.dtype == np.float32 and wave.ndim == 1
    spectrum = np.abs(np.fft.rfft(wave))
    peak = float(np.fft.rfftfreq(wave.size, 1.0 / sample_rate)[np.argmax(spectrum)])
    nearest = min(TONE_EMBEDDINGS, key=lambda frequency: abs(frequency - peak))
    if abs(nearest - peak) > 10:
        raise SignalError(f"no known tone near {peak:.0f} Hz")
    return TONE_EMBEDDINGS[nearest]


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


@pytest.fixture(scope="module")
def tones(tmp_path_factory: pytest.TempPathFactory) -> dict[int, bytes]:
    """One-second WAV files (22.05 kHz, so decoding also resamples) of each test tone, as uploaded bytes."""
    folder = tmp_path_factory.mktemp("tones")
    files = {}
    for frequency in (*TONE_EMBEDDINGS, 1000):
        time = np.arange(22050) / 22050
        path = folder / f"{frequency}.wav"
        write_audio(path, (0.5 * np.sin(2 * np.pi * frequency * time)).astype(np.float32), 22050)
        files[frequency] = path.read_bytes()
    return files


@contextlib.contextmanager
def running(
    library: SingerLibrary, embed: Callable[[np.ndarray, int], np.ndarray], **options: Any
) -> Iterator[tuple[str, int]]:
    """Serve ``library`` on a free loopback port in a thread (``options`` go to make_server); shut it down after."""
    http_server = make_server(library, embed, host="127.0.0.1", port=0, **{"max_bytes": 200_000, **options})
    thread = threading.Thread(target=http_server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield http_server.server_address[:2]
    finally:
        http_server.shutdown()
        http_server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()


def sample_library() -> SingerLibrary:
    """Alice = e0; Bob = e1 tilted towards e0 (cos 0.45 to Alice); Carol = e2 tilted less (cos 0.20)."""
    e0, e1, e2 = (TONE_EMBEDDINGS[frequency] for frequency in (220, 330, 440))
    library = SingerLibrary(DIM, threshold=0.6)
    library.enroll("alice", e0)
    library.enroll("bob", unit(e1 + 0.5 * e0))
    library.enroll("carol", unit(e2 + 0.2 * e0))
    return library


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    with running(sample_library(), fake_embed) as address:
        yield address


def exchange(
    address: tuple[str, int], method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, http.client.HTTPMessage, dict[str, Any]]:
    """Status, headers and JSON answer of one request."""
    connection = http.client.HTTPConnection(*address, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        assert response.getheader("Content-Type") == "application/json; charset=utf-8"
        return response.status, response.headers, json.loads(response.read())
    finally:
        connection.close()


def call(
    address: tuple[str, int], method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    status, _, answer = exchange(address, method, path, body, headers)
    return status, answer


BOUNDARY = "----singerid-test-7MA4YWxkTrZu0gW"


def form(*parts: tuple[str, str | None, bytes]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body of (field, file name or None, content) parts, as curl -F sends; its headers."""
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            body += b"Content-Type: application/octet-stream\r\n"
        body += b"\r\n" + content + b"\r\n"
    body += f"--{BOUNDARY}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def read_until_closed(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Whether ``condition`` holds within ``seconds`` (for what a server thread does after its response)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_health(server):
    assert call(server, "GET", "/health") == (
        200,
        {"status": "ok", "singers": 3, "dim": DIM, "max_upload_bytes": 200_000},
    )


def test_identify_known_and_unknown_tones(server, tones):
    status, answer = call(server, "POST", "/identify?top_k=2", tones[330])
    assert status == 200 and answer["unknown"] is False and answer["threshold"] == 0.6
    assert [match["singer_id"] for match in answer["matches"]] == ["bob", "alice"]
    assert answer["matches"][0]["score"] == pytest.approx(1 / np.sqrt(1.25), abs=1e-5)
    assert answer["matches"][1]["score"] == pytest.approx(0.0, abs=1e-5)
    status, answer = call(server, "POST", "/identify", tones[550])  # e3: orthogonal to everyone enrolled
    assert status == 200 and answer["unknown"] is True and len(answer["matches"]) == 3
    assert all(match["score"] == pytest.approx(0.0, abs=1e-5) for match in answer["matches"])


def test_verify(server, tones):
    status, answer = call(server, "POST", "/verify?singer_id=carol", tones[440])
    assert status == 200
    assert answer == {"singer_id": "carol", "score": pytest.approx(1 / np.sqrt(1.04), abs=1e-5), "accepted": True,
                      "threshold": 0.6}  # fmt: skip
    status, answer = call(server, "POST", "/verify?singer_id=bob", tones[440])
    assert status == 200 and answer["accepted"] is False and answer["score"] == pytest.approx(0.0, abs=1e-5)


def test_similar(server):
    status, answer = call(server, "GET", "/similar?singer_id=alice&top_k=5")
    assert status == 200
    assert [match["singer_id"] for match in answer["matches"]] == ["bob", "carol"]
    assert [match["score"] for match in answer["matches"]] == pytest.approx([0.5 / np.sqrt(1.25), 0.2 / np.sqrt(1.04)])


def test_enroll_then_identify(server, tones):
    assert call(server, "POST", "/enroll?singer_id=dave", tones[550]) == (
        200,
        {"enrolled": "dave", "replaced": False, "singers": 4},
    )
    status, answer = call(server, "POST", "/identify?top_k=1", tones[550])
    assert status == 200 and answer["unknown"] is False
    assert answer["matches"] == [{"singer_id": "dave", "score": pytest.approx(1.0, abs=1e-5)}]
    assert call(server, "GET", "/health")[1]["singers"] == 4


def test_errors_are_json_without_tracebacks(server, tones):
    status, answer = call(server, "POST", "/identify", b"RIFF\x00\x00\x00\x00 this is not audio at all" * 20)
    assert status == 400 and answer["error"].startswith("could not decode the uploaded audio: ")
    assert "Traceback" not in answer["error"]
    assert call(server, "POST", "/verify?singer_id=nobody", tones[220]) == (
        404,
        {"error": "singer 'nobody' is not enrolled"},
    )
    assert call(server, "GET", "/similar?singer_id=nobody")[0] == 404
    assert call(server, "POST", "/verify", tones[220]) == (400, {"error": "missing query parameter 'singer_id'"})
    assert call(server, "POST", "/identify?top_k=zero", tones[220])[0] == 400
    assert call(server, "POST", f"/identify?top_k={quote('²')}", tones[220])[0] == 400  # a digit int() refuses
    assert call(server, "POST", "/identify", b"")[1] == {"error": "empty body: send the audio file's bytes"}
    status, answer = call(server, "POST", "/identify", b"\x00" * 300_000)
    assert status == 413 and "exceeds the limit of 200000 bytes" in answer["error"]
    assert call(server, "GET", "/identify")[0] == 405
    assert call(server, "GET", "/nowhere")[0] == 404
    # a SignalError from the encoder (here: a tone it does not know) is the client's problem: 400 with its text
    assert call(server, "POST", "/identify", tones[1000]) == (400, {"error": "no known tone near 1000 Hz"})
    assert call(server, "GET", "/health")[1]["singers"] == 3  # nothing above changed the library


def test_a_server_fault_is_a_500_without_details(tones, caplog):
    library = SingerLibrary(DIM)
    library.enroll("alice", TONE_EMBEDDINGS[220])
    with running(library, lambda wave, sample_rate: np.ones(3, np.float32)) as address:  # wrong dim: a bug
        status, answer = call(address, "POST", "/identify", tones[220])
    assert (status, answer) == (500, {"error": "internal server error; see the server log"})
    assert "embed() returned shape (1, 3), expected (8,) or (n, 8)" in caplog.text  # the details stay in the server log


def test_a_bug_in_the_encoder_is_a_500_not_a_client_error(tones, caplog):
    """Only singerid's input errors are the client's fault; a KeyError or ValueError from a bug is a 500."""
    library = SingerLibrary(DIM, threshold=0.5)
    library.enroll("alice", TONE_EMBEDDINGS[220])

    def broken(wave: np.ndarray, sample_rate: int) -> np.ndarray:
        return {"bug": 1}["missing"]  # a KeyError: must not become a 404 'unknown singer'

    with running(library, broken) as address:
        status, answer = call(address, "POST", "/identify", tones[220])
        assert (status, answer) == (500, {"error": "internal server error; see the server log"})
        assert call(address, "POST", "/verify?singer_id=alice", tones[220])[0] == 500
    assert "KeyError" in caplog.text


def test_multipart_forms_are_uploads_like_raw_bodies(tones):
    """curl -F file=@song.wav: the part named ``file``, else the first file part, byte for byte."""
    waves = []

    def recording_embed(wave: np.ndarray, sample_rate: int) -> np.ndarray:
        waves.append(wave)
        return fake_embed(wave, sample_rate)

    with running(sample_library(), recording_embed) as address:
        body, headers = form(("note", None, b"a text field before the file"), ("file", "song.wav", tones[330]))
        status, answer = call(address, "POST", "/identify?top_k=1", body, headers)
        assert status == 200 and answer["matches"][0]["singer_id"] == "bob"
        body, headers = form(("audio", "song.wav", tones[440]))  # no part named file: the first file part
        assert call(address, "POST", "/verify?singer_id=carol", body, headers)[1]["accepted"] is True
        body, headers = form(("cover", "cover.wav", tones[220]), ("file", "song.wav", tones[550]))
        status, answer = call(address, "POST", "/enroll?singer_id=dave", body, headers)
        assert (status, answer) == (200, {"enrolled": "dave", "replaced": False, "singers": 4})
        assert call(address, "POST", "/identify?top_k=1", tones[330])[1]["matches"][0]["singer_id"] == "bob"
    # the tone's bytes hold lone \r and \n: a parser that translated line ends would have changed the samples
    assert tones[330].count(b"\r") and tones[330].count(b"\n")
    assert np.array_equal(waves[0], waves[-1])


def test_multipart_forms_without_usable_audio_are_400(server, tones):
    body, headers = form(("singer", None, b"alice"))
    assert call(server, "POST", "/identify", body, headers) == (
        400,
        {"error": "multipart/form-data body without a file part: send the audio as a file field "
                  "(curl -F file=@song.wav)"},
    )  # fmt: skip
    body, headers = form(("file", "empty.wav", b""))
    assert call(server, "POST", "/identify", body, headers)[1]["error"] == (
        "the file part of the multipart/form-data body is empty"
    )
    body, _ = form(("file", "song.wav", tones[220]))
    status, answer = call(server, "POST", "/identify", body, {"Content-Type": "multipart/form-data; boundary=other"})
    assert status == 400 and "does not split into parts" in answer["error"]
    body, headers = form(("file", "lines.wav", b"\r\n" * 60_000))  # one object per line in the parser: refused
    status, answer = call(server, "POST", "/identify", body, headers)
    assert status == 400 and "too costly to parse" in answer["error"] and "--data-binary" in answer["error"]


def test_a_stalled_upload_gets_408_and_frees_its_thread():
    with running(sample_library(), fake_embed, read_timeout=1) as address:
        with socket.create_connection(address, timeout=10) as client:
            client.sendall(b"POST /identify HTTP/1.1\r\nHost: test\r\nContent-Length: 1000\r\n\r\n" + b"RIFF" * 5)
            started = time.monotonic()
            reply = read_until_closed(client)  # the server closes the connection: the handler thread is done
            waited = time.monotonic() - started
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 408 ") and b"\r\nConnection: close" in head
        assert json.loads(body) == {"error": "the upload stalled: nothing came for 1 s after 20 of 1000 bytes"}
        assert 0.5 < waited < 5
        with socket.create_connection(address, timeout=10) as idle:  # not even a request line: closed, no answer
            assert read_until_closed(idle) == b""
        assert call(address, "GET", "/health")[0] == 200


def test_an_upload_streams_to_disk_instead_of_memory():
    junk = b"\x00" * 8_000_000
    with running(sample_library(), fake_embed, max_bytes=10_000_000) as address:
        tracemalloc.start()
        try:
            status, answer = call(address, "POST", "/identify", junk)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert status == 400 and answer["error"].startswith("could not decode the uploaded audio: ")
    assert peak < 2_000_000  # holding the body would take its 8 MB


def test_eight_clients_at_once_all_get_answers_with_at_most_max_decodes_embedding(tones):
    lock = threading.Lock()
    embedding_now = most = 0

    def slow_embed(wave: np.ndarray, sample_rate: int) -> np.ndarray:
        nonlocal embedding_now, most
        with lock:
            embedding_now += 1
            most = max(most, embedding_now)
        time.sleep(0.2)
        with lock:
            embedding_now -= 1
        return fake_embed(wave, sample_rate)

    with running(sample_library(), slow_embed, max_decodes=2) as address, ThreadPoolExecutor(8) as clients:
        answers = list(clients.map(lambda _: call(address, "POST", "/identify?top_k=1", tones[220]), range(8)))
    assert len(answers) == 8
    assert all(status == 200 and answer["matches"][0]["singer_id"] == "alice" for status, answer in answers)
    assert most == 2


@pytest.mark.parametrize(
    ("singer_id", "reason"),
    [
        ("", "singer_id is empty or only whitespace"),
        (" \t ", "singer_id is empty or only whitespace"),
        ("x" * 201, "singer_id is 201 characters long; at most 200 are allowed"),
        ("a\x00b", "singer_id 'a\\x00b' contains the control or line-break character U+0000"),
        ("a\nb", "U+000A"),
        ("\x1b[31mred", "U+001B"),
        ("a\u2028b", "U+2028"),
        ("../etc/passwd", "singer_id '../etc/passwd' contains the path separator '/'"),
        ("AC\\DC", "contains the path separator '\\\\'"),
    ],
)
def test_check_singer_id_refuses(singer_id, reason):
    with pytest.raises(SingerIdError, match=re.escape(reason)):
        check_singer_id(singer_id)


def test_check_singer_id_accepts_any_other_text():
    for singer_id in ("Beyoncé", "D'Angelo", "周杰伦", "Guns N' Roses", "Sigur Rós", "x" * 200, "مُحَمَّد\u200cعلی"):
        assert check_singer_id(singer_id) == singer_id


def test_enroll_refuses_bad_singer_ids(server, tones):
    for singer_id, reason in [("a\x00b", "U+0000"), ("a\r\nb", "U+000D"), ("a/b", "'/'"), ("a\\b", "'\\\\'"),
                              ("  ", "empty or only whitespace"), ("x" * 201, "201 characters long")]:  # fmt: skip
        status, answer = call(server, "POST", f"/enroll?singer_id={quote(singer_id)}", tones[550])
        assert status == 400 and reason in answer["error"], answer
    for singer_id in ("Beyoncé", "D'Angelo", "周杰伦"):
        status, answer = call(server, "POST", f"/enroll?singer_id={quote(singer_id)}", tones[550])
        assert status == 200 and answer["enrolled"] == singer_id
    assert call(server, "GET", "/health")[1]["singers"] == 6


def test_each_request_is_logged_on_the_access_logger(server, tones, caplog):
    caplog.set_level(logging.INFO, logger="singerid.serve.access")
    requests = [("GET", "/health", None), ("POST", "/identify?top_k=1", tones[330]), ("GET", "/nowhere", None),
                ("PUT", "/health", None)]  # fmt: skip
    replies = [exchange(server, method, path, body) for method, path, body in requests]
    assert [status for status, _, _ in replies] == [200, 200, 404, 501]  # 501 is JSON too

    def lines() -> list[str]:
        return [record.getMessage() for record in caplog.records if record.name == "singerid.serve.access"]

    assert eventually(lambda: len(lines()) == len(requests)), lines()  # each is written after its response
    for (method, path, _), (status, headers, _) in zip(requests, replies):
        size = headers["Content-Length"]
        line = rf'127\.0\.0\.1 "{method} {re.escape(path)} HTTP/1\.1" {status} {size} \d+\.\dms'
        assert any(re.fullmatch(line, logged) for logged in lines()), lines()
    assert all(record.levelno == logging.INFO for record in caplog.records if record.name == "singerid.serve.access")


def test_a_token_guards_every_request_but_health(tones):
    with running(sample_library(), fake_embed, token="s3cret-token") as address:
        assert call(address, "GET", "/health")[0] == 200
        refused = [None, "Bearer wrong", "Bearer s3cret-token-and-more", "Basic czNjcmV0LXRva2Vu", "Bearer s3cr\xe9t"]
        for authorization in refused:
            headers = {} if authorization is None else {"Authorization": authorization}
            status, reply_headers, answer = exchange(address, "POST", "/identify", tones[330], headers)
            assert status == 401 and reply_headers["WWW-Authenticate"] == "Bearer" and "token" in answer["error"]
        assert call(address, "GET", "/similar?singer_id=alice")[0] == 401
        assert call(address, "GET", "/nowhere")[0] == 401  # no hint of which paths exist
        for scheme in ("Bearer", "bearer"):
            status, answer = call(address, "POST", "/identify", tones[330], {"Authorization": f"{scheme} s3cret-token"})
            assert status == 200 and answer["matches"][0]["singer_id"] == "bob"
    for token in ("", "two words", "line\nbreak"):
        with pytest.raises(ServeError, match="token"):
            make_server(sample_library(), fake_embed, port=0, token=token)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "localhost", "LOCALHOST", "::1"])
def test_no_exposure_warning_on_loopback(host):
    assert exposure_warning(host, None) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.20", "singers.example.org"])
def test_exposure_warning_off_loopback_without_a_token(host):
    warning = exposure_warning(host, None)
    assert warning is not None and "without a token" in warning and "--token" in warning and "\n" not in warning
    assert exposure_warning(host, "s3cret-token") is None


def test_enroll_adds_to_a_singer_unless_told_to_replace(tones):
    """/enroll means what `singerid enroll` means: the clip's windows join what the singer has; replace=1 starts
    the singer afresh."""
    library = SingerLibrary(DIM)
    library.enroll("alice", TONE_EMBEDDINGS[220])
    with running(library, fake_embed) as address:
        assert call(address, "POST", "/enroll?singer_id=alice", tones[330])[1]["replaced"] is False
        both = unit(TONE_EMBEDDINGS[220] + TONE_EMBEDDINGS[330])
        np.testing.assert_allclose(library.prototypes_of("alice")[0], both, atol=1e-6)
        assert call(address, "POST", "/enroll?singer_id=alice&replace=1", tones[440])[1]["replaced"] is True
        np.testing.assert_allclose(library.prototypes_of("alice")[0], TONE_EMBEDDINGS[440], atol=1e-6)
