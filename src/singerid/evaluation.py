"""`singerid evaluate`: the paper's protocols (section III-B..D) for a trained run and the baselines.

Each test track of the store is cut into 3.5 s windows (the paper's segment, whatever the training crop; hop
configurable) over its vocal frames; the raw window embeddings are cached per system, so a rerun only scores.
Trial lists are made once per store and evaluation folder (seeded) and saved, so every system is scored on the
same trials. A system is scored with the metric its loss was trained with: cosine, or the squared Euclidean
distance of the prototypical loss (PNL). The baselines: the untrained network, MFCC statistics and, when
resemblyzer is installed, a speech-pretrained peer (`peer.py`).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from scipy.fft import dct

from singerid.checkpoint import (
    Checkpoint,
    CheckpointError,
    build_model,
    load_checkpoint,
    track_digests,
    weights_digest,
)
from singerid.config import TrainConfig
from singerid.encoder import SingerEncoder, windows
from singerid.features import SEGMENT_FRAMES, FeatureConfig, FrontendConfig
from singerid.fileio import atomic_path
from singerid.losses import LOSSES
from singerid.peer import PeerError, peer_system
from singerid.progress import progress_bar
from singerid.protocols import ProtocolConfig, TrackEmbeddings, Trials, evaluate, load_trials, make_trials, save_trials
from singerid.report import write_report
from singerid.results import SystemInfo, SystemResult
from singerid.splits import TEST_SEEN, TEST_SPLITS, TEST_UNSEEN, TRAIN
from singerid.store import FeatureStore

Item = TypeVar("Item")


class Embedder(Protocol):
    window_frames: int
    metric: str  # how its embeddings compare: cosine | sqeuclidean
    cache_key: str  # names its cached embeddings: changes whenever its embeddings would

    def embed_many(
        self,
        frame_sets: Iterable[Item],
        frames_of: Callable[[Item], np.ndarray | None],
        *,
        hop_frames: int | None = None,
        batch_size: int = 64,
        normalize: bool = True,
    ) -> Iterator[tuple[Item, np.ndarray | None]]: ...


class MfccStatistics:
    """The classic baseline: mean and standard deviation of 20 MFCCs (DCT of the log-mel) over each window,
    standardised with statistics of the store's train split, L2-normalised."""

    metric = "cosine"

    def __init__(self, store: FeatureStore, window_frames: int, coefficients: int = 20, seed: int = 0) -> None:
        self.window_frames = window_frames
        self.cache_key = f"mfcc{coefficients}-seed{seed}"
        self.coefficients = coefficients
        rng = np.random.default_rng(seed)
        train = [i for i, t in enumerate(store.tracks) if t.split == TRAIN]
        sample = rng.choice(train, min(len(train), 500), replace=False) if train else []
        stats = [self._raw(store.random_crop(int(i), window_frames, rng)[None]) for i in sample]
        stacked = np.concatenate(stats) if stats else np.zeros((1, 2 * coefficients))
        self.mean, self.std = stacked.mean(0), stacked.std(0) + 1e-6

    def _raw(self, batch: np.ndarray) -> np.ndarray:
        mfcc = dct(batch, type=2, norm="ortho", axis=-1)[..., : self.coefficients]
        return np.concatenate([mfcc.mean(1), mfcc.std(1)], axis=1)

    def embed_frames(self, frames: np.ndarray, hop_frames: int | None = None) -> np.ndarray:
        """Standardised statistics per window, unit norm (the baseline is compared by cosine)."""
        stats = self._raw(windows(np.asarray(frames), self.window_frames, hop_frames or self.window_frames))
        stats = (stats - self.mean) / self.std
        return (stats / np.linalg.norm(stats, axis=1, keepdims=True)).astype(np.float32)

    def embed_many(
        self,
        frame_sets: Iterable[Item],
        frames_of: Callable[[Item], np.ndarray | None],
        *,
        hop_frames: int | None = None,
        batch_size: int = 64,
        normalize: bool = True,
    ) -> Iterator[tuple[Item, np.ndarray | None]]:
        """`embed_frames` of each track (numpy is fast per track: no batching needed)."""
        for item in frame_sets:
            frames = frames_of(item)
            yield item, None if frames is None else self.embed_frames(frames, hop_frames)


