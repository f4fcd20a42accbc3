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

import logging
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import TypeVar

import numpy as np
import soxr
import torch
from torch import nn

from singerid.audio import AudioError
from singerid.catalog import lyrics_beside
from singerid.checkpoint import BASE, Checkpoint, load_checkpoint, weights_digest
from singerid.errors import SingerIdError
from singerid.features import SEGMENT_FRAMES, FeatureConfig, FrontendConfig
from singerid.fileio import atomic_path
from singerid.frontend import TrackFrontend
from singerid.parallel import map_in_processes
from singerid.progress import progress_bar

Item = TypeVar("Item")


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
        device: str | torch.device = "auto",
        *,
        window_frames: int = SEGMENT_FRAMES,
        metric: str = "cosine",
        source: str = "",
        cache_key: str = "",
    ) -> None:
        if window_frames < 32:
            raise ValueError(f"window_frames must be at least 32, got {window_frames}")
        device = resolve_device(device) if isinstance(device, str) else device
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
        cls, checkpoint: str | Path, device: str | torch.device = "auto", *, window_frames: int = SEGMENT_FRAMES
    ) -> SingerEncoder:
        """The encoder of a checkpoint file (RUN/best.pt)."""
        return cls.from_checkpoint(load_checkpoint(checkpoint), device, window_frames=window_frames)

    @classmethod
    def pretrained(cls, device: str | torch.device = "auto", *, window_frames: int = SEGMENT_FRAMES) -> SingerEncoder:
        """The base encoder shipped with singerid (its card: README, "The base encoder")."""
        return cls.load(BASE, device, window_frames=window_frames)

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Checkpoint, device: str | torch.device = "auto", *, window_frames: int = SEGMENT_FRAMES
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
    def _forward(self, batch: np.ndarray, normalize: bool) -> np.ndarray:
        output = self.model(torch.from_numpy(batch).to(self.device)).float()
        return (nn.functional.normalize(output, dim=1) if normalize else output).cpu().numpy()

    def embed_frames(
        self, frames: np.ndarray, hop_frames: int | None = None, *, batch_size: int = 64, normalize: bool = True
    ) -> np.ndarray:
        """Embeddings of the windows over log-mel frames (n, n_mels): (n_windows, D) float32, unit norm unless
        `normalize` is False (the raw outputs, which a squared-Euclidean metric compares)."""
        batch = windows(np.asarray(frames), self.window_frames, hop_frames or self.window_frames)
        return np.concatenate(
            [self._forward(batch[i : i + batch_size], normalize) for i in range(0, len(batch), batch_size)]
        )

    def embed_many(
        self,
        frame_sets: Iterable[Item],
        frames_of: Callable[[Item], np.ndarray | None],
        *,
        hop_frames: int | None = None,
        batch_size: int = 64,
        normalize: bool = True,
    ) -> Iterator[tuple[Item, np.ndarray | None]]:
        """Window embeddings (n_windows, D) of many tracks, in their order, unit norm unless `normalize` is False,
        with the windows of several tracks in one forward pass (per-call overhead dominates small batches on a CPU,
        and a GPU wants large ones); an item whose `frames_of` is None passes through as None."""
        hop = hop_frames or self.window_frames
        pending: list[tuple[Item, np.ndarray | None]] = []
        waiting = 0
        for item in frame_sets:
            frames = frames_of(item)
            batch = None if frames is None else windows(np.asarray(frames), self.window_frames, hop)
            pending.append((item, batch))
            waiting += 0 if batch is None else len(batch)
            if waiting >= batch_size:
                yield from self._flush(pending, batch_size, normalize)
                pending, waiting = [], 0
        yield from self._flush(pending, batch_size, normalize)

    def _flush(
        self, pending: list[tuple[Item, np.ndarray | None]], batch_size: int, normalize: bool
    ) -> Iterator[tuple[Item, np.ndarray | None]]:
        ready = [batch for _, batch in pending if batch is not None]
        if ready:
            stacked = np.concatenate(ready)
            embedded = np.concatenate(
                [self._forward(stacked[i : i + batch_size], normalize) for i in range(0, len(stacked), batch_size)]
            )
        offset = 0
        for item, batch in pending:
            if batch is None:
                yield item, None
            else:
                yield item, embedded[offset : offset + len(batch)]
                offset += len(batch)

    def embed_files(
        self, paths: Sequence[str | Path], *, workers: int = 1, batch_size: int = 64, progress: bool = False
    ) -> Iterator[tuple[Path, np.ndarray | AudioError]]:
        """Unit-norm window embeddings (n_windows, D) of each file, in order, or the AudioError that says why a file
        cannot be used; the front end runs in `workers` processes, the network on batches across files. Lyrics: a
        same-named .lrc beside each file."""
        jobs = [(Path(p), lyrics_beside(Path(p))) for p in paths]
        config = (self.frontend_config, self.features)
        bar = progress_bar(total=len(jobs), desc="embed", unit="file", disable=not progress)
        with closing(map_in_processes(_file_frames, jobs, workers, _init_frontend, config)) as framed:
            for (path, outcome), embedded in self.embed_many(framed, _frames_or_none, batch_size=batch_size):
                bar.update()
                yield path, outcome if embedded is None else embedded
        bar.close()

    def wave_segments(self, wave: np.ndarray, sample_rate: int, lrc: str | Path | None = None) -> np.ndarray:
        """The unit-norm window embeddings (n, D) of a mono signal at any rate (see `embed_wave`)."""
        wave = np.asarray(wave, dtype=np.float32)
        if sample_rate != self.features.sample_rate:
            wave = soxr.resample(wave, sample_rate, self.features.sample_rate, quality="HQ").astype(np.float32)
        frames = self.frontend.wave_frames(wave, Path(lrc) if lrc else None, allow_little_voice=True).frames
        return self.embed_frames(frames)

    def embed_wave(self, wave: np.ndarray, sample_rate: int, lrc: str | Path | None = None) -> np.ndarray:
        """The embedding (D,) of a mono signal at any rate, over its vocal regions (LRC phrases or detector); a
        short clip with less voice than the front end's minimum is embedded from what there is, with a warning."""
        return mean_embedding(self.wave_segments(wave, sample_rate, lrc))

    def embed_file(self, path: str | Path, lrc: str | Path | None = None) -> np.ndarray:
        """The embedding (D,) of an audio file; lyrics from `lrc`, else a same-named .lrc beside the file."""
        path = Path(path)
        if lrc is None:
            lrc = lyrics_beside(path)
        frames = self.frontend.file_frames(path, Path(lrc) if lrc else None, allow_little_voice=True).frames
        return mean_embedding(self.embed_frames(frames))


