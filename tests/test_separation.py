"""Vocal separation: SDR on a synthetic repeating mixture, block processing, the local-weights U-Net."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from singerid.registry import RegistryError
from singerid.separation import (
    SEPARATORS,
    DemucsLike,
    RepetSim,
    SeparationError,
    WaveUNet,
    WaveUNetConfig,
    _overlapping_blocks_stream,
    build_separator,
    save_separator_weights,
    signal_to_distortion_ratio,
)

SAMPLE_RATE = 16000


def accompaniment_loop(rng: np.random.Generator) -> np.ndarray:
    """One second of four decaying chords, each starting with a noise click."""
    samples = SAMPLE_RATE
    time = np.arange(samples) / SAMPLE_RATE
    loop = np.zeros(samples)
    quarter = samples // 4
    for index, root in enumerate([110.0, 147.0, 131.0, 165.0]):
        part = slice(index * quarter, (index + 1) * quarter)
        local_time = time[part] - time[part][0]
        for ratio in (1.0, 1.25, 1.5, 2.0):
            loop[part] += 0.15 * np.sin(2 * np.pi * root * ratio * time[part]) * np.exp(-3 * local_time)
        loop[index * quarter : index * quarter + 200] += 0.5 * rng.standard_normal(200) * np.exp(-np.arange(200) / 30)
    return loop


def sung_voice(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A harmonic voice gliding between random notes, with vibrato, on for 2.2 s of every 3.7 s."""
    samples = round(seconds * SAMPLE_RATE)
    time = np.arange(samples) / SAMPLE_RATE
    note_samples = round(0.45 * SAMPLE_RATE)
    notes = 220.0 * 2 ** (rng.integers(0, 12, size=samples // note_samples + 1) / 12)
    glide = np.convolve(np.repeat(notes, note_samples)[:samples], np.ones(1200) / 1200, mode="same")
    f0 = glide * (1 + 0.02 * np.sin(2 * np.pi * 5.5 * time))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voice = sum(0.15 / harmonic * np.sin(harmonic * phase) for harmonic in range(1, 8))
    gate = np.convolve(((time % 3.7) < 2.2).astype(float), np.hanning(801) / np.hanning(801).sum(), mode="same")
    return voice * gate


def repeating_mixture(repeats: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mixture, voice, accompaniment), float32, `repeats` seconds long."""
    rng = np.random.default_rng(seed)
    accompaniment = np.tile(accompaniment_loop(rng), repeats)
    voice = sung_voice(repeats, rng)
    return (
        (accompaniment + voice).astype(np.float32),
        voice.astype(np.float32),
        accompaniment.astype(np.float32),
    )


def test_registry_holds_the_three_separators() -> None:
    assert {"none", "repet", "demucs"} <= set(SEPARATORS.names())
    with pytest.raises(RegistryError, match="spleeter"):
        build_separator("spleeter")


def test_sdr_matches_hand_computed_values() -> None:
    reference = np.array([1.0, 0.0, -1.0])
    assert signal_to_distortion_ratio(reference, 0.5 * reference) == pytest.approx(10 * math.log10(4.0))
    assert signal_to_distortion_ratio(reference, reference) == math.inf
    with pytest.raises(ValueError, match="shape"):
        signal_to_distortion_ratio(reference, reference[:2])


def test_none_returns_the_input_unchanged() -> None:
    wave = np.random.default_rng(1).standard_normal(5000).astype(np.float32)
    out = build_separator("none").separate(wave, SAMPLE_RATE)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, wave)
    assert out is not wave


@pytest.mark.parametrize("seed", [0, 1])
def test_repet_improves_sdr_of_the_voice(seed: int) -> None:
    mixture, voice, _ = repeating_mixture(repeats=10, seed=seed)
    estimate = build_separator("repet").separate(mixture, SAMPLE_RATE)
    assert estimate.shape == mixture.shape
    assert estimate.dtype == np.float32
    improvement = signal_to_distortion_ratio(voice, estimate) - signal_to_distortion_ratio(voice, mixture)
    assert improvement > 6.0  # measured about +9 dB


def test_repet_removes_a_purely_repeating_accompaniment() -> None:
    _, _, accompaniment = repeating_mixture(repeats=10)
    estimate = build_separator("repet").separate(accompaniment, SAMPLE_RATE)
    attenuation_db = 10 * np.log10(np.sum(accompaniment**2) / np.sum(estimate**2))
    assert attenuation_db > 10.0


def test_repet_keeps_silence_silent_and_handles_short_input() -> None:
    separator = build_separator("repet")
    silence = separator.separate(np.zeros(3 * SAMPLE_RATE, dtype=np.float32), SAMPLE_RATE)
    assert np.all(np.isfinite(silence)) and np.max(np.abs(silence)) < 1e-6
    for length in (0, 1, 300, 1500):
        wave = np.random.default_rng(length).standard_normal(length).astype(np.float32)
        out = separator.separate(wave, SAMPLE_RATE)
        assert out.shape == (length,) and np.all(np.isfinite(out))


def test_repet_zeroes_the_vocals_below_the_highpass_cutoff() -> None:
    time = np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE
    rumble = (0.5 * np.sin(2 * np.pi * 40.0 * time) * (1 + 0.9 * np.sin(2 * np.pi * 0.3 * time))).astype(np.float32)
    out = build_separator("repet").separate(rumble, SAMPLE_RATE)
    assert np.sum(out**2) < 1e-3 * np.sum(rumble**2)


def test_cross_faded_blocks_reconstruct_an_identity_exactly() -> None:
    wave = np.random.default_rng(2).standard_normal(10_007).astype(np.float32)
    calls: list[int] = []

    def identity(block: np.ndarray) -> np.ndarray:
        calls.append(len(block))
        return block.copy()

    pieces = [wave[i : i + 777] for i in range(0, len(wave), 777)]  # fed in blocks of any size
    out = np.concatenate(list(_overlapping_blocks_stream(pieces, len(wave), 3000, 500, identity)))
    np.testing.assert_allclose(out, wave, atol=1e-6)
    assert len(calls) == 4 and max(calls) <= 3000 and min(calls) > 500


def test_repet_blocks_agree_with_one_pass_and_stay_bounded() -> None:
    mixture, voice, _ = repeating_mixture(repeats=24)
    blocked = RepetSim(block_seconds=10.0, overlap_seconds=2.0).separate(mixture, SAMPLE_RATE)
    one_pass = RepetSim(block_seconds=60.0).separate(mixture, SAMPLE_RATE)
    assert np.all(np.isfinite(blocked))
    assert np.max(np.abs(blocked)) <= np.max(np.abs(mixture))
    assert signal_to_distortion_ratio(voice, blocked) > signal_to_distortion_ratio(voice, one_pass) - 1.5
    assert signal_to_distortion_ratio(voice, blocked) - signal_to_distortion_ratio(voice, mixture) > 6.0


def test_repet_three_minutes_in_blocks_is_finite_and_bounded() -> None:
    mixture, voice, _ = repeating_mixture(repeats=180)
    estimate = build_separator("repet").separate(mixture, SAMPLE_RATE)
    assert estimate.shape == mixture.shape and estimate.dtype == np.float32
    assert np.all(np.isfinite(estimate))
    assert np.max(np.abs(estimate)) <= np.max(np.abs(mixture))
    assert signal_to_distortion_ratio(voice, estimate) > signal_to_distortion_ratio(voice, mixture)


def test_separate_rejects_non_mono_input() -> None:
    with pytest.raises(SeparationError, match="mono"):
        build_separator("repet").separate(np.zeros((2, 100), dtype=np.float32), SAMPLE_RATE)


TINY_CONFIG = WaveUNetConfig(channels=4, depth=3, kernel_size=8, stride=4, lstm_layers=1)


def test_demucs_without_weights_names_the_path_and_the_option(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_separator.pt"
    with pytest.raises(SeparationError) as caught:
        build_separator("demucs", weights=missing)
    message = str(caught.value)
    assert str(missing) in message and "weights" in message and "--separator-weights" in message
    assert "never downloads" in message
    with pytest.raises(SeparationError, match="--separator-weights"):
        build_separator("demucs")


def test_demucs_loads_saved_weights_and_keeps_the_length(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = WaveUNet(TINY_CONFIG).eval()
    path = tmp_path / "separator.pt"
    save_separator_weights(model, path)
    separator = build_separator("demucs", weights=path)
    assert isinstance(separator, DemucsLike)
    wave = np.random.default_rng(3).standard_normal(3 * SAMPLE_RATE + 123).astype(np.float32)
    out = separator.separate(wave, SAMPLE_RATE)
    assert out.shape == wave.shape and out.dtype == np.float32 and np.all(np.isfinite(out))
    # The loaded weights are the saved ones: same output as the original model on one chunk.
    normalised = (wave - wave.mean()) / (wave.std() + 1e-8)
    with torch.inference_mode():
        expected = model(torch.from_numpy(normalised)[None, None])[0, 0].numpy() * (wave.std() + 1e-8)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


def test_demucs_chunks_long_input_without_seams(tmp_path: Path) -> None:
    path = tmp_path / "separator.pt"
    save_separator_weights(WaveUNet(TINY_CONFIG), path)
    separator = DemucsLike(path, chunk_seconds=2.0, overlap_seconds=0.5)
    wave = np.random.default_rng(4).standard_normal(7 * SAMPLE_RATE + 5).astype(np.float32)
    out = separator.separate(wave, SAMPLE_RATE)
    assert out.shape == wave.shape and np.all(np.isfinite(out))
    assert np.max(np.abs(out)) < 100 * np.max(np.abs(wave))
    with pytest.raises(SeparationError, match="16000 Hz"):
        separator.separate(wave, 22050)


def test_demucs_rejects_a_file_of_the_wrong_format(tmp_path: Path) -> None:
    wrong_format = tmp_path / "other.pt"
    torch.save({"format": "something-else", "state_dict": {}}, wrong_format)
    with pytest.raises(SeparationError, match="singerid-separator"):
        build_separator("demucs", weights=wrong_format)
    not_torch = tmp_path / "notes.pt"
    not_torch.write_text("not a checkpoint")
    with pytest.raises(SeparationError, match="cannot read"):
        build_separator("demucs", weights=not_torch)
    path = tmp_path / "separator.pt"
    save_separator_weights(WaveUNet(TINY_CONFIG), path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["config"]["channels"] = 8
    mismatched = tmp_path / "mismatched.pt"
    torch.save(checkpoint, mismatched)
    with pytest.raises(SeparationError, match="do not match"):
        build_separator("demucs", weights=mismatched)


def test_weights_are_refused_for_separators_that_take_none(tmp_path: Path) -> None:
    with pytest.raises(SeparationError, match="takes no weights"):
        build_separator("repet", weights=tmp_path / "x.pt")
