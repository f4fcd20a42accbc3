"""Optional vocal separation before the front end: "none", "repet" (REPET-SIM) and "demucs" (local weights).

The paper separates vocals with Spleeter, whose weights would have to be downloaded. singerid never
downloads anything, so it offers REPET-SIM (Rafii & Pardo 2012), which needs no learned weights, and a
compact Demucs-like waveform U-Net that loads its weights from a local file (`save_separator_weights`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.ndimage import maximum_filter1d
from torch import Tensor, nn

from singerid.audio import as_mono_float32
from singerid.errors import SingerIdError
from singerid.fileio import atomic_path
from singerid.registry import Registry

WEIGHTS_FORMAT = "singerid-separator"
WEIGHTS_VERSION = 1
_EPS = 1e-8


class SeparationError(SingerIdError):
    """A separator cannot be built or cannot process its input."""


Blocks = Callable[[], Iterable[np.ndarray]]  # a fresh iteration over a signal's consecutive blocks at each call


class Separator(ABC):
    """Estimates the vocal signal of a mono mixture, whole (`separate`) or block by block (`separate_blocks`)."""

    needs_weights: ClassVar[bool] = False

    def separate(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """(samples,) mixture -> (samples,) float32 vocal estimate of the same length."""
        wave = _as_mono(wave, sample_rate)
        vocals = np.empty_like(wave)
        filled = 0
        for block in self.separate_blocks(lambda: [wave], sample_rate, len(wave)):
            vocals[filled : filled + len(block)] = block
            filled += len(block)
        return vocals

    @abstractmethod
    def separate_blocks(self, blocks: Blocks, sample_rate: int, total_samples: int) -> Iterator[np.ndarray]:
        """The vocal estimate of a mixture of `total_samples` samples that `blocks()` yields in consecutive mono
        float32 blocks, as consecutive float32 blocks of any size: the same samples as `separate` of the whole,
        in bounded memory. `blocks` may be called more than once (a separator that needs the signal's statistics
        reads it twice)."""


SEPARATORS: Registry[Separator] = Registry("separator")


def build_separator(name: str, weights: str | Path | None = None) -> Separator:
    """The separator registered as `name`; `weights` is a local file, for separators that need one."""
    separator_class = SEPARATORS.get(name)
    if separator_class.needs_weights:
        return separator_class(weights=weights)  # type: ignore[call-arg]
    if weights is not None:
        raise SeparationError(f"the '{name}' separator takes no weights file, but got {weights}")
    return separator_class()


def signal_to_distortion_ratio(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Plain SDR in dB: 10 log10(|s|^2 / |s - s_hat|^2); +inf for a perfect estimate."""
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    if reference.shape != estimate.shape:
        raise ValueError(f"reference {reference.shape} and estimate {estimate.shape} differ in shape")
    signal_energy = float(np.sum(reference**2))
    error_energy = float(np.sum((reference - estimate) ** 2))
    if error_energy == 0.0:
        return math.inf
    if signal_energy == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_energy / error_energy)


