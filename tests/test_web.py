"""The web page of `singerid serve`: its files over plain HTTP, then the page itself in a real headless Chromium.

The audio is the project's own: a cappella stems of synthetic singers (``singerid.synth``), written as MP3 and
decoded by the service. The encoder is a stand-in (a normalised log spectral envelope), so no model is trained;
what the page shows is checked against the service's own JSON answers. The browser test needs Debian's
``chromium`` (/usr/bin/chromium) and the ``playwright`` package, and never downloads a browser.
``SINGERID_WEB_SCREENSHOT=docs/web.png`` makes it save the page with an identification result there.
"""

from __future__ import annotations

import http.client
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest

from singerid.audio import load_audio, write_audio
from singerid.cli import build_parser
from singerid.errors import SignalError
from singerid.library import SingerLibrary
from singerid.serve import MAX_UPLOAD_BYTES, WEB_FILES, make_server
from singerid.synth import QUICK, SynthConfig, plan_catalog, render_track, singer_name
from tests.test_serve import call, running, sample_library

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "s3cret-token"
BANDS = 24
FRAME = 1024
THRESHOLD = 0.9
SYNTH = SynthConfig(**{**QUICK, "seconds": 3.0, "sample_rate": 16000, "channels": 1, "stems": True})


def envelope_embed(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """A stand-in encoder: the wave's log power in BANDS bands from 100 Hz to 7 kHz, centred, of unit norm."""
    frames = wave[: wave.size // FRAME * FRAME].reshape(-1, FRAME)
    power = (np.abs(np.fft.rfft(frames * np.hanning(FRAME), axis=1)) ** 2).mean(axis=0)
    edges = np.round(np.geomspace(100, 7000, BANDS + 1) * FRAME / sample_rate).astype(int)
    bands = np.log([power[low:high].mean() + 1e-9 for low, high in zip(edges[:-1], edges[1:])])
    bands -= bands.mean()
    norm = np.linalg.norm(bands)
    if not len(frames) or norm < 1e-6:
        raise SignalError("the audio is too short or silent")
    return (bands / norm).astype(np.float32)


@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Path]:
    """The vocal stems of the first two songs of each quick-catalog singer, as MP3 files: (singer, song) -> path."""
    folder = tmp_path_factory.mktemp("songs")
    paths = {}
    for plan in plan_catalog(SYNTH):
        if plan.track_index < 2:
            singer = f"{singer_name(SYNTH, plan.singer_index)} ({plan.singer_id})"  # two singers share a name
            path = folder / f"{plan.track_id}.mp3"
            write_audio(path, render_track(SYNTH, plan)[1], SYNTH.sample_rate)
            paths[singer, plan.track_index] = path
    return paths


def song_library(songs: dict[tuple[str, int], Path]) -> SingerLibrary:
    """Each singer enrolled from their first song, as /enroll would."""
    library = SingerLibrary(BANDS, threshold=THRESHOLD)
    for (singer, song), path in songs.items():
        if song == 0:
            library.enroll(singer, envelope_embed(load_audio(path, 16000), 16000))
    return library


def fetch(address: tuple[str, int], path: str) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of a GET without a token."""
    connection = http.client.HTTPConnection(*address, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        connection.close()


# -- the page's files, over plain HTTP -------------------------------------------------------------------------


def test_the_page_and_its_files_load_without_the_token_and_nothing_else_does():
    with running(sample_library(), envelope_embed, token=TOKEN) as address:
        for path, content_type in [("/", "text/html"), ("/app.js", "text/javascript"), ("/app.css", "text/css")]:
            status, headers, body = fetch(address, path)
            assert status == 200 and headers["Content-Type"] == f"{content_type}; charset=utf-8"
            assert int(headers["Content-Length"]) == len(body) > 500
            assert "default-src 'none'" in headers["Content-Security-Policy"]
            assert headers["X-Content-Type-Options"] == "nosniff"
        page = fetch(address, "/")[2].decode()
        assert '<script src="app.js" defer></script>' in page and '<link rel="stylesheet" href="app.css">' in page
        for element in ("file", "record", "identify", "matches", "verdict", "threshold", "verify-singer", "verify",
                        "enroll-id", "enroll-files", "enroll", "singers", "token"):  # fmt: skip
            assert f'id="{element}"' in page
        # the data stays behind the token, on every method, as does the page's path with another method
        assert call(address, "GET", "/singers")[0] == 401
        assert call(address, "POST", "/identify", b"audio")[0] == 401
        assert call(address, "POST", "/", b"x")[0] == 401
        assert call(address, "POST", "/", b"x", {"Authorization": f"Bearer {TOKEN}"}) == (
            405,
            {"error": "/ takes GET"},
        )


def test_the_service_binds_to_loopback_and_limits_uploads_by_default():
    arguments = build_parser().parse_args(["serve", "library"])
    assert arguments.host == "127.0.0.1" and arguments.max_upload_mb * 2**20 == MAX_UPLOAD_BYTES
    server = make_server(sample_library(), envelope_embed, port=0)
    try:
        assert server.server_address[0] == "127.0.0.1" and server.max_bytes == MAX_UPLOAD_BYTES
    finally:
        server.server_close()


def test_the_page_loads_nothing_from_elsewhere():
    """No outside URL in the page's files: no CDN, font or script host; links are relative to the service."""
    folder = Path(__file__).resolve().parents[1] / "src" / "singerid" / "web"
    assert sorted(path.name for path in folder.iterdir()) == sorted(name for name, _ in WEB_FILES.values())
    for path in folder.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"(?i:https?:)|//[\w.-]+\.\w|@import|\burl\(", text), path.name
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert re.findall(r'(?:src|href)="([^"]*)"', page) == ["data:,", "app.css", "app.js"]  # data:, no favicon


