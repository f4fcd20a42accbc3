"""Tests for the log-mel front end, checked against librosa as an independent reference."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from singerid import features
from singerid.features import (
    FeatureConfig,
    frames_to_seconds,
    log_mel,
    log_mel_batch,
    log_mel_stream,
    mel_filterbank,
    num_frames,
    seconds_to_frames,
)

CONFIG = FeatureConfig()
# float32 STFT and matmul against librosa's float32 pipeline: log-domain differences stay near 1e-5;
# 1e-3 leaves room for platform FFT differences while still catching any framing or filter mistake.
LOG_TOLERANCE = 1e-3


def librosa_log_mel(wave: np.ndarray, config: FeatureConfig = CONFIG) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=wave,
        sr=config.sample_rate,
        n_fft=config.n_fft,
        win_length=config.win_length,
        hop_length=config.hop_length,
        window="hamming",
        n_mels=config.n_mels,
        fmin=config.f_min,
        fmax=config.f_max,
        power=2.0,
        center=True,
        pad_mode="constant",
    )
    return np.log(mel + config.log_floor).T


def test_filterbank_matches_librosa_slaney_area_norm() -> None:
    ours = mel_filterbank(CONFIG)
    reference = librosa.filters.mel(
        sr=CONFIG.sample_rate, n_fft=CONFIG.n_fft, n_mels=CONFIG.n_mels, fmin=CONFIG.f_min, fmax=CONFIG.f_max
    )
    assert ours.shape == (64, 257)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-8)


@pytest.mark.filterwarnings("ignore:n_fft=512 is too large")
@pytest.mark.parametrize("num_samples", [55840, 16000 * 2 + 77, 100])
def test_log_mel_matches_librosa(num_samples: int) -> None:
    rng = np.random.default_rng(num_samples)
    time = np.arange(num_samples) / CONFIG.sample_rate
    wave = (0.3 * np.sin(2 * np.pi * 440.0 * time) + 0.05 * rng.standard_normal(num_samples)).astype(np.float32)
    ours = log_mel(wave)
    reference = librosa_log_mel(wave)
    assert ours.dtype == np.float32
    assert ours.shape == reference.shape == (num_frames(num_samples), 64)
    assert np.abs(ours - reference).max() < LOG_TOLERANCE


def test_frame_count_relation() -> None:
    # Centred framing: frames = 1 + samples // hop, so 3.49 s (55840 samples) gives the paper's 350 frames.
    assert log_mel(np.zeros(55840, np.float32)).shape == (350, 64)
    assert num_frames(55840) == 350
    assert num_frames(55839) == 349
    assert num_frames(0) == 1
    assert frames_to_seconds(350) == pytest.approx(3.5)
    assert seconds_to_frames(3.49) == 349
    assert seconds_to_frames(0.004) == 0
    assert seconds_to_frames(0.005) == 1
    assert seconds_to_frames(frames_to_seconds(1234)) == 1234


def test_chunked_equals_unchunked(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    wave = (0.1 * rng.standard_normal(16000 * 12 + 123)).astype(np.float32)
    whole = log_mel(wave)
    for chunk_frames in (1, 7, 250, 1201):
        monkeypatch.setattr(features, "CHUNK_FRAMES", chunk_frames)
        # Same samples, same windows: only float32 rounding of differently blocked FFTs may differ.
        np.testing.assert_allclose(log_mel(wave), whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("num_samples", [16000 * 70 + 37, 100])
def test_blocks_of_any_size_give_the_whole_signal_log_mel(monkeypatch: pytest.MonkeyPatch, num_samples: int) -> None:
    monkeypatch.setattr(features, "CHUNK_FRAMES", 1000)
    wave = (0.1 * np.random.default_rng(4).standard_normal(num_samples)).astype(np.float32)
    cuts = np.cumsum(np.random.default_rng(5).integers(1, 40000, 200))
    chunks = list(log_mel_stream(np.split(wave, cuts[cuts < num_samples]), CONFIG))
    assert max(len(chunk) for chunk in chunks) <= 1000
    np.testing.assert_array_equal(np.concatenate(chunks), log_mel(wave))


def test_batch_equals_single() -> None:
    rng = np.random.default_rng(2)
    waves = (0.2 * rng.standard_normal((3, 16000 + 50))).astype(np.float32)
    batch = log_mel_batch(torch.from_numpy(waves))
    assert batch.shape == (3, num_frames(16050), 64)
    assert batch.dtype == torch.float32
    for index in range(3):
        np.testing.assert_allclose(batch[index].numpy(), log_mel(waves[index]), atol=1e-5)


def test_batch_keeps_gradients() -> None:
    waves = torch.randn(2, 1600, requires_grad=True)
    log_mel_batch(waves).sum().backward()
    assert waves.grad is not None and torch.isfinite(waves.grad).all()


def test_silence_gives_log_floor() -> None:
    result = log_mel(np.zeros(4000, np.float32))
    np.testing.assert_allclose(result, np.log(CONFIG.log_floor), rtol=1e-6)


def test_tone_lands_in_its_mel_band() -> None:
    time = np.arange(16000) / 16000
    result = log_mel(np.sin(2 * np.pi * 1000.0 * time))  # float64 input is accepted
    loudest = result[10:-10].mean(axis=0).argmax()
    filters = mel_filterbank(CONFIG)
    assert loudest == filters[:, round(1000.0 * CONFIG.n_fft / 16000)].argmax()


def test_rejects_bad_input_and_config() -> None:
    with pytest.raises(ValueError, match="mono"):
        log_mel(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="f_max"):
        FeatureConfig(f_max=9000.0)
    with pytest.raises(ValueError, match="win_length"):
        FeatureConfig(win_length=600)