def untrained_encoder(
    config: TrainConfig,
    features: FeatureConfig,
    frontend: FrontendConfig,
    window_frames: int,
    device: str = "auto",
    seed: int = 0,
) -> SingerEncoder:
    """The same network as a run, randomly initialised: the floor that training must rise above."""
    torch.manual_seed(seed)
    model = build_model(config, features.n_mels)
    metric = LOSSES.get(config.loss.name).metric
    key = f"untrained-{weights_digest(model.state_dict())}"
    return SingerEncoder(model, features, frontend, device, window_frames=window_frames, metric=metric, cache_key=key)


def test_embeddings(
    embedder: Embedder,
    store: FeatureStore,
    hop_frames: int,
    cache: Path | None = None,
    progress: bool = True,
    name: str = "",
) -> list[TrackEmbeddings]:
    """Raw window embeddings of every test track; read from / written to `cache` (npz) when given."""
    tracks = [(i, t) for i, t in enumerate(store.tracks) if t.split in TEST_SPLITS]
    if cache is not None and cache.exists():
        data = np.load(cache)
        if set(data.files) == {t.track_id for _, t in tracks}:
            return [TrackEmbeddings(t.singer_id, t.track_id, t.split, data[t.track_id]) for _, t in tracks]
    result = []
    bar = progress_bar(total=len(tracks), desc=f"embed {name}".strip(), unit="track", disable=not progress, leave=False)
    embedded = embedder.embed_many([i for i, _ in tracks], store.frames, hop_frames=hop_frames, normalize=False)
    with bar:
        for index, segments in embedded:
            t = store.tracks[index]
            result.append(TrackEmbeddings(t.singer_id, t.track_id, t.split, segments))
            bar.update()
    if cache is not None:
        with atomic_path(cache) as temporary:
            np.savez(temporary, **{e.track_id: e.segments for e in result})
    return result


