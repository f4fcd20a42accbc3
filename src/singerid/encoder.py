"""Inference: a trained checkpoint -> singer embeddings of files, signals or stored frames.

    from singerid import SingerEncoder
    encoder = SingerEncoder.load("runs/apnl-m3/best.pt", device="cpu")
    embedding = encoder.embed_file("song.mp3")  # (512,) float32, unit norm, over the vocal regions

A track is cut into 3.5 s windows (the paper's segment, whatever the training crop) over its vocal regions; each
window is embedded and L2-normalised; a track's embedding is the normalised mean of its windows. The front end
(separation, regions, log-mel) is the one the checkpoint's feature store was made with. Inference never imports
the training code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soxr
import torch
from torch import nn

from singerid.catalog import lyrics_beside
from singerid.checkpoint import Checkpoint, load_checkpoint, weights_digest
from singerid.features import SEGMENT_FRAMES, FeatureConfig, FrontendConfig
from singerid.fileio import atomic_path
from singerid.frontend import TrackFrontend


def window_starts(frames: int, window: int, hop: int) -> list[int]:
    """Starts of windows of `window` frames every `hop` frames; the last window ends at the last frame."""
    if frames <= window:
        return [0]
    starts = list(range(0, frames - window + 1, hop))
    if starts[-1] != frames - window:
        starts.append(frames - window)
    return starts


def windows(frames: np.ndarray, window: int, hop: int) -> np.ndarray:
    """(n_windows, window, n_mels) float32; a track shorter than a window is repeated to fill one."""
    if len(frames) < window:
        frames = np.tile(frames, (-(-window // len(frames)), 1))[:window]
    return np.stack([frames[s : s + window] for s in window_starts(len(frames), window, hop)]).astype(np.float32)


class SingerEncoder:
    """A trained singer-embedding model with its front end."""

    def __init__(
        self,
        model: nn.Module,
        features: FeatureConfig,
        frontend: FrontendConfig,
        device: str | torch.device = "cpu",
        *,
        window_frames: int = SEGMENT_FRAMES,
        metric: str = "cosine",
        source: str = "",
        cache_key: str = "",
    ) -> None:
        if window_frames < 32:
            raise ValueError(f"window_frames must be at least 32, got {window_frames}")
        self.model = model.to(device).eval()
        self.features = features
        self.frontend_config = frontend
        self.window_frames = window_frames  # frames per embedded window (350: 3.5 s)
        self.metric = metric  # how its embeddings compare: "cosine", or "sqeuclidean" for the prototypical loss
        self.device = torch.device(device)
        self.source = source
        self.cache_key = cache_key  # names cached embeddings: the weights' digest
        self._frontend: TrackFrontend | None = None

    @classmethod
    def load(
        cls, checkpoint: str | Path, device: str | torch.device = "cpu", *, window_frames: int = SEGMENT_FRAMES
    ) -> SingerEncoder:
        """The encoder of a checkpoint file (RUN/best.pt)."""
        return cls.from_checkpoint(load_checkpoint(checkpoint), device, window_frames=window_frames)

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Checkpoint, device: str | torch.device = "cpu", *, window_frames: int = SEGMENT_FRAMES
    ) -> SingerEncoder:
        return cls(
            checkpoint.build_model(),
            checkpoint.features,
            checkpoint.frontend,
            device,
            window_frames=window_frames,
            metric=checkpoint.metric,
            source=str(checkpoint.source),
            cache_key="model-" + weights_digest(checkpoint.model),
        )

    @property
    def embedding_dim(self) -> int:
        return int(self.model.embedding_dim)

    @property
    def frontend(self) -> TrackFrontend:
        if self._frontend is None:
            self._frontend = TrackFrontend(self.frontend_config, self.features)
        return self._frontend

    @torch.no_grad()
    def embed_frames(
        self, frames: np.ndarray, hop_frames: int | None = None, *, batch_size: int = 64, normalize: bool = True
    ) -> np.ndarray:
        """Embeddings of the windows over log-mel frames (n, n_mels): (n_windows, D) float32, unit norm unless
        `normalize` is False (the raw outputs, which a squared-Euclidean metric compares)."""
        batch = windows(np.asarray(frames), self.window_frames, hop_frames or self.window_frames)
        outputs = []
        for i in range(0, len(batch), batch_size):
            chunk = self.model(torch.from_numpy(batch[i : i + batch_size]).to(self.device)).float()
            outputs.append((nn.functional.normalize(chunk, dim=1) if normalize else chunk).cpu().numpy())
        return np.concatenate(outputs)

    def embed_wave(self, wave: np.ndarray, sample_rate: int, lrc: str | Path | None = None) -> np.ndarray:
        """The embedding (D,) of a mono signal at any rate, over its vocal regions (LRC phrases or detector)."""
        wave = np.asarray(wave, dtype=np.float32)
        if sample_rate != self.features.sample_rate:
            wave = soxr.resample(wave, sample_rate, self.features.sample_rate, quality="HQ").astype(np.float32)
        frames = self.frontend.wave_frames(wave, Path(lrc) if lrc else None).frames
        return mean_embedding(self.embed_frames(frames))

    def embed_file(self, path: str | Path, lrc: str | Path | None = None) -> np.ndarray:
        """The embedding (D,) of an audio file; lyrics from `lrc`, else a same-named .lrc beside the file."""
        path = Path(path)
        if lrc is None:
            lrc = lyrics_beside(path)
        frames = self.frontend.file_frames(path, Path(lrc) if lrc else None).frames
        return mean_embedding(self.embed_frames(frames))


def mean_embedding(segments: np.ndarray) -> np.ndarray:
    """The L2-normalised mean of unit-norm segment embeddings."""
    mean = segments.mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def export_model(encoder: SingerEncoder, path: str | Path) -> Path:
    """Writes the network as a `torch.export` program (.pt2): (batch, frames, n_mels) log-mel -> (batch, D) raw
    embeddings, batch and frames dynamic; load with `torch.export.load(path).module()`. The front end (16 kHz,
    log-mel settings in the checkpoint) is not part of the program."""
    path = Path(path)
    example = torch.randn(2, encoder.window_frames, encoder.features.n_mels)
    batch, frames = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("frames", min=64, max=100_000)
    program = torch.export.export(encoder.model.cpu().eval(), (example,), dynamic_shapes=({0: batch, 1: frames},))
    with atomic_path(path) as temporary:  # keeps the .pt2 suffix torch.export wants
        torch.export.save(program, temporary)
    return path
