"""Tests for the track front end: the same frames as a whole-signal computation, read in bounded memory, long files
cut with a warning, and tracks with little voice."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from singerid.audio import AudioError, load_audio, write_audio
from singerid.errors import SignalError
from singerid.features import FeatureConfig, FrontendConfig, log_mel
from singerid.frontend import TrackFrames, TrackFrontend
from singerid.lyrics import read_lrc
from singerid.separation import RepetSim
from singerid.synth import QUICK, SynthConfig, plan_catalog, render_track
from singerid.vad import detect_vocal_activity, lyric_regions

RATE = 16000


def frontend(**settings: object) -> TrackFrontend:
    return TrackFrontend(FrontendConfig(**settings), FeatureConfig())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The first `singerid synth --quick` song (6 s, accompanied, 3.97 s sung) looped to 50 s, as an MP3 with its
    LRC: long enough for several separator blocks and log-mel chunks."""
    config = SynthConfig(**QUICK)
    mix, _, composed = render_track(config, plan_catalog(config)[0])
    folder = tmp_path_factory.mktemp("song")
    audio = folder / "looped song.mp3"
    write_audio(audio, np.tile(mix, 9)[:, : 50 * config.sample_rate], config.sample_rate)
    phrases = [(start + 6 * k, end + 6 * k, text) for k in range(9) for start, end, text in composed.phrases]
    lines = [f"{stamp(start)}{text}\n{stamp(end)}\n" for start, end, text in phrases]  # some beyond the end
    lrc = folder / "looped song.lrc"
    lrc.write_text("".join(lines), encoding="utf-8")
    return audio, lrc


def stamp(seconds: float) -> str:
    return f"[{int(seconds // 60):02d}:{seconds % 60:05.2f}]"


def expected_frames(wave: np.ndarray, regions: list[tuple[float, float]]) -> np.ndarray:
    """What the front end computed before it streamed: the log-mel of the whole signal, then the kept frames."""
    mel = log_mel(wave)
    keep = np.zeros(len(mel), bool)
    for start, end in regions:
        keep[round(start * 100) : round(end * 100)] = True
    return mel[keep].astype(np.float16)


def test_lyrics_frames_equal_the_whole_signal_computation(song: tuple[Path, Path]) -> None:
    audio, lrc = song
    result = frontend().file_frames(audio, lrc)
    assert isinstance(result, TrackFrames) and result.method == "lrc" and result.truncated_seconds == 0.0
    wave = load_audio(audio)
    np.testing.assert_array_equal(frontend().wave_frames(wave, lrc).frames, result.frames)
    lyrics = read_lrc(lrc, duration=len(wave) / RATE)
    np.testing.assert_array_equal(result.frames, expected_frames(wave, lyric_regions(lyrics, len(wave) / RATE)))
    assert result.keep is not None and len(result.keep) == len(log_mel(wave))  # which frames: a mask over all
    np.testing.assert_array_equal(log_mel(wave)[result.keep].astype(np.float16), result.frames)


@pytest.mark.parametrize("separation", ["none", "repet"])
def test_detector_frames_equal_the_whole_signal_computation(song: tuple[Path, Path], separation: str) -> None:
    audio, _ = song
    result = frontend(separation=separation).file_frames(audio, None)
    wave = load_audio(audio)
    vocals = RepetSim().separate(wave, RATE)
    regions = detect_vocal_activity(wave, RATE, vocals=vocals)
    assert result.method == "vad" and result.voice_seconds == pytest.approx(sum(e - s for s, e in regions))
    expected = expected_frames(wave if separation == "none" else vocals, regions)
    np.testing.assert_allclose(result.frames.astype(np.float32), expected.astype(np.float32), atol=1e-2)
    assert result.keep is not None and result.keep.sum() == len(result.frames) == len(expected)


def test_a_long_file_is_cut_with_a_warning_and_says_how_much(song: tuple[Path, Path]) -> None:
    audio, lrc = song
    with pytest.warns(UserWarning, match=r"looped song\.mp3.*max_track_seconds \(20 s\).*last 30\.\d s"):
        result = frontend(max_track_seconds=20.0).file_frames(audio, lrc)
    assert result.truncated_seconds == pytest.approx(30.0, abs=0.1)
    full = frontend().file_frames(audio, lrc)
    assert 0 < len(result.frames) < len(full.frames) / 2
    # the same frames, but for the last (its window reaches past the cut)
    np.testing.assert_array_equal(result.frames[:-1], full.frames[: len(result.frames) - 1])