def _as_mono(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    try:
        return as_mono_float32(wave, sample_rate)
    except ValueError as error:
        raise SeparationError(f"separation {error}") from None


def _overlapping_blocks_stream(
    blocks: Iterable[np.ndarray],
    total: int,
    block_samples: int,
    overlap_samples: int,
    process: Callable[[np.ndarray], np.ndarray],
) -> Iterator[np.ndarray]:
    """Applies `process` to equal overlapping blocks of a signal of `total` samples, given as consecutive blocks
    of any size, and cross-fades the results linearly; yields the output as it is finished.

    The layout depends on `total` alone, so the output is the same however the input is cut. Memory stays bounded
    by one block and the run time is linear in the length.
    """
    source = iter(blocks)
    buffer = np.zeros(0, np.float32)  # input from sample `offset` on
    offset = 0

    def take(start: int, end: int) -> np.ndarray:
        nonlocal buffer, offset
        buffer, offset = buffer[start - offset :], start
        pieces = [buffer]
        held = len(buffer)
        while held < end - start:
            block = next(source, None)
            if block is None:
                break
            pieces.append(block)
            held += len(block)
        buffer = np.concatenate(pieces) if len(pieces) > 1 else buffer
        return buffer[: end - start]

    if total <= block_samples:
        yield process(take(0, total))
        return
    overlap_samples = min(overlap_samples, block_samples // 2)
    step_budget = block_samples - overlap_samples
    count = math.ceil((total - overlap_samples) / step_budget)
    block_length = math.ceil((total + (count - 1) * overlap_samples) / count)
    step = block_length - overlap_samples
    fade_in = (np.arange(1, overlap_samples + 1, dtype=np.float32)) / (overlap_samples + 1)
    carried = np.zeros(0, np.float32)  # the faded tail of the last block, to add to the next block's head
    for index in range(count):
        start = index * step
        estimate = process(take(start, min(start + block_length, total)))
        if index > 0:
            estimate[:overlap_samples] *= fade_in
            estimate[:overlap_samples] += carried
        if index == count - 1:
            yield estimate
        else:
            estimate[len(estimate) - overlap_samples :] *= fade_in[::-1]
            carried = estimate[step:]
            yield estimate[:step]


@SEPARATORS.register("none")
class NoSeparation(Separator):
    """Identity: the mixture is passed on unchanged."""

    def separate_blocks(self, blocks: Blocks, sample_rate: int, total_samples: int) -> Iterator[np.ndarray]:
        for block in blocks():
            yield _as_mono(block, sample_rate).copy()


@SEPARATORS.register("repet")
class RepetSim(Separator):
    """REPET-SIM (Rafii & Pardo 2012): the background is what repeats among similar frames.

    For every STFT frame, the K most similar frames (cosine similarity of magnitude spectra, local maxima at
    least `min_repeat_seconds` apart, similarity above `min_similarity`) are found; their element-wise median,
    capped by the mixture, is the repeating background. The vocals get the power-ratio (Wiener-like) soft mask
    1 - (background/mixture)^2, zeroed below `highpass_hz`. Long inputs are processed in cross-faded blocks
    of `block_seconds`, so memory is bounded and the run time is linear in the length.
    """

    def __init__(
        self,
        window_seconds: float = 0.064,
        max_repeats: int = 20,
        min_repeat_seconds: float = 0.5,
        min_similarity: float = 0.0,
        highpass_hz: float = 100.0,
        block_seconds: float = 40.0,
        overlap_seconds: float = 4.0,
        rows_per_step: int = 256,
    ) -> None:
        if max_repeats < 1:
            raise SeparationError(f"max_repeats must be >= 1, got {max_repeats}")
        if block_seconds <= 2 * overlap_seconds:
            raise SeparationError(
                f"block_seconds ({block_seconds}) must exceed twice overlap_seconds ({overlap_seconds})"
            )
        self.window_seconds = window_seconds
        self.max_repeats = max_repeats
        self.min_repeat_seconds = min_repeat_seconds
        self.min_similarity = min_similarity
        self.highpass_hz = highpass_hz
        self.block_seconds = block_seconds
        self.overlap_seconds = overlap_seconds
        self.rows_per_step = rows_per_step

    def separate_blocks(self, blocks: Blocks, sample_rate: int, total_samples: int) -> Iterator[np.ndarray]:
        if total_samples == 0:
            return
        yield from _overlapping_blocks_stream(
            (_as_mono(block, sample_rate) for block in blocks()),
            total_samples,
            block_samples=round(self.block_seconds * sample_rate),
            overlap_samples=round(self.overlap_seconds * sample_rate),
            process=lambda block: self._separate_block(block, sample_rate),
        )

    def _separate_block(self, block: np.ndarray, sample_rate: int) -> np.ndarray:
        n_fft = 2 ** round(math.log2(self.window_seconds * sample_rate))  # 1024 at 16 kHz
        hop = n_fft // 4
        window = torch.hann_window(n_fft)
        signal = torch.from_numpy(np.ascontiguousarray(block))
        if len(block) <= n_fft // 2:  # too short for a reflect-padded STFT: zero-pad it
            signal = nn.functional.pad(signal, (0, n_fft // 2 + 1 - len(block)))
        spectrum = torch.stft(signal, n_fft, hop, window=window, center=True, return_complex=True)
        magnitude = spectrum.abs().T.contiguous().numpy()  # (frames, bins)
        vocal_mask = self._vocal_mask(magnitude, frames_per_second=sample_rate / hop)
        cutoff_bin = math.ceil(self.highpass_hz * n_fft / sample_rate)
        vocal_mask[:, :cutoff_bin] = 0.0
        vocals = spectrum * torch.from_numpy(vocal_mask.T)
        estimate = torch.istft(vocals, n_fft, hop, window=window, center=True, length=signal.shape[0])
        return estimate[: len(block)].numpy().astype(np.float32, copy=False)

    def _vocal_mask(self, magnitude: np.ndarray, frames_per_second: float) -> np.ndarray:
        """(frames, bins) magnitude -> (frames, bins) soft vocal mask in [0, 1]."""
        frames = magnitude.shape[0]
        repeats = min(self.max_repeats, frames)
        min_distance = max(1, round(self.min_repeat_seconds * frames_per_second))
        unit = magnitude / (np.linalg.norm(magnitude, axis=1, keepdims=True) + _EPS)
        mask = np.empty_like(magnitude)
        for first in range(0, frames, self.rows_per_step):
            rows = slice(first, min(first + self.rows_per_step, frames))
            similarity = unit[rows] @ unit.T  # (rows, frames)
            neighbourhood_max = maximum_filter1d(
                similarity, size=2 * min_distance + 1, axis=1, mode="constant", cval=-np.inf
            )
            candidates = np.where(similarity >= neighbourhood_max, similarity, -np.inf)
            chosen = np.argpartition(-candidates, repeats - 1, axis=1)[:, :repeats]
            chosen_similarity = np.take_along_axis(candidates, chosen, axis=1)
            valid = chosen_similarity > self.min_similarity  # (rows, repeats)
            stacked = magnitude[chosen]  # (rows, repeats, bins)
            stacked[~valid] = np.inf
            stacked.sort(axis=1)
            count = valid.sum(axis=1)
            lower = np.maximum((count - 1) // 2, 0)[:, None, None]
            upper = (count // 2)[:, None, None]
            median = 0.5 * (
                np.take_along_axis(stacked, lower, axis=1)[:, 0] + np.take_along_axis(stacked, upper, axis=1)[:, 0]
            )
            mixture = magnitude[rows]
            background = np.minimum(median, mixture)
            mask[rows] = 1.0 - (background / (mixture + _EPS)) ** 2
        return np.clip(mask, 0.0, 1.0)


@dataclass(frozen=True)
class WaveUNetConfig:
    """Architecture of the compact Demucs-like U-Net; stored in every weights file."""

    channels: int = 16  # channels of the first encoder layer
    growth: int = 2  # channel factor per layer
    depth: int = 4
    kernel_size: int = 8
    stride: int = 4
    lstm_layers: int = 1  # BiLSTM bottleneck; 0 for none
    sample_rate: int = 16000


class WaveUNet(nn.Module):
    """Waveform U-Net in the spirit of Demucs: (B, 1, T) mixture -> (B, 1, T) vocals.

    Encoder: strided Conv1d + ReLU, then 1x1 Conv1d + GLU. Bottleneck: BiLSTM over the coarsest frames.
    Decoder: 1x1 Conv1d + GLU, transposed Conv1d, with the matching encoder output added as a skip.
    """

    def __init__(self, config: WaveUNetConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        in_channels = 1
        width = config.channels
        for layer in range(config.depth):
            self.encoder.append(
                nn.Sequential(
                    nn.Conv1d(in_channels, width, config.kernel_size, config.stride),
                    nn.ReLU(),
                    nn.Conv1d(width, 2 * width, 1),
                    nn.GLU(dim=1),
                )
            )
            out_channels = 1 if layer == 0 else in_channels
            decoder_layer: list[nn.Module] = [
                nn.Conv1d(width, 2 * width, 3, padding=1),
                nn.GLU(dim=1),
                nn.ConvTranspose1d(width, out_channels, config.kernel_size, config.stride),
            ]
            if layer > 0:
                decoder_layer.append(nn.ReLU())
            self.decoder.insert(0, nn.Sequential(*decoder_layer))
            in_channels = width
            width *= config.growth
        self.lstm: nn.LSTM | None = None
        self.lstm_projection: nn.Linear | None = None
        if config.lstm_layers > 0:
            self.lstm = nn.LSTM(in_channels, in_channels, config.lstm_layers, bidirectional=True)
            self.lstm_projection = nn.Linear(2 * in_channels, in_channels)

    def valid_length(self, length: int) -> int:
        """The smallest input length >= `length` for which every strided layer divides exactly."""
        kernel, stride = self.config.kernel_size, self.config.stride
        for _ in range(self.config.depth):
            length = max(1, math.ceil((length - kernel) / stride) + 1)
        for _ in range(self.config.depth):
            length = (length - 1) * stride + kernel
        return length

    def forward(self, mixture: Tensor) -> Tensor:
        length = mixture.shape[-1]
        hidden = nn.functional.pad(mixture, (0, self.valid_length(length) - length))
        skips = []
        for layer in self.encoder:
            hidden = layer(hidden)
            skips.append(hidden)
        if self.lstm is not None and self.lstm_projection is not None:
            sequence = hidden.permute(2, 0, 1)  # (frames, B, C)
            sequence = self.lstm_projection(self.lstm(sequence)[0])
            hidden = sequence.permute(1, 2, 0)
        for layer in self.decoder:
            hidden = layer(hidden + skips.pop())
        return hidden[..., :length]


def save_separator_weights(model: WaveUNet, path: str | Path) -> None:
    """Writes `model` as a singerid separator weights file (atomically: temp file, then rename)."""
    checkpoint = {
        "format": WEIGHTS_FORMAT,
        "version": WEIGHTS_VERSION,
        "config": asdict(model.config),
        "state_dict": model.state_dict(),
    }
    with atomic_path(path) as temporary:
        torch.save(checkpoint, temporary)


def load_separator_weights(path: str | Path) -> WaveUNet:
    """Reads a file written by `save_separator_weights`; SeparationError for anything else."""
    path = Path(path)
    try:
        checkpoint: Any = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:
        raise SeparationError(f"{path}: cannot read separator weights ({error})") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != WEIGHTS_FORMAT:
        raise SeparationError(f"{path}: not a '{WEIGHTS_FORMAT}' weights file")
    if checkpoint.get("version") != WEIGHTS_VERSION:
        raise SeparationError(
            f"{path}: separator weights version {checkpoint.get('version')!r} is not supported "
            f"(expected {WEIGHTS_VERSION})"
        )
    try:
        model = WaveUNet(WaveUNetConfig(**checkpoint["config"]))
        model.load_state_dict(checkpoint["state_dict"])
    except (KeyError, TypeError, RuntimeError) as error:
        raise SeparationError(f"{path}: separator weights do not match the architecture ({error})") from error
    return model.eval()


@SEPARATORS.register("demucs")
class DemucsLike(Separator):
    """A compact Demucs-like waveform U-Net whose weights come from a local file, never downloaded."""

    needs_weights: ClassVar[bool] = True

    def __init__(self, weights: str | Path | None, chunk_seconds: float = 10.0, overlap_seconds: float = 1.0) -> None:
        hint = "singerid never downloads weights; pass a local file with --separator-weights PATH"
        if weights is None:
            raise SeparationError(f"the 'demucs' separator needs a local weights file, but none was given ({hint})")
        if not Path(weights).is_file():
            raise SeparationError(
                f"the 'demucs' separator needs a local weights file, but {weights} does not exist ({hint})"
            )
        self.model = load_separator_weights(weights)
        self.chunk_seconds = chunk_seconds
        self.overlap_seconds = overlap_seconds

    def separate_blocks(self, blocks: Blocks, sample_rate: int, total_samples: int) -> Iterator[np.ndarray]:
        expected_rate = self.model.config.sample_rate
        if sample_rate != expected_rate:
            raise SeparationError(f"these separator weights expect {expected_rate} Hz audio, got {sample_rate} Hz")
        if total_samples == 0:
            return
        # the whole mixture's mean and spread, from a first reading of it
        total = squares = 0.0
        for block in blocks():
            block = _as_mono(block, sample_rate).astype(np.float64)
            total += float(block.sum())
            squares += float(np.square(block).sum())
        mean = total / total_samples
        scale = math.sqrt(max(squares / total_samples - mean**2, 0.0)) + _EPS
        normalised = ((_as_mono(block, sample_rate) - mean) / scale for block in blocks())
        for vocals in _overlapping_blocks_stream(
            normalised,
            total_samples,
            block_samples=round(self.chunk_seconds * sample_rate),
            overlap_samples=round(self.overlap_seconds * sample_rate),
            process=self._separate_chunk,
        ):
            yield (vocals * scale).astype(np.float32, copy=False)

    def _separate_chunk(self, chunk: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            mixture = torch.from_numpy(np.ascontiguousarray(chunk))[None, None]
            return self.model(mixture)[0, 0].numpy().copy()
