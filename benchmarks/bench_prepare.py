"""Front-end speed: decode + resample + log-mel per core against librosa.load + librosa.feature.melspectrogram in
the same run, for each common catalog format; real-time factor with REPET separation; peak memory for a 10-minute
track, and of the whole front end (`TrackFrontend.file_frames`) for 10 minutes and 2 hours. Targets: >= 3x the
librosa baseline, >= 300x real time per core without separation, < 200 MB for 10 minutes (decode + log-mel), front
end < 300 MB above the resting size for any length.

Every pipeline must decode the file, so the benchmark also times FFmpeg's decoder alone (no conversion, no
resampling, no features): ``librosa / decode-only`` is the largest ratio any front end that decodes the whole file
could reach on that format."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
import torch
from threadpoolctl import threadpool_limits

from singerid.audio import load_audio, write_audio
from singerid.features import FeatureConfig, log_mel
from singerid.parallel import limit_threads
from singerid.separation import RepetSim
from singerid.synth import SynthConfig, plan_catalog, render_track
from singerid.vad import detect_vocal_activity

pytestmark = pytest.mark.bench
SECONDS = 60.0


@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 60 s synthetic song in each catalog format: MP3, Ogg Vorbis, FLAC at 44.1 kHz stereo; WAV 48 kHz 24-bit."""
    config = SynthConfig(seconds=SECONDS)
    mix, _, _ = render_track(config, plan_catalog(config)[0])
    folder = tmp_path_factory.mktemp("bench")
    paths = {"MP3 44.1 kHz stereo": folder / "song.mp3", "FLAC 44.1 kHz 16-bit": folder / "song.flac"}
    for path in paths.values():
        write_audio(path, mix, config.sample_rate)
    paths["Ogg Vorbis 44.1 kHz"] = folder / "song.ogg"
    # libsndfile's Vorbis encoder crashes on one large write; blocks of a few thousand frames are safe.
    with soundfile.SoundFile(paths["Ogg Vorbis 44.1 kHz"], "w", config.sample_rate, 2, "VORBIS", format="OGG") as ogg:
        for start in range(0, mix.shape[1], 4096):
            ogg.write(mix[:, start : start + 4096].T)
    paths["WAV 48 kHz 24-bit"] = folder / "song.wav"
    write_audio(paths["WAV 48 kHz 24-bit"], load_audio(paths["FLAC 44.1 kHz 16-bit"], 48000), 48000, bit_depth=24)
    return paths


