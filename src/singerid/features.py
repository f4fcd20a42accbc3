"""The one front end of the paper: 16 kHz audio -> 64-bin log-mel frames (25 ms Hamming window, 10 ms hop).

Framing is centred (``torch.stft(center=True)`` semantics) with zero ("constant") padding of ``n_fft // 2`` at
both ends, as librosa's default: frame ``i`` is centred on sample ``i * hop_length`` and a signal of ``n``
samples gives ``1 + n // hop_length`` frames (3.49 s at 16 kHz -> 55840 samples -> 350 frames). Zero padding,
unlike reflection, works for signals of any length, even shorter than one window.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# Frames computed per step by log_mel: 60 s at a 10 ms hop keeps a long track's working memory small.
CHUNK_FRAMES = 6000
# The paper's segment, 3.5 s at a 10 ms hop (350 x 64): the window of evaluation and inference, whatever the
# training crop.
SEGMENT_FRAMES = 350


@dataclass(frozen=True)
class FeatureConfig:
    """Log-mel settings; stored with every feature store so that training and inference agree."""

    sample_rate: int = 16000  # Hz
    n_fft: int = 512  # FFT size: the 400-sample window zero-padded to 512
    win_length: int = 400  # 25 ms Hamming window
    hop_length: int = 160  # 10 ms hop -> 100 frames per second
    n_mels: int = 64
    # 20 Hz drops DC and rumble below any singing voice. 7600 Hz stays under the 8 kHz Nyquist limit, where
    # the resampler's anti-aliasing filter rolls off and MP3 encoders often cut. Both as in voxceleb_trainer.
    f_min: float = 20.0
    f_max: float = 7600.0
    log_floor: float = 1e-6  # features are log(mel power + log_floor)

    def __post_init__(self) -> None:
        if min(self.sample_rate, self.n_fft, self.win_length, self.hop_length, self.n_mels) <= 0:
            raise ValueError(f"sample_rate, n_fft, win_length, hop_length and n_mels must be positive: {self}")
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} is longer than n_fft {self.n_fft}")
        if not 0.0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2, got {self.f_min} and {self.f_max}")
        if self.log_floor <= 0.0:
            raise ValueError(f"log_floor must be positive, got {self.log_floor}")

    @property
    def n_freqs(self) -> int:
        """Number of FFT bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1


@dataclass(frozen=True)
class FrontendConfig:
    """How a track's frames were chosen and cleaned, besides the log-mel settings; stored with every feature store
    and checkpoint, so that inference runs the front end the model was trained on."""

    separation: str = "none"  # none | repet | demucs
    separator_weights: str | None = None  # local weights file for neural separators
    regions: str = "auto"  # auto: LRC phrases where a track has usable lyrics, else the detector; vad: always
    max_phrase_seconds: float = 10.0  # an LRC phrase without an end mark lasts at most this long
    min_voice_seconds: float = 1.0  # tracks with less voice than this are rejected
    max_track_seconds: float = 3600.0  # longer files are cut here (guards against huge or endless streams)

    def __post_init__(self) -> None:
        if self.regions not in ("auto", "vad"):
            raise ValueError(f"regions must be 'auto' or 'vad', got '{self.regions}'")


def num_frames(num_samples: int, config: FeatureConfig = FeatureConfig()) -> int:
    """Frames that log_mel gives for ``num_samples`` samples: ``1 + num_samples // hop_length``."""
    return 1 + num_samples // config.hop_length


def frames_to_seconds(frames: float, config: FeatureConfig = FeatureConfig()) -> float:
    """Time in seconds of the centre of frame ``frames`` (also a frame count as a duration)."""
    return frames * config.hop_length / config.sample_rate