def test_singers_lists_enrolled_ids_sorted_and_filtered(server_with_more_singers):
    address = server_with_more_singers
    assert call(address, "GET", "/singers") == (
        200,
        {"singers": ["alice", "Álvaro", "bob", "carol", "Zoë"], "matched": 5, "total": 5},
    )
    assert call(address, "GET", "/singers?q=AL&limit=1")[1] == {"singers": ["alice"], "matched": 2, "total": 5}
    assert call(address, "GET", f"/singers?q={quote('ë')}")[1]["singers"] == ["alice", "Zoë"]  # any e
    assert call(address, "GET", "/singers?q=ALV")[1]["singers"] == ["Álvaro"]
    assert call(address, "GET", "/singers?q=nobody")[1] == {"singers": [], "matched": 0, "total": 5}
    status, answer = call(address, "GET", "/singers?limit=0")
    assert status == 400 and answer["error"] == "limit must be an integer from 1 to 1000, got '0'"


@pytest.fixture
def server_with_more_singers() -> Iterator[tuple[str, int]]:
    library = sample_library()
    for index, singer in enumerate(("Zoë", "Álvaro")):
        library.enroll(singer, np.eye(library.dim, dtype=np.float32)[5 + index])
    with running(library, envelope_embed) as address:
        yield address


# -- the page in a headless Chromium ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by playwright, with a fake microphone (a beep) always allowed."""
    if not CHROMIUM.exists():
        pytest.skip(f"no headless browser for the web page test: {CHROMIUM} not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("no browser driver for the web page test: the playwright package is not installed (pip install "
                    "playwright; it drives /usr/bin/chromium, no browser download)")  # fmt: skip
    fake_microphone = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=fake_microphone)
        yield chromium
        chromium.close()


def shown_matches(page: Any) -> list[tuple[str, str]]:
    rows = page.locator("#matches tbody tr")
    return [(rows.nth(i).locator(".singer").inner_text(), rows.nth(i).locator(".score").inner_text())
            for i in range(rows.count())]  # fmt: skip


