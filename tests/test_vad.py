"""Tests for singerid.vad: the vocal-activity detector and the choice between lyric phrases and the detector."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from singerid.lyrics import parse_lrc
from singerid.synth import QUICK, SynthConfig, plan_catalog, render_track
from singerid.vad import detect_vocal_activity, frame_features, total_seconds, vocal_regions

SAMPLE_RATE = 16_000


# ------------------------------------------------------------------------------------- vocal activity


def sung_tone(seconds: float, f0: float, rms: float, seed: int = 0) -> np.ndarray:
    """A harmonic 'sung' note: F0 with 5.5 Hz vibrato, 8 decaying harmonics, 30 ms fades."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    frequency = f0 * (1 + 0.03 * np.sin(2 * np.pi * 5.5 * t + rng.uniform(0, 2 * np.pi)))
    phase = 2 * np.pi * np.cumsum(frequency) / SAMPLE_RATE
    tone = sum(0.7**k * np.sin(k * phase + rng.uniform(0, 2 * np.pi)) for k in range(1, 9))
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.03)
    return rms * tone / np.sqrt(np.mean(tone**2)) * fade


def song(regions: list[tuple[float, float, float]], seconds: float, noise_rms: float, seed: int = 0):
    """Quiet broadband noise with sung tones (start, end, F0) at known times."""
    rng = np.random.default_rng(seed)
    wave = noise_rms * rng.standard_normal(round(seconds * SAMPLE_RATE))
    for index, (start, end, f0) in enumerate(regions):
        first = round(start * SAMPLE_RATE)
        tone = sung_tone(end - start, f0, rms=0.1 / (1 + 3 * (index % 2)), seed=seed + index)
        wave[first : first + len(tone)] += tone
    return wave.astype(np.float32)


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    return inter / (max(a[1], b[1]) - min(a[0], b[0]))


@pytest.mark.parametrize("f0", [110.0, 220.0, 330.0, 440.0, 880.0])
def test_detects_sung_regions(f0: float) -> None:
    truth = [(1.0, 3.0), (4.2, 6.5), (8.0, 8.9)]  # the second is 12 dB quieter than the others
    wave = song([(s, e, f0) for s, e in truth], seconds=10.0, noise_rms=0.003, seed=int(f0))
    found = detect_vocal_activity(wave, SAMPLE_RATE)
    assert len(found) == len(truth), found
    for true_region, found_region in zip(truth, found, strict=True):
        assert iou(true_region, found_region) > 0.8, (true_region, found_region)


def piano_loop(seconds: float, seed: int = 0) -> np.ndarray:
    """A repeating accompaniment: a 2 s bar of four decaying harmonic notes (a C major arpeggio) over and over."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(0.5 * SAMPLE_RATE)) / SAMPLE_RATE
    notes = [
        sum(0.6**k * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) for k in range(1, 7)) * np.exp(-4 * t)
        for f0 in (261.6, 329.6, 392.0, 523.3)
    ]
    bar = np.concatenate(notes)
    loop = np.tile(bar, int(np.ceil(seconds / 2.0)))[: round(seconds * SAMPLE_RATE)]
    return 0.05 * loop / np.sqrt(np.mean(loop**2))


def test_harmonic_accompaniment_alone_is_not_singing() -> None:
    """An instrumental intro of 6 s, then three sung phrases over the same accompaniment. Without the vocal share
    the detector took the whole 20 s for singing."""
    truth = [(6.0, 9.0, 196.0), (10.0, 13.0, 247.0), (14.0, 18.0, 294.0)]
    wave = piano_loop(20.0) + song(truth, seconds=20.0, noise_rms=0.001)
    found = detect_vocal_activity(wave.astype(np.float32), SAMPLE_RATE)
    intro = total_seconds([(s, min(e, 6.0)) for s, e in found if s < 6.0])
    assert intro < 1.0, found  # loud and harmonic throughout, yet not sung
    # the first and third phrases are sung 6 dB above the accompaniment (the second 6 dB below it)
    for start, end, _ in truth[::2]:
        assert max(iou((start, end), region) for region in found) > 0.8, found
    # the same decision from a separated estimate given by the caller
    from singerid.separation import RepetSim

    vocals = RepetSim().separate(wave.astype(np.float32), SAMPLE_RATE)
    assert detect_vocal_activity(wave.astype(np.float32), SAMPLE_RATE, vocals=vocals) == found
    with pytest.raises(ValueError, match="vocals has shape"):
        detect_vocal_activity(wave.astype(np.float32), SAMPLE_RATE, vocals=vocals[:-1])


def test_accompaniment_alone_is_not_singing() -> None:
    """An instrumental track: the detector used to fall back to every loud, harmonic frame (all 20 s) when the
    separator found no voice."""
    assert total_seconds(detect_vocal_activity(piano_loop(20.0).astype(np.float32), SAMPLE_RATE)) < 1.0


def quick_song(index: int) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Track `index` of `singerid synth --quick` (a 6 s accompanied song) at 16 kHz mono, and its sung phrases."""
    config = SynthConfig(**QUICK)
    mix, _, composed = render_track(config, plan_catalog(config)[index])
    wave = soxr.resample(mix.mean(axis=0), config.sample_rate, SAMPLE_RATE).astype(np.float32)
    return wave, [(start, end) for start, end, _ in composed.phrases]


def overlap(found: list[tuple[float, float]], truth: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(e, b) - max(s, a)) for s, e in found for a, b in truth)