_FRONTEND: TrackFrontend | None = None


def _init_frontend(frontend: FrontendConfig, features: FeatureConfig) -> None:
    global _FRONTEND
    _FRONTEND = TrackFrontend(frontend, features)


def _file_frames(job: tuple[Path, Path | None]) -> tuple[Path, np.ndarray | AudioError]:
    """A file and its log-mel frames, or the AudioError that says why there are none (returned: a batch goes on)."""
    assert _FRONTEND is not None
    try:
        return job[0], _FRONTEND.file_frames(*job, allow_little_voice=True).frames
    except AudioError as error:
        return job[0], error


def _frames_or_none(item: tuple[Path, np.ndarray | AudioError]) -> np.ndarray | None:
    return None if isinstance(item[1], AudioError) else item[1]


def resolve_device(name: str = "auto") -> torch.device:
    """`auto`: the first CUDA GPU when there is one, else the CPU; otherwise any torch device name (cpu, cuda:1)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise EncoderError(f"unknown device '{name}' ({error}); use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EncoderError(f"device '{name}': this machine has no CUDA GPU that PyTorch can use; use cpu or auto")
    return device


class EncoderError(SingerIdError):
    """An encoder setting that cannot be used (a device this machine lacks, ...)."""


def mean_embedding(segments: np.ndarray) -> np.ndarray:
    """The L2-normalised mean of unit-norm segment embeddings."""
    mean = segments.mean(axis=0)
    return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


EXPORT_FORMATS = ("pt2", "onnx")


def export_model(encoder: SingerEncoder, path: str | Path, format: str = "pt2") -> Path:
    """Writes the network for serving elsewhere: (batch, frames, n_mels) log-mel -> (batch, D) raw embeddings,
    batch and frames dynamic. `pt2`: a `torch.export` program (`torch.export.load(path).module()`); `onnx`: an ONNX
    model for onnxruntime and other runtimes (input `features`, output `embedding`; needs the `onnx` extra). The
    front end (16 kHz, the log-mel settings of the checkpoint) is not part of either."""
    if format not in EXPORT_FORMATS:
        raise EncoderError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, got '{format}'")
    path = Path(path)
    model = encoder.model.cpu().eval()
    example = (torch.randn(2, encoder.window_frames, encoder.features.n_mels),)
    batch, frames = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("frames", min=64, max=100_000)
    dynamic = ({0: batch, 1: frames},)
    if format == "pt2":
        program = torch.export.export(model, example, dynamic_shapes=dynamic)
        with atomic_path(path) as temporary:  # keeps the .pt2 suffix torch.export wants
            torch.export.save(program, temporary)
        return path
    try:
        import onnxscript  # noqa: F401 - torch.onnx's exporter needs it
    except ImportError:
        raise EncoderError("ONNX export needs the onnx extra: pip install 'singerid[onnx]'") from None
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the exporter lists every torchvision operator it skips
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="torch")  # deprecations inside the exporter, not ours
            onnx_program = torch.onnx.export(
                model,
                example,
                dynamo=True,
                input_names=["features"],
                output_names=["embedding"],
                dynamic_shapes=dynamic,
            )
    finally:
        quiet.setLevel(level)
    with atomic_path(path) as temporary:
        onnx_program.save(str(temporary))
    return path