def baseline_systems(
    config: TrainConfig,
    store: FeatureStore,
    window_frames: int,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> list[tuple[SystemInfo, Embedder]]:
    """The untrained network of `config`, the MFCC-statistics baseline and the speech peer (unless resemblyzer
    cannot be imported: `log` says so), named for the tables."""
    separation = store.header.frontend.separation
    untrained = untrained_encoder(config, store.features, store.header.frontend, window_frames, device)
    systems: list[tuple[SystemInfo, Embedder]] = [
        (SystemInfo("untrained", "-", "-", separation, "untrained", untrained.metric), untrained),
        (SystemInfo("mfcc-stats", "-", "-", separation, "mfcc"), MfccStatistics(store, window_frames)),
    ]
    try:
        systems.append(peer_system(store, window_frames, device))
    except PeerError as error:
        log(f"speech peer skipped: {error}")
    return systems


def system_info(name: str, config: TrainConfig, separation: str, metric: str) -> SystemInfo:
    """How a trained system is named in the tables: loss and the setting the paper varies (alpha or M)."""
    loss = config.loss.name
    setting = f"alpha={config.loss.options['margin']}" if loss == "triplet" else f"M={config.batch.segments}"
    return SystemInfo(name, loss, setting, separation, "trained", metric)


@dataclass(frozen=True)
class EvaluationOptions:
    checkpoint: str = "best"  # best | last
    window_frames: int = SEGMENT_FRAMES  # frames per test window: 350 (3.5 s), the paper's segment
    hop_frames: int = 0  # hop between test windows; 0: the window length (no overlap)
    baselines: bool = True  # also score the untrained network, MFCC statistics and the speech peer
    protocol: ProtocolConfig = ProtocolConfig()
    device: str = "auto"  # where the networks run: auto (a CUDA GPU when there is one), cpu, cuda:N


def evaluate_systems(
    systems: Sequence[tuple[SystemInfo, Embedder]],
    store: FeatureStore,
    out: Path,
    options: EvaluationOptions,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[list[SystemResult], dict[str, Any]]:
    """Scores each (info, embedder) on the store's test tracks with shared, saved trials; returns the results
    and track-embedding maps per system. A peer that cannot embed every test track is left out (`log` says why):
    every system is scored on the same trials."""
    out.mkdir(parents=True, exist_ok=True)
    results = []
    maps: dict[str, tuple[np.ndarray, list[str]]] = {}
    trials: dict[int, Trials] = {}
    store_key = hashlib.sha1((store.folder / "index.json").read_bytes()).hexdigest()[:8]
    for info, embedder in systems:
        hop = options.hop_frames or embedder.window_frames
        window = f"win{embedder.window_frames}-hop{hop}"
        cache = out / f"embeddings-{info.name}-{embedder.cache_key}-store{store_key}-{window}-raw.npz"
        try:
            tracks = test_embeddings(embedder, store, hop, cache, progress, info.name)
        except PeerError as error:
            log(f"speech peer skipped: {error}; it embeds every test track or none, as all systems share the trials")
            continue
        if hop not in trials:  # one trial list per set of test windows and protocol, saved and reused
            windows_per_track = sorted((t.track_id, t.singer_id, t.split, len(t.segments)) for t in tracks)
            key = json.dumps({"windows": windows_per_track, "protocol": asdict(options.protocol)}, sort_keys=True)
            path = out / f"trials-{hashlib.sha1(key.encode()).hexdigest()[:8]}.json"
            trials[hop] = load_trials(path) if path.exists() else make_trials(tracks, options.protocol)
            if not path.exists():
                save_trials(trials[hop], path)
        results.append(SystemResult(info, evaluate(tracks, trials[hop], embedder.metric)))
        means = np.stack([t.segments.mean(0) for t in tracks])
        maps[info.name] = (means, [t.singer_id for t in tracks])
    return results, maps


def det_scores(
    results: Sequence[SystemResult], suffix: str = ""
) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Raw verification scores per system and condition, for the DET curves."""
    return {f"{r.system.name}{suffix}": r.result.verification_scores for r in results}


def check_compatible(checkpoint: Checkpoint, store: FeatureStore, source: str) -> None:
    """A checkpoint scores a store only with the same log-mel settings, every seen test singer trained on, no
    trained singer among the unseen, and no trained track among the test tracks (a store made from a changed
    catalog can move tracks between splits)."""
    if checkpoint.features != store.features:
        raise CheckpointError(
            f"{source}: trained on features {checkpoint.features}, but {store.folder} holds {store.features}"
        )
    trained_on, tested_on = checkpoint.frontend.separation, store.header.frontend.separation
    if trained_on != tested_on:  # a cross-condition test is legitimate, but more often a slip: say so
        warnings.warn(
            f"{source} was trained on separation '{trained_on}', but {store.folder} holds separation '{tested_on}'",
            stacklevel=2,
        )
    trained_singers = set(checkpoint.singers)
    leaked = sorted(trained_singers & {t.singer_id for t in store.tracks if t.split == TEST_UNSEEN})
    if leaked:
        raise CheckpointError(
            f"{source}: {len(leaked)} 'unseen' test singers of {store.folder} were trained on ({', '.join(leaked[:5])})"
        )
    untrained = sorted({t.singer_id for t in store.tracks if t.split == TEST_SEEN} - trained_singers)
    if untrained:
        raise CheckpointError(
            f"{source}: {len(untrained)} 'seen' test singers of {store.folder} were never trained on "
            f"({', '.join(untrained[:5])}): evaluate the run on the store it was trained on"
        )
    if checkpoint.trained_tracks is not None:  # checkpoints written before it was recorded skip this check
        trained = checkpoint.trained_on
        test_ids = sorted({t.track_id for t in store.tracks if t.split in TEST_SPLITS})
        leaked = [track for track, digest in zip(test_ids, track_digests(test_ids).tolist()) if digest in trained]
        if leaked:
            raise CheckpointError(
                f"{source}: {len(leaked)} test tracks of {store.folder} were trained on ({', '.join(leaked[:5])})"
            )


def evaluate_run(
    run: Path,
    store_path: Path,
    options: EvaluationOptions = EvaluationOptions(),
    out: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[Path, list[SystemResult]]:
    """Evaluates a run (and the baselines) on a store; writes results.json, tables and plots; returns the report's
    path and the results. `log` says which baseline was skipped and why."""
    store = FeatureStore(store_path)
    checkpoint = load_checkpoint(run / f"{options.checkpoint}.pt")
    check_compatible(checkpoint, store, str(run))
    encoder = SingerEncoder.from_checkpoint(checkpoint, options.device, window_frames=options.window_frames)
    separation = store.header.frontend.separation
    out = out or run / f"eval-{store_path.name}"
    info = system_info(run.name, checkpoint.config, separation, encoder.metric)
    systems: list[tuple[SystemInfo, Embedder]] = [(info, encoder)]
    if options.baselines:
        systems += baseline_systems(checkpoint.config, store, options.window_frames, options.device, log)
    results, maps = evaluate_systems(systems, store, out, options, progress, log)
    report = write_report(
        results,
        out,
        det_scores=det_scores(results),
        maps={run.name: maps[run.name]},
        title=f"singerid evaluation of {run.name} on {store_path}",
    )
    return report, results
