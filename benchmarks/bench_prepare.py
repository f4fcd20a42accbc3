"""Front-end speed: decode + resample + log-mel per core against librosa.load + librosa.feature.melspectrogram in
the same run; real-time factor with REPET separation; peak memory for a 10-minute track.
Targets: >= 3x the librosa baseline, >= 300x real time per core without separation, < 200 MB for 10 minutes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

from singerid.audio import load_audio, write_audio
from singerid.features import FeatureConfig, log_mel
from singerid.parallel import limit_threads
from singerid.separation import RepetSim
from singerid.synth import SynthConfig, plan_catalog, render_track

pytestmark = pytest.mark.bench


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60 s synthetic song as a 44.1 kHz stereo MP3, like a catalog file."""
    config = SynthConfig(seconds=60.0)
    mix, _, _ = render_track(config, plan_catalog(config)[0])
    path = tmp_path_factory.mktemp("bench") / "song.mp3"
    write_audio(path, mix, config.sample_rate)
    return path


def best_of(function, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def test_front_end_real_time_factor(song: Path) -> None:
    import librosa

    threads = torch.get_num_threads()
    limit_threads()  # per core
    config = FeatureConfig()
    seconds = 60.0

    def ours() -> None:
        log_mel(load_audio(song, 16000), config)

    def baseline() -> None:
        wave, _ = librosa.load(song, sr=16000, mono=True)
        mel = librosa.feature.melspectrogram(
            y=wave, sr=16000, n_fft=512, win_length=400, hop_length=160, window="hamming", n_mels=64, fmin=20, fmax=7600
        )
        np.log(mel + 1e-6)

    ours(), baseline()  # warm up
    t_ours, t_base = best_of(ours), best_of(baseline)
    separator = RepetSim()
    wave = load_audio(song, 16000)
    t_repet = best_of(lambda: log_mel(separator.separate(load_audio(song, 16000), 16000), config), 3)
    t_sep_only = best_of(lambda: separator.separate(wave, 16000), 3)
    print(
        f"\nfront end, one core, 60 s MP3 44.1 kHz stereo: singerid {seconds / t_ours:.0f}x real time "
        f"({t_ours * 1000:.0f} ms), librosa {seconds / t_base:.0f}x ({t_base * 1000:.0f} ms); "
        f"ratio {t_base / t_ours:.2f}x (target >= 3x; >= 300x real time)"
    )
    print(f"with REPET separation: {seconds / t_repet:.0f}x real time (separation alone {seconds / t_sep_only:.0f}x)")
    torch.set_num_threads(threads)
    threadpool_limits(None)


def test_peak_memory_of_a_ten_minute_track(song: Path, tmp_path: Path) -> None:
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
