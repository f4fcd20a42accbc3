"""Vocal-activity detector quality: frame precision and recall against the vocal stem, on the project's own
synthetic songs, short (10 s) and long (4 min), as `prepare` runs it on a track without lyrics (REPET-SIM's
estimate for the vocal share); beside it, keeping every frame (its precision is the share of sung frames).

The same measure on catalogs on disk, the independent one included (espeak-ng voices over sox accompaniment; it
needs the Debian packages espeak-ng, sox and ffmpeg, so it is run by hand):

    python benchmarks/make_independent_catalog.py /tmp/independent
    python benchmarks/vad_quality.py /tmp/independent --seconds 0-30
    python benchmarks/vad_quality.py /tmp/independent --seconds 30-inf
"""

from __future__ import annotations

import numpy as np
import pytest
import soxr
from vad_quality import region_mask, stem_truth

from singerid.synth import SynthConfig, plan_catalog, render_track
from singerid.vad import detect_vocal_activity

pytestmark = pytest.mark.bench
RATE = 16000


@pytest.mark.parametrize(("seconds", "tracks"), [(10.0, 16), (240.0, 3)])
def test_detector_precision_and_recall(seconds: float, tracks: int) -> None:
    config = SynthConfig(singers=12, tracks=3, seconds=seconds, seed=7, stems=True)
    scores, sung = [], []
    for plan in plan_catalog(config)[:tracks]:
        mix, vocals, _ = render_track(config, plan)
        wave = soxr.resample(mix.mean(axis=0), config.sample_rate, RATE).astype(np.float32)
        stem = soxr.resample(vocals.mean(axis=0), config.sample_rate, RATE).astype(np.float32)
        truth = stem_truth(stem)
        found = region_mask(detect_vocal_activity(wave, RATE), len(truth))
        hits = (found & truth).sum()
        scores.append((hits / max(found.sum(), 1), hits / max(truth.sum(), 1)))
        sung.append(truth.mean())
    precision, recall = np.mean(scores, axis=0)
    print(
        f"\nvocal-activity detector, {tracks} synthetic {seconds:.0f} s songs: precision {precision:.2f}, "
        f"recall {recall:.2f} (every frame: precision {np.mean(sung):.2f})"
    )
