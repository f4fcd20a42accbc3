"""`singerid evaluate`: the paper's protocols (section III-B..D) for a trained run and the baselines.

Each test track of the store is cut into windows of the training crop length (hop configurable) over its vocal
frames; the window embeddings are cached per system, so a rerun only scores. Trial lists are made once per store
and evaluation folder (seeded) and saved, so every system is scored on the same trials.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from scipy.fft import dct
from tqdm import tqdm

from singerid.config import TrainConfig, config_from_dict
from singerid.encoder import SingerEncoder, weights_digest, windows
from singerid.features import FeatureConfig
from singerid.frontend import FrontendConfig
from singerid.protocols import ProtocolConfig, TrackEmbeddings, Trials, evaluate, load_trials, make_trials, save_trials
from singerid.report import write_report
from singerid.store import FeatureStore
from singerid.train import CheckpointError, build_model, load_checkpoint, track_digests

TEST_SPLITS = ("test_seen", "test_unseen")


class Embedder(Protocol):
    crop_frames: int
    cache_key: str  # names its cached embeddings: changes whenever its embeddings would

    def embed_frames(self, frames: np.ndarray, hop_frames: int | None = None) -> np.ndarray: ...


class MfccStatistics:
    """The classic baseline: mean and standard deviation of 20 MFCCs (DCT of the log-mel) over each window,
    standardised with statistics of the store's train split, L2-normalised."""

    def __init__(self, store: FeatureStore, crop_frames: int, coefficients: int = 20, seed: int = 0) -> None:
        self.crop_frames = crop_frames
        self.cache_key = f"mfcc{coefficients}-seed{seed}"
        self.coefficients = coefficients
        rng = np.random.default_rng(seed)
        train = [i for i, t in enumerate(store.tracks) if t.split == "train"]
        sample = rng.choice(train, min(len(train), 500), replace=False) if train else []
        stats = [self._raw(store.random_crop(int(i), crop_frames, rng)[None]) for i in sample]
        stacked = np.concatenate(stats) if stats else np.zeros((1, 2 * coefficients))
        self.mean, self.std = stacked.mean(0), stacked.std(0) + 1e-6

    def _raw(self, batch: np.ndarray) -> np.ndarray:
        mfcc = dct(batch, type=2, norm="ortho", axis=-1)[..., : self.coefficients]
        return np.concatenate([mfcc.mean(1), mfcc.std(1)], axis=1)

    def embed_frames(self, frames: np.ndarray, hop_frames: int | None = None) -> np.ndarray:
        stats = self._raw(windows(np.asarray(frames), self.crop_frames, hop_frames or self.crop_frames)) - self.mean
        stats /= self.std
        return (stats / np.linalg.norm(stats, axis=1, keepdims=True)).astype(np.float32)


def untrained_encoder(
    config: TrainConfig, features: FeatureConfig, frontend: FrontendConfig, seed: int = 0
) -> SingerEncoder:
    """The same network as a run, randomly initialised: the floor that training must rise above."""
    torch.manual_seed(seed)
    model = build_model(config, features.n_mels)
    return SingerEncoder(
        model, features, frontend, config.batch.crop_frames, cache_key=f"untrained-{weights_digest(model)}"
    )


def test_embeddings(
    embedder: Embedder,
    store: FeatureStore,
    hop_frames: int,
    cache: Path | None = None,
    progress: bool = True,
    name: str = "",
) -> list[TrackEmbeddings]:
    """Window embeddings of every test track; read from / written to `cache` (npz) when given."""
    tracks = [(i, t) for i, t in enumerate(store.tracks) if t.split in TEST_SPLITS]
    if cache is not None and cache.exists():
        data = np.load(cache)
        if set(data.files) == {t.track_id for _, t in tracks}:
            return [TrackEmbeddings(t.singer_id, t.track_id, t.split, data[t.track_id]) for _, t in tracks]
    result = []
    for i, t in tqdm(tracks, desc=f"embed {name}".strip(), unit="track", disable=not progress, leave=False):
        result.append(
            TrackEmbeddings(t.singer_id, t.track_id, t.split, embedder.embed_frames(store.frames(i), hop_frames))
        )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache.with_name(f".{cache.stem}.tmp.npz")
        np.savez(temporary, **{e.track_id: e.segments for e in result})
        os.replace(temporary, cache)
    return result


def baseline_systems(config: TrainConfig, store: FeatureStore) -> list[tuple[dict[str, str], Embedder]]:
    """The untrained network of `config` and the MFCC-statistics baseline, named for the tables."""
    separation = store.header.frontend.get("separation", "none")
    frontend = FrontendConfig(**store.header.frontend)

    def info(name: str, kind: str) -> dict[str, str]:
        return {"name": name, "loss": "-", "setting": "-", "separation": separation, "kind": kind}

    return [
        (info("untrained", "untrained"), untrained_encoder(config, store.features, frontend)),
        (info("mfcc-stats", "mfcc"), MfccStatistics(store, config.batch.crop_frames)),
    ]


