"""Vocal-activity detector quality on synthetic songs with accompaniment and instrumental intros: frame precision
and recall against the sung phrases, for the detector as `prepare` runs it (vocal share of a REPET-SIM estimate)
and, as the reference in the same run, without the share (the estimate taken to be the whole mixture)."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from singerid.synth import SynthConfig, plan_catalog, render_track
from singerid.vad import detect_vocal_activity

pytestmark = pytest.mark.bench
RATE = 16000


def frame_mask(regions: list[tuple[float, float]], frames: int) -> np.ndarray:
    mask = np.zeros(frames, bool)
    for start, end in regions:
        mask[int(start * 100) : int(end * 100)] = True
    return mask


def test_vocal_share_raises_precision() -> None:
    config = SynthConfig(singers=12, tracks=3, seconds=30.0, seed=7)
    scores: dict[str, list[tuple[float, float]]] = {"with share": [], "without share (reference)": []}
    truth_share = []
    for plan in plan_catalog(config)[:16]:
        mix, _, song = render_track(config, plan)
        wave = soxr.resample(mix.mean(axis=0), config.sample_rate, RATE).astype(np.float32)
        frames = len(wave) // 160 + 1
        truth = frame_mask([(start, end) for start, end, _ in song.phrases], frames)
        truth_share.append(truth.mean())
        for name, vocals in (("with share", None), ("without share (reference)", wave)):
            found = frame_mask(detect_vocal_activity(wave, RATE, vocals=vocals), frames)
            hits = (found & truth).sum()
            scores[name].append((hits / max(found.sum(), 1), hits / max(truth.sum(), 1)))
    voiced = 100 * np.mean(truth_share)
    print(f"\nvocal-activity detector, 16 synthetic 30 s songs (voice on {voiced:.0f} % of frames):")
    for name, values in scores.items():
        precision, recall = np.mean(values, axis=0)
        print(f"  {name}: precision {precision:.2f}, recall {recall:.2f}")
    ratio = np.mean(scores["with share"], axis=0)[0] / np.mean(scores["without share (reference)"], axis=0)[0]
    print(f"  precision ratio {ratio:.2f}x")