def test_a_long_file_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """Ten minutes with lyrics: the front end holds a minute at a time (about 12 MB), never the signal (38 MB at
    16 kHz) or its log-mel (15 MB); before it streamed, it held both and copies of them (about 90 MB)."""
    seconds = 600
    time = np.arange(RATE * 30) / RATE
    phrase = 0.3 * np.sin(2 * np.pi * 220.0 * time) * (np.sin(2 * np.pi * 0.05 * time) > 0)
    write_audio(tmp_path / "ten minutes.wav", np.tile(phrase, seconds // 30), RATE)
    lrc = tmp_path / "ten minutes.lrc"
    lrc.write_text("".join(f"[{m:02d}:00.00]la\n[{m:02d}:05.00]\n" for m in range(10)), encoding="utf-8")
    tracemalloc.start()
    try:
        result = frontend().file_frames(tmp_path / "ten minutes.wav", lrc)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.voice_seconds == pytest.approx(50.0)
    assert peak < 25 * 2**20, f"peak {peak / 2**20:.0f} MB"


def sung(seconds: float, total: float) -> np.ndarray:
    """A harmonic note with vibrato for `seconds`, centred in `total` seconds of faint noise."""
    time = np.arange(round(seconds * RATE)) / RATE
    phase = 2 * np.pi * np.cumsum(220.0 * (1 + 0.03 * np.sin(2 * np.pi * 5.5 * time))) / RATE
    note = sum(0.6**k * np.sin(k * phase) for k in range(1, 8)) * 0.1
    wave = 0.001 * np.random.default_rng(0).standard_normal(round(total * RATE))
    start = round((total - seconds) / 2 * RATE)
    wave[start : start + len(note)] += note
    return wave.astype(np.float32)


def test_little_voice_is_rejected_unless_allowed(tmp_path: Path) -> None:
    wave = sung(0.7, 4.0)
    with pytest.raises(SignalError, match="only 0.7"):
        frontend().wave_frames(wave)
    with pytest.warns(UserWarning, match="only 0.7.*regions found"):
        result = frontend().wave_frames(wave, allow_little_voice=True)
    assert result.voice_seconds == pytest.approx(0.7, abs=0.05) and abs(len(result.frames) - 70) <= 5
    path = tmp_path / "short.flac"
    write_audio(path, wave, RATE)
    with pytest.raises(AudioError, match="short.flac.*only 0.7"):
        frontend().file_frames(path, None)
    with pytest.warns(UserWarning, match=r"short\.flac: only 0.7"):
        assert len(frontend().file_frames(path, None, allow_little_voice=True).frames) == len(result.frames)


def test_no_voice_found_gives_the_non_silent_signal_when_allowed() -> None:
    noise = np.zeros(3 * RATE, np.float32)
    noise[RATE : 2 * RATE] = 0.05 * np.random.default_rng(1).standard_normal(RATE)
    with pytest.warns(UserWarning, match="only 0.00 s.*whole non-silent signal"):
        result = frontend().wave_frames(noise, allow_little_voice=True)
    assert result.voice_seconds == 0.0 and abs(len(result.frames) - 100) <= 6
    with pytest.raises(SignalError, match="silent"):
        frontend().wave_frames(np.zeros(3 * RATE, np.float32), allow_little_voice=True)


def test_bad_signals_are_signal_errors() -> None:
    with pytest.raises(SignalError, match="mono"):
        frontend().wave_frames(np.zeros((2, RATE), np.float32))
    with pytest.raises(SignalError, match="NaN"):
        frontend().wave_frames(np.full(RATE, np.nan, np.float32))
    with pytest.raises(SignalError, match="silent"):
        frontend().wave_frames(np.zeros(0, np.float32))


@pytest.mark.slow
def test_peak_memory_of_a_forty_minute_file_without_lyrics(tmp_path: Path) -> None:
    """The heaviest path (detector with REPET-SIM's estimate) on 40 minutes: under 300 MB above the resting size;
    it took about 1.4 GB per hour before the front end streamed."""
    config = SynthConfig(seconds=60.0)
    mix, _, _ = render_track(config, plan_catalog(config)[0])
    path = tmp_path / "forty minutes.wav"
    write_audio(path, np.tile(mix.mean(axis=0), 40), config.sample_rate)
    warm = tmp_path / "warm.wav"
    write_audio(warm, mix.mean(axis=0), config.sample_rate)
    script = textwrap.dedent(f"""
        import re
        from pathlib import Path
        from singerid.features import FeatureConfig, FrontendConfig
        from singerid.frontend import TrackFrontend
        def rss(field):
            return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024
        frontend = TrackFrontend(FrontendConfig(), FeatureConfig())
        frontend.file_frames(Path({str(warm)!r}), None)
        before = rss("VmRSS")
        open("/proc/self/clear_refs", "w").write("5")
        result = frontend.file_frames(Path({str(path)!r}), None)
        print(rss("VmHWM") - before, result.frames.shape[0])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert float(out[0]) < 300, f"peak {float(out[0]):.0f} MB above the resting size"
    assert int(out[1]) > 40 * 60 * 100 * 0.3  # it found voice in it