def best_of(function: Callable[..., object], *args: object, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return min(times)


def decode_only(path: Path) -> None:
    """FFmpeg's decoder and nothing else: the floor under any front end that reads the whole file."""
    with av.open(str(path)) as container:
        for packet in container.demux(audio=0):
            packet.decode()


def test_front_end_real_time_factor(songs: dict[str, Path]) -> None:
    import librosa

    threads = torch.get_num_threads()
    limit_threads()  # per core
    config = FeatureConfig()

    def ours(path: Path) -> None:
        log_mel(load_audio(path, 16000), config)

    def baseline(path: Path) -> None:
        wave, _ = librosa.load(path, sr=16000, mono=True)
        mel = librosa.feature.melspectrogram(
            y=wave, sr=16000, n_fft=512, win_length=400, hop_length=160, window="hamming", n_mels=64, fmin=20, fmax=7600
        )
        np.log(mel + 1e-6)

    print("\nfront end, one core, 60 s song (best of 5): real time factor (ms)")
    print("| format | singerid | librosa | ratio | decode only | librosa / decode only |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, path in songs.items():
        ours(path), baseline(path)  # warm up
        t_ours, t_base, t_decode = best_of(ours, path), best_of(baseline, path), best_of(decode_only, path)
        print(
            f"| {name} | {SECONDS / t_ours:.0f}x ({t_ours * 1000:.0f}) | {SECONDS / t_base:.0f}x ({t_base * 1000:.0f}) "
            f"| {t_base / t_ours:.2f}x | {SECONDS / t_decode:.0f}x ({t_decode * 1000:.0f}) | {t_base / t_decode:.2f}x |"
        )
    mp3 = songs["MP3 44.1 kHz stereo"]
    wave = load_audio(mp3, 16000)
    t_front = best_of(ours, mp3)
    t_detect = best_of(detect_vocal_activity, wave, 16000, repeats=3)
    print(
        f"vocal-activity detector (tracks without lyrics), accompanied MP3: {SECONDS / t_detect:.0f}x real time "
        f"({t_detect * 1000:.0f} ms; {t_detect / t_front:.1f}x the decode + log-mel time of the same track)"
    )
    separator = RepetSim()
    t_repet = best_of(lambda: log_mel(separator.separate(load_audio(mp3, 16000), 16000), config), repeats=3)
    t_sep_only = best_of(separator.separate, wave, 16000, repeats=3)
    print(f"MP3 with REPET: {SECONDS / t_repet:.0f}x real time (separation alone {SECONDS / t_sep_only:.0f}x)")
    torch.set_num_threads(threads)
    threadpool_limits(None)


def test_peak_memory_of_a_ten_minute_track(songs: dict[str, Path], tmp_path: Path) -> None:
    song = songs["MP3 44.1 kHz stereo"]
    long_song = tmp_path / "ten minutes.flac"
    wave = load_audio(song, 44100)
    write_audio(long_song, np.tile(wave, 10), 44100)
    script = textwrap.dedent(f"""
        import re
        from singerid.audio import load_audio
        from singerid.features import log_mel
        def rss(field):
            return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024
        log_mel(load_audio({str(song)!r}))  # warm up: imports, FFT plans
        before = rss("VmRSS")
        open("/proc/self/clear_refs", "w").write("5")  # reset the peak
        frames = log_mel(load_audio({str(long_song)!r}))
        print(rss("VmHWM") - before, frames.shape[0])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    peak, frames = float(out[0]), int(out[1])
    print(
        f"\npeak memory for a 10-minute FLAC (44.1 kHz mono) -> {frames} log-mel frames: {peak:.0f} MB above the "
        f"process's resting size (target < 200 MB; the 16 kHz signal alone is {600 * 16000 * 4 / 2**20:.0f} MB)"
    )


MEMORY_SCRIPT = """
import re, sys, time, warnings
from pathlib import Path
from singerid.features import FeatureConfig, FrontendConfig
from singerid.frontend import TrackFrontend
def rss(field):
    return int(re.search(field + r":\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024
audio, lrc, warm, max_seconds = sys.argv[1:5]
frontend = TrackFrontend(FrontendConfig(max_track_seconds=float(max_seconds)), FeatureConfig())
frontend.file_frames(Path(warm), None)  # warm up: imports, FFT plans
before = rss("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset the peak
start = time.perf_counter()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    result = frontend.file_frames(Path(audio), Path(lrc) if lrc != "-" else None)
elapsed = time.perf_counter() - start
print(rss("VmHWM") - before, elapsed, result.frames.shape[0], result.method, result.truncated_seconds, len(caught))
"""


@pytest.fixture(scope="module")
def long_songs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """A 60 s synthetic song looped to 10 minutes and to 2 hours: 16-bit WAV, 44.1 kHz mono, with its LRC."""
    config = SynthConfig(seconds=60.0)
    mix, _, song = render_track(config, plan_catalog(config)[0])
    folder = tmp_path_factory.mktemp("long")
    paths = {}
    for name, minutes in (("warm-up", 1), ("10 min", 10), ("2 h", 120)):
        audio = folder / f"{name}.wav"
        write_audio(audio, np.tile(mix.mean(axis=0), minutes), config.sample_rate)
        phrases = [
            (start + 60 * minute, end + 60 * minute, text)
            for minute in range(minutes)
            for start, end, text in song.phrases
        ]
        lines = [
            f"[{int(s // 60):02d}:{s % 60:05.2f}]{text}\n[{int(e // 60):02d}:{e % 60:05.2f}]\n"
            for s, e, text in phrases
        ]
        (folder / f"{name}.lrc").write_text("".join(lines), encoding="utf-8")
        paths[name] = (audio, folder / f"{name}.lrc")
    return paths


def test_peak_memory_of_the_front_end(long_songs: dict[str, tuple[Path, Path]]) -> None:
    """`TrackFrontend.file_frames` (no separation) on 10 minutes and on 2 hours, with lyrics and with the detector
    (which runs REPET-SIM for the vocal share), in a fresh process each: peak RSS above the resting size."""
    warm = long_songs["warm-up"][0]
    print("\nfront end peak memory above the resting size (16-bit WAV, 44.1 kHz mono; kept frames are float16):")
    print("| track | regions | max_track_seconds | peak | time | kept frames | truncated | warnings |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    runs = [("10 min", "lyrics", 3600), ("10 min", "detector", 3600), ("2 h", "lyrics", 3600)]
    runs += [("2 h", "lyrics", 7200), ("2 h", "detector", 7200)]  # the default 3600 s cuts it, with a warning
    for name, regions, max_seconds in runs:
        audio, lrc = long_songs[name]
        args = [str(audio), str(lrc) if regions == "lyrics" else "-", str(warm), str(max_seconds)]
        out = subprocess.run(
            [sys.executable, "-c", MEMORY_SCRIPT, *args], capture_output=True, text=True, check=True
        ).stdout.split()
        peak, seconds, frames, truncated, warned = float(out[0]), float(out[1]), int(out[2]), float(out[4]), out[5]
        print(
            f"| {name} | {regions} | {max_seconds} | {peak:.0f} MB | {seconds:.0f} s | {frames} "
            f"({frames * 128 / 2**20:.0f} MB) | {truncated:.0f} s | {warned} |"
        )