def seconds_to_frames(seconds: float, config: FeatureConfig = FeatureConfig()) -> int:
    """Index of the frame whose centre is nearest to ``seconds`` (halves round up)."""
    return math.floor(seconds * config.sample_rate / config.hop_length + 0.5)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz * 3.0 / 200.0
    log_step = math.log(6.4) / 27.0
    logarithmic = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step
    return np.where(hz >= 1000.0, logarithmic, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_step = math.log(6.4) / 27.0
    return np.where(mel >= 15.0, 1000.0 * np.exp(log_step * (mel - 15.0)), mel * 200.0 / 3.0)


def mel_filterbank(config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Triangular mel filters, (n_mels, n_fft // 2 + 1) float32: Slaney scale and area norm, as librosa's."""
    fft_freqs = np.linspace(0.0, config.sample_rate / 2, config.n_freqs)
    mel_edges = np.linspace(_hz_to_mel(config.f_min), _hz_to_mel(config.f_max), config.n_mels + 2)
    hz_edges = _mel_to_hz(mel_edges)
    widths = np.diff(hz_edges)
    offsets = hz_edges[:, np.newaxis] - fft_freqs[np.newaxis, :]
    rising = -offsets[:-2] / widths[:-1, np.newaxis]
    falling = offsets[2:] / widths[1:, np.newaxis]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (hz_edges[2:] - hz_edges[:-2]))[:, np.newaxis]
    return weights.astype(np.float32)


@functools.lru_cache(maxsize=16)
def _analysis_tensors(config: FeatureConfig, device: torch.device) -> tuple[Tensor, Tensor]:
    """Periodic Hamming window (win_length) and transposed mel matrix (n_freqs, n_mels), cached per device."""
    with torch.inference_mode(False):  # plain tensors, usable with autograd even if first built under inference
        window = torch.hamming_window(config.win_length, periodic=True, dtype=torch.float32, device=device)
        mel_matrix = torch.from_numpy(mel_filterbank(config)).T.contiguous().to(device)
    return window, mel_matrix


def _log_mel_padded(padded: Tensor, config: FeatureConfig) -> Tensor:
    """(B, samples) already padded by n_fft // 2 at both ends -> (B, frames, n_mels) log-mel, float32."""
    window, mel_matrix = _analysis_tensors(config, padded.device)
    spectrum = torch.stft(
        padded,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        win_length=config.win_length,
        window=window,
        center=False,
        return_complex=True,
    )
    power = spectrum.real.square() + spectrum.imag.square()  # (B, n_freqs, frames)
    mel = torch.matmul(power.transpose(1, 2), mel_matrix)
    return torch.log(mel + config.log_floor)


class CentredFramer:
    """Cuts a signal, pushed in consecutive blocks of any size, into the samples of its centred frames,
    ``frames_per_piece`` frames at a time.

    The signal is padded with ``window // 2`` zeros in front and enough behind; frame ``i`` covers padded samples
    ``[i * hop, i * hop + window)``, and ``n`` samples have ``1 + n // hop`` frames. Each piece is the float32
    padded samples of its frames, ``(count - 1) * hop + window`` long; memory stays at about a piece and a block,
    and large blocks are not copied whole.
    """

    def __init__(self, window: int, hop: int, frames_per_piece: int) -> None:
        self.window = window
        self.hop = hop
        self.frames_per_piece = frames_per_piece
        # padded samples from the first frame not yet given out, in parts joined when a piece is complete
        self.parts = [np.zeros(window // 2, np.float32)]
        self.held = window // 2
        self.samples = 0
        self.frames = 0  # frames given out

    def push(self, block: np.ndarray) -> Iterator[np.ndarray]:
        """The pieces that `block` completes (to be consumed before the next push)."""
        step = self.frames_per_piece * self.hop
        piece_samples = (self.frames_per_piece - 1) * self.hop + self.window
        self.samples += len(block)
        for first in range(0, len(block), step):
            part = np.asarray(block[first : first + step], np.float32)
            self.parts.append(part)
            self.held += len(part)
            if self.held < piece_samples:
                continue
            pending = np.concatenate(self.parts)
            while len(pending) >= piece_samples:
                yield pending[:piece_samples]
                pending = pending[step:]
                self.frames += self.frames_per_piece
            self.parts, self.held = [pending], len(pending)

    def finish(self) -> Iterator[np.ndarray]:
        """The pieces left at the end of the signal."""
        remaining = 1 + self.samples // self.hop - self.frames
        tail = (remaining - 1) * self.hop + self.window
        pending = np.concatenate([*self.parts, np.zeros(max(tail - self.held, 0), np.float32)])
        for first in range(0, remaining, self.frames_per_piece):
            count = min(self.frames_per_piece, remaining - first)
            yield pending[first * self.hop : (first + count - 1) * self.hop + self.window]


def centred_pieces(blocks: Iterable[np.ndarray], window: int, hop: int, frames_per_piece: int) -> Iterator[np.ndarray]:
    """The pieces of `CentredFramer` for a signal given as consecutive blocks."""
    framer = CentredFramer(window, hop, frames_per_piece)
    for block in blocks:
        yield from framer.push(block)
    yield from framer.finish()


def log_mel_piece(piece: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """(frames, n_mels) float32 log-mel of a piece of `CentredFramer(n_fft, hop_length, ...)`."""
    with torch.inference_mode():
        return _log_mel_padded(torch.from_numpy(piece).unsqueeze(0), config)[0].numpy()


def log_mel_stream(blocks: Iterable[np.ndarray], config: FeatureConfig = FeatureConfig()) -> Iterator[np.ndarray]:
    """`log_mel` of the signal that consecutive mono blocks make up, as (frames, n_mels) float32 chunks of
    CHUNK_FRAMES frames (60 s): the same values, in the memory of a chunk."""
    for piece in centred_pieces(blocks, config.n_fft, config.hop_length, CHUNK_FRAMES):
        yield log_mel_piece(piece, config)


def log_mel(wave: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Mono ``wave`` at ``config.sample_rate`` -> (1 + len // hop_length, n_mels) float32 log-mel frames.

    Long signals are processed CHUNK_FRAMES frames at a time (`log_mel_stream`), each chunk reading its frames'
    samples plus the window overlap, so the result equals the whole-signal computation while memory stays bounded.
    """
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"log_mel expects a mono (samples,) wave, got shape {wave.shape}")
    output = np.empty((num_frames(wave.shape[0], config), config.n_mels), dtype=np.float32)
    first = 0
    for chunk in log_mel_stream([wave], config):
        output[first : first + len(chunk)] = chunk
        first += len(chunk)
    return output


def log_mel_batch(waves: Tensor, config: FeatureConfig = FeatureConfig()) -> Tensor:
    """(B, samples) float tensor -> (B, 1 + samples // hop_length, n_mels) float32, on the input's device."""
    if waves.ndim != 2:
        raise ValueError(f"log_mel_batch expects (batch, samples), got shape {tuple(waves.shape)}")
    half = config.n_fft // 2
    padded = torch.nn.functional.pad(waves.to(torch.float32), (half, half))
    return _log_mel_padded(padded, config)