def test_a_short_accompanied_song_keeps_enough_voice() -> None:
    """The first quick-catalog song sings 3.97 s of its 6 s; the detector found 0.85 s (under the 1 s minimum)."""
    wave, phrases = quick_song(0)
    found = detect_vocal_activity(wave, SAMPLE_RATE)
    assert total_seconds(found) > 1.2, found  # above the 1 s minimum
    assert overlap(found, phrases) > 0.9 * total_seconds(found), (found, phrases)


def test_a_looped_song_keeps_its_phrases_not_its_intros() -> None:
    """The same song looped 8 times (48 s): the separator then takes the repeated voice for background too, and
    the detector kept 40 s, the instrumental intros included."""
    wave, phrases = quick_song(0)
    looped = np.tile(wave, 8)
    period = len(wave) / SAMPLE_RATE
    truth = [(start + k * period, end + k * period) for k in range(8) for start, end in phrases]
    found = detect_vocal_activity(looped, SAMPLE_RATE)
    assert overlap(found, truth) > 0.9 * total_seconds(found), found
    assert total_seconds(found) > 8.0


def test_features_in_blocks_equal_the_whole() -> None:
    wave = song([(1.0, 3.0, 220.0), (4.0, 6.5, 330.0)], seconds=7.0, noise_rms=0.01)
    whole = frame_features([wave], SAMPLE_RATE)
    cuts = np.cumsum(np.random.default_rng(3).integers(1, 9000, 40))
    blocked = frame_features(np.split(wave, cuts[cuts < len(wave)]), SAMPLE_RATE)
    assert len(whole.energy_db) == 1 + len(wave) // 160
    for ours, reference in zip(blocked, whole, strict=True):
        np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-9)
    assert whole.flux_db[100:300].mean() > 0.5  # the first phrase's onset and vibrato change the spectrum


def test_gaps_merge_and_short_regions_drop() -> None:
    wave = song([(1.0, 2.0, 300.0), (2.15, 3.0, 300.0), (5.0, 5.3, 300.0)], seconds=6.0, noise_rms=0.002)
    found = detect_vocal_activity(wave, SAMPLE_RATE, min_region=0.5, min_gap=0.3)
    assert len(found) == 1 and iou(found[0], (1.0, 3.0)) > 0.9, found
    found = detect_vocal_activity(wave, SAMPLE_RATE, min_region=0.2, min_gap=0.05)
    assert len(found) == 3, found


def test_silence_and_tiny_inputs_give_nothing() -> None:
    assert detect_vocal_activity(np.zeros(3 * SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE) == []
    assert detect_vocal_activity(np.zeros(0, dtype=np.float32), SAMPLE_RATE) == []
    assert detect_vocal_activity(sung_tone(0.05, 220.0, 0.1), SAMPLE_RATE) == []
    dither = 1e-5 * np.random.default_rng(0).standard_normal(2 * SAMPLE_RATE)
    assert detect_vocal_activity(dither, SAMPLE_RATE) == []


@pytest.mark.parametrize("rms", [0.01, 0.1, 0.3])
def test_stationary_white_noise_gives_little(rms: float) -> None:
    noise = rms * np.random.default_rng(1).standard_normal(10 * SAMPLE_RATE)
    assert total_seconds(detect_vocal_activity(noise, SAMPLE_RATE)) < 0.5


def test_integer_samples_and_bad_input() -> None:
    wave = song([(0.5, 2.5, 250.0)], seconds=3.0, noise_rms=0.002)
    as_int16 = np.round(wave * 32767).astype(np.int16)
    found = detect_vocal_activity(as_int16, SAMPLE_RATE)
    assert len(found) == 1 and iou(found[0], (0.5, 2.5)) > 0.8
    with pytest.raises(ValueError, match="mono"):
        detect_vocal_activity(np.zeros((2, 100)), SAMPLE_RATE)
    with pytest.raises(ValueError, match="NaN"):
        detect_vocal_activity(np.full(SAMPLE_RATE, np.nan), SAMPLE_RATE)


def test_a_minute_of_phrases_at_many_pitches() -> None:
    regions = [(float(s), s + 4.0, 150.0 + 10 * s) for s in range(0, 60, 8)]
    found = detect_vocal_activity(song(regions, seconds=60.0, noise_rms=0.003), SAMPLE_RATE)
    assert len(found) == len(regions)
    for (start, end, _), region in zip(regions, found, strict=True):
        assert iou((start, end), region) > 0.8, (start, end, region)


# ------------------------------------------------------------------------------------- regions helpers


def test_total_seconds_counts_overlaps_once() -> None:
    assert total_seconds([]) == 0.0
    assert total_seconds([(0.0, 1.0), (0.5, 2.0), (3.0, 3.5)]) == pytest.approx(2.5)
    assert total_seconds([(3.0, 4.0), (0.0, 10.0)]) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="ends before"):
        total_seconds([(2.0, 1.0)])


def test_vocal_regions_prefers_lyrics_and_falls_back_to_detector() -> None:
    wave = song([(1.0, 3.0, 250.0)], seconds=5.0, noise_rms=0.002)
    lyrics = parse_lrc("[00:00.50]a\n[00:01.50]b\n[00:02.00]\n[00:04.00]c\n")
    assert vocal_regions(wave, SAMPLE_RATE, lyrics) == [(0.5, 2.0), (4.0, 5.0)]
    found = vocal_regions(wave, SAMPLE_RATE, parse_lrc("no lyrics here"))
    assert len(found) == 1 and iou(found[0], (1.0, 3.0)) > 0.8
