"""The HTTP service, end to end on loopback: real WAV uploads, a real library, a fake encoder.

The fake ``embed`` stands in for the trained encoder: it finds the loudest frequency of the decoded wave and maps
each known test-tone frequency to a fixed embedding (220 Hz -> e0, 330 Hz -> e1, 440 Hz -> e2, 550 Hz -> e3), so
the expected answers can be worked out by hand from the enrolled vectors below.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from singerid.audio import write_audio
from singerid.errors import SignalError
from singerid.library import SingerLibrary
from singerid.serve import make_server

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
def running(library: SingerLibrary, embed: Callable[[np.ndarray, int], np.ndarray]) -> Iterator[tuple[str, int]]:
    """Serve ``library`` on a free loopback port in a thread; shut it down afterwards."""
    http_server = make_server(library, embed, host="127.0.0.1", port=0, max_bytes=200_000)
    thread = threading.Thread(target=http_server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield http_server.server_address[:2]
    finally:
        http_server.shutdown()
        http_server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()


@pytest.fixture
def server() -> Iterator[tuple[str, int]]:
    """Alice = e0; Bob = e1 tilted towards e0 (cos 0.45 to Alice); Carol = e2 tilted less (cos 0.20)."""
    e0, e1, e2 = (TONE_EMBEDDINGS[frequency] for frequency in (220, 330, 440))
    library = SingerLibrary(DIM, threshold=0.6)
    library.enroll("alice", e0)
    library.enroll("bob", unit(e1 + 0.5 * e0))
    library.enroll("carol", unit(e2 + 0.2 * e0))
    with running(library, fake_embed) as address:
        yield address


def call(address: tuple[str, int], method: str, path: str, body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection(*address, timeout=30)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        assert response.getheader("Content-Type") == "application/json; charset=utf-8"
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_health(server):
    assert call(server, "GET", "/health") == (200, {"status": "ok", "singers": 3, "dim": DIM})


def test_identify_known_and_unknown_tones(server, tones):
    status, answer = call(server, "POST", "/identify?top_k=2", tones[330])
    assert status == 200 and answer["unknown"] is False
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
    assert call(server, "POST", "/enroll?singer_id=dave", tones[550]) == (200, {"enrolled": "dave", "singers": 4})
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
    assert "embed() returned shape (3,), expected (8,)" in caplog.text  # the details stay in the server log


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