def test_the_page_identifies_verifies_and_enrolls_in_a_browser(browser, songs):
    from playwright.sync_api import expect

    library = song_library(songs)
    query = songs["Ren Åberg (s001)", 1]
    authorized = {"Authorization": f"Bearer {TOKEN}"}
    with running(library, envelope_embed, token=TOKEN, max_bytes=2_000_000) as address:
        origin = f"http://{address[0]}:{address[1]}"
        page = browser.new_page()
        requested: list[str] = []
        problems: list[str] = []  # script errors; the refusals below are the browser's console errors too
        refused: list[tuple[str, int]] = []
        page.on("request", lambda request: requested.append(request.url))
        page.on(
            "response", lambda response: response.ok or refused.append((response.url[len(origin) :], response.status))
        )
        page.on(
            "console",
            lambda message: (
                message.type == "error"
                and not message.text.startswith("Failed to load resource: the server responded with a status of")
                and problems.append(message.text)
            ),
        )
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(origin + "/")
        expect(page.locator("#status")).to_have_text("6 singers enrolled; uploads up to 1.9 MiB.")

        # without the token: the service's refusal, as text; then with it
        page.set_input_files("#file", query)
        expect(page.locator("#identify-message")).to_have_text(re.compile("this server needs a token"))
        expect(page.locator("#identify-message")).to_have_class(re.compile("error"))
        page.fill("#token", TOKEN)
        page.press("#token", "Tab")
        page.click("#identify")
        expect(page.locator("#matches tbody tr")).to_have_count(5)
        _, expected = call(address, "POST", "/identify?top_k=5", query.read_bytes(), authorized)
        assert shown_matches(page) == [(match["singer_id"], f"{match['score']:.3f}") for match in expected["matches"]]
        best = expected["matches"][0]
        assert expected["unknown"] is False and best["singer_id"] == "Ren Åberg (s001)"
        expect(page.locator("#verdict")).to_have_text(
            "Known singer: Ren Åberg (s001), with a score at or above the threshold."
        )
        expect(page.locator("#threshold")).to_have_text(f"Threshold: {THRESHOLD:.3f}")
        if os.environ.get("SINGERID_WEB_SCREENSHOT"):
            page.set_viewport_size({"width": 1000, "height": 900})
            page.screenshot(path=os.environ["SINGERID_WEB_SCREENSHOT"], full_page=True)

        # an unknown voice: another singer's song against a stricter threshold
        library.threshold = 0.99
        page.click("#identify")
        expect(page.locator("#verdict")).to_have_text(
            f"Unknown singer: the best score, {best['score']:.3f}, is below the threshold."
        )
        expect(page.locator("#threshold")).to_have_text("Threshold: 0.990")
        library.threshold = THRESHOLD

        # verify against a singer picked from the enrolled list
        page.fill("#verify-singer", "Kai")
        expect(page.locator("#singer-options option")).to_have_count(1)
        chosen = page.locator("#singer-options option").first.get_attribute("value")
        assert chosen == "Kai Dvořák (s000)"
        page.fill("#verify-singer", chosen)
        page.click("#verify")
        _, verdict = call(address, "POST", f"/verify?singer_id={quote(chosen)}", query.read_bytes(), authorized)
        how, side = ("Accepted", "at or above") if verdict["accepted"] else ("Rejected", "below")
        expect(page.locator("#verification")).to_have_text(
            f"{how}: {chosen} scores {verdict['score']:.3f}, {side} the threshold {THRESHOLD:.3f}."
        )
        page.fill("#verify-singer", "Nobody")
        page.click("#verify")
        expect(page.locator("#verification")).to_have_text("singer 'Nobody' is not enrolled")

        # enroll a new singer from two files; the list shows them, and the next identification finds them
        page.fill("#enroll-id", "Newcomer")
        page.set_input_files("#enroll-files", [query, songs["Olu O'Brien (s002)", 1]])
        page.click("#enroll")
        expect(page.locator("#enrollment")).to_have_text("Enrolled Newcomer from 2 files.")
        expect(page.locator("#singers li", has_text="Newcomer")).to_have_count(1)
        expect(page.locator("#singer-count")).to_have_text("(7)")
        expect(page.locator("#status")).to_have_text("7 singers enrolled; uploads up to 1.9 MiB.")
        assert "Newcomer" in library and len(library.prototypes_of("Newcomer")) == 1
        page.fill("#enroll-id", "Too big")
        big = Path(str(query) + ".big.wav")
        big.write_bytes(b"\x00" * 2_100_000)
        page.set_input_files("#enroll-files", big)
        page.click("#enroll")
        expect(page.locator("#enrollment")).to_have_text(re.compile(r"the service takes at most 1\.9 MiB"))
        assert "Too big" not in library

        # record from the (fake) microphone: webm/opus from MediaRecorder, decoded by the service
        page.click("#record")
        expect(page.locator("#record")).to_have_text("Stop recording")
        page.wait_for_timeout(1500)
        page.click("#record")
        expect(page.locator("#clip")).to_have_text(re.compile(r"^recording\.webm \("))
        expect(page.locator("#identify-message")).to_have_text("")
        expect(page.locator("#matches tbody tr")).to_have_count(5)
        expect(page.locator("#verdict")).to_have_text(re.compile("^(Known|Unknown) singer: "))
        page.close()
    assert problems == []
    assert refused == [("/singers?limit=100&q=", 401), ("/identify?top_k=5", 401), ("/verify?singer_id=Nobody", 404)]
    assert all(url.startswith((origin + "/", "blob:")) for url in requested), requested