def system_info(name: str, config: TrainConfig, separation: str, kind: str) -> dict[str, str]:
    """How a system is named in the tables: loss and the setting the paper varies (alpha or M)."""
    loss = config.loss.name
    setting = f"alpha={config.loss.options['margin']}" if loss == "triplet" else f"M={config.batch.segments}"
    return {"name": name, "loss": loss, "setting": setting, "separation": separation, "kind": kind}


@dataclass(frozen=True)
class EvaluationOptions:
    checkpoint: str = "best"  # best | last
    hop_frames: int = 0  # hop between test windows; 0: the crop length (no overlap)
    baselines: bool = True  # also score the untrained network and the MFCC-statistics baseline
    protocol: ProtocolConfig = ProtocolConfig()


def evaluate_systems(
    systems: Sequence[tuple[dict[str, str], Embedder]],
    store: FeatureStore,
    out: Path,
    options: EvaluationOptions,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], dict[str, Any]]:
    """Scores each (info, embedder) on the store's test tracks with shared, saved trials; returns the results,
    the verification scores per condition and system (for DET curves), and track-embedding maps per system."""
    out.mkdir(parents=True, exist_ok=True)
    results = []
    det_scores: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    maps: dict[str, tuple[np.ndarray, list[str]]] = {}
    trials: dict[int, Trials] = {}
    store_key = hashlib.sha1((store.folder / "index.json").read_bytes()).hexdigest()[:8]
    for info, embedder in systems:
        hop = options.hop_frames or embedder.crop_frames
        cache = out / f"embeddings-{info['name']}-{embedder.cache_key}-store{store_key}-hop{hop}.npz"
        tracks = test_embeddings(embedder, store, hop, cache, progress, info["name"])
        if hop not in trials:  # one trial list per set of test windows and protocol, saved and reused
            windows_per_track = sorted((t.track_id, t.singer_id, t.split, len(t.segments)) for t in tracks)
            key = json.dumps({"windows": windows_per_track, "protocol": asdict(options.protocol)}, sort_keys=True)
            path = out / f"trials-{hashlib.sha1(key.encode()).hexdigest()[:8]}.json"
            trials[hop] = load_trials(path) if path.exists() else make_trials(tracks, options.protocol)
            if not path.exists():
                save_trials(trials[hop], path)
        evaluation = evaluate(tracks, trials[hop])
        results.append({"system": info, **evaluation.to_dict()})
        det_scores[info["name"]] = evaluation.scores()
        maps[info["name"]] = (np.stack([t.segments.mean(0) for t in tracks]), [t.singer_id for t in tracks])
    return results, det_scores, maps


def check_compatible(payload: dict[str, Any], store: FeatureStore, source: str) -> None:
    """A checkpoint scores a store only with the same log-mel settings, no trained singer among the unseen and
    no trained track among the test tracks (a store made from a changed catalog can move tracks between splits)."""
    features = FeatureConfig(**payload["features"])
    if features != store.features:
        raise CheckpointError(f"{source}: trained on features {features}, but {store.folder} holds {store.features}")
    trained_on, tested_on = (f.get("separation", "none") for f in (payload.get("frontend", {}), store.header.frontend))
    if trained_on != tested_on:  # a cross-condition test is legitimate, but more often a slip: say so
        warnings.warn(
            f"{source} was trained on separation '{trained_on}', but {store.folder} holds separation '{tested_on}'",
            stacklevel=2,
        )
    leaked = sorted(set(payload["singers"]) & {t.singer_id for t in store.tracks if t.split == "test_unseen"})
    if leaked:
        raise CheckpointError(
            f"{source}: {len(leaked)} 'unseen' test singers of {store.folder} were trained on ({', '.join(leaked[:5])})"
        )
    if "trained_tracks" in payload:  # checkpoints written before it was recorded skip this check
        trained = set(payload["trained_tracks"].tolist())
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
) -> tuple[Path, list[dict[str, Any]]]:
    """Evaluates a run (and the baselines) on a store; writes results.json, tables and plots; returns the report's
    path and the results."""
    store = FeatureStore(store_path)
    payload = load_checkpoint(run / f"{options.checkpoint}.pt")
    check_compatible(payload, store, str(run))
    config = config_from_dict(payload["config"], str(run))
    encoder = SingerEncoder.from_payload(payload, source=str(run))
    separation = store.header.frontend.get("separation", "none")
    out = out or run / f"eval-{store_path.name}"
    systems: list[tuple[dict[str, str], Embedder]] = [(system_info(run.name, config, separation, "trained"), encoder)]
    if options.baselines:
        systems += baseline_systems(config, store)
    results, det_scores, maps = evaluate_systems(systems, store, out, options, progress)
    report = write_report(
        results,
        out,
        det_scores=det_scores,
        maps={run.name: maps[run.name]},
        title=f"singerid evaluation of {run.name} on {store_path}",
    )
    return report, results
