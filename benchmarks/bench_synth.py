"""Synth time for the default catalog (60 singers, 30 s tracks) on all cores, against MP3-encoding the same
audio alone (the floor that any synthesizer writing these files pays). Target: at most 180 s on 2 cores."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from singerid.audio import write_audio
from singerid.synth import SynthConfig, plan_catalog, synthesize

pytestmark = pytest.mark.bench


def test_default_catalog_synth_time(tmp_path: Path) -> None:
    config = SynthConfig()
    workers = len(os.sched_getaffinity(0))
    tracks = len(plan_catalog(config))
    start = time.perf_counter()
    synthesize(config, tmp_path / "catalog", workers=workers)
    synth_seconds = time.perf_counter() - start

    # reference: encoding 8 tracks of noise-free music-like audio to MP3, scaled to the catalog size
    rng = np.random.default_rng(0)
    t = np.arange(int(config.seconds * config.sample_rate)) / config.sample_rate
    wave = np.stack([0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)] * 2)
    start = time.perf_counter()
    for i in range(8):
        write_audio(tmp_path / f"ref{i}.mp3", wave.astype(np.float32), config.sample_rate)
    encode_seconds = (time.perf_counter() - start) / 8 * tracks / workers

    audio_hours = tracks * config.seconds / 3600
    print(
        f"\nsynth: {tracks} tracks, {audio_hours:.2f} h of audio in {synth_seconds:.1f} s on {workers} cores "
        f"({tracks * config.seconds / synth_seconds:.0f}x real time); MP3 encoding alone: {encode_seconds:.1f} s; "
        f"ratio synth/encode-only {synth_seconds / encode_seconds:.2f}; target 180 s: "
        f"{'met' if synth_seconds <= 180 else 'MISSED'}"
    )
