"""Inference: a trained checkpoint -> singer embeddings of files, signals or stored frames.

    from singerid import SingerEncoder
    encoder = SingerEncoder.load("runs/apnl-m3/best.pt", device="cpu")
    embedding = encoder.embed_file("song.mp3")  # (512,) float32, unit norm, over the vocal regions

A track is cut into windows of the training crop length (3.5 s) over its vocal regions; each window is embedded
and L2-normalised; a track's embedding is the normalised mean of its windows. The front end (separation, regions,
log-mel) is the one the checkpoint's feature store was made with.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import torch
from torch import nn

from singerid.catalog import lyrics_beside
from singerid.config import config_from_dict
from singerid.features import FeatureConfig
from singerid.frontend import FrontendConfig, TrackFrontend
from singerid.model import MODELS


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
        crop_frames: int,
        device: str | torch.device = "cpu",
        source: str = "",
        cache_key: str = "",
    ) -> None:
        self.model = model.to(device).eval()
        self.features = features
        self.frontend_config = frontend
        self.crop_frames = crop_frames
        self.device = torch.device(device)
        self.source = source
        self.cache_key = cache_key  # names cached embeddings: the checkpoint and its epoch
        self._frontend: TrackFrontend | None = None

    @classmethod
    def load(cls, checkpoint: str | Path, device: str | torch.device = "cpu") -> SingerEncoder:
        from singerid.train import load_checkpoint  # the checkpoint format; inference never runs training code

        payload = load_checkpoint(checkpoint)
        return cls.from_payload(payload, device, str(checkpoint))

    @classmethod
    def from_payload(
        cls, payload: dict[str, Any], device: str | torch.device = "cpu", source: str = ""
    ) -> SingerEncoder:
        config = config_from_dict(payload["config"], source or "checkpoint")
        features = FeatureConfig(**payload["features"])
        m = config.model
        model = MODELS.build(
            m.name,
            embedding_dim=m.embedding_dim,
            n_mels=features.n_mels,
            channels=m.channels,
            blocks=m.blocks,
            input_norm=m.input_norm,
        )
        model.load_state_dict(payload["model"])
        key = "model-" + weights_digest(model)
        return cls(
            model, features, FrontendConfig(**payload["frontend"]), config.batch.crop_frames, device, source, key
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
    def embed_frames(self, frames: np.ndarray, hop_frames: int | None = None, batch_size: int = 64) -> np.ndarray:
        """Unit-norm embeddings of the windows over log-mel frames (n, n_mels): (n_windows, D) float32."""
        batch = windows(np.asarray(frames), self.crop_frames, hop_frames or self.crop_frames)
        outputs = []
        for i in range(0, len(batch), batch_size):
            chunk = torch.from_numpy(batch[i : i + batch_size]).to(self.device)
            outputs.append(nn.functional.normalize(self.model(chunk).float(), dim=1).cpu().numpy())
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


def weights_digest(model: nn.Module) -> str:
    """A short hash of a model's weights: names cached embeddings, so a retrained model never reuses them."""
    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode("utf-8"))
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:12]


def mean_embedding(segments: np.ndarray) -> np.ndarray:
    """The L2-normalised mean of unit-norm segment embeddings."""
    mean = segments.mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def export_model(encoder: SingerEncoder, path: str | Path) -> Path:
    """Writes the network as a `torch.export` program (.pt2): (batch, frames, n_mels) log-mel -> (batch, D) raw
    embeddings, batch and frames dynamic; load with `torch.export.load(path).module()`. The front end (16 kHz,
    log-mel settings in the checkpoint) is not part of the program."""
    path = Path(path)
    example = torch.randn(2, encoder.crop_frames, encoder.features.n_mels)
    batch, frames = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("frames", min=64, max=100_000)
    program = torch.export.export(encoder.model.cpu().eval(), (example,), dynamic_shapes=({0: batch, 1: frames},))
    temporary = path.with_name(f".{path.stem}.tmp.pt2")  # torch.export wants the .pt2 suffix
    torch.export.save(program, temporary)
    temporary.replace(path)
    return path
