"""`singerid experiment`: a grid of training configs x separation settings, trained, evaluated, one report.

    OUT/stores/<separation>/            feature stores (when a catalog is given), prepared once, resumable
    OUT/runs/<config>-<separation>-<hash>/   one run per cell, named by a hash of its resolved config and store
    OUT/eval/<separation>/              trials and embedding caches per store
    OUT/report.md, results.json, table*.csv, *.png   the combined report

A rerun skips finished cells, resumes a half-trained one from its last.pt, and reuses cached embeddings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from singerid.checkpoint import load_checkpoint
from singerid.config import TrainConfig, load_config
from singerid.encoder import SingerEncoder
from singerid.evaluation import (
    Embedder,
    EvaluationOptions,
    baseline_systems,
    check_compatible,
    det_scores,
    evaluate_systems,
    system_info,
)
from singerid.features import FrontendConfig
from singerid.prepare import prepare
from singerid.report import write_report
from singerid.results import SystemInfo, SystemResult
from singerid.store import FeatureStore
from singerid.train import train


@dataclass(frozen=True)
class Cell:
    name: str  # the config file's stem
    separation: str
    config: TrainConfig
    store: Path
    run: Path


def cell_run(out: Path, name: str, separation: str, config: TrainConfig, store: Path) -> Path:
    """The run folder of a cell: named by a hash of its resolved config and store, so edits start a new run."""
    signature = json.dumps({"config": config.to_dict(), "store": str(store.resolve())}, sort_keys=True)
    digest = hashlib.sha1(signature.encode("utf-8")).hexdigest()[:8]
    return out / "runs" / f"{name}-{separation}-{digest}"


def train_cell(cell: Cell, progress: bool, log: Callable[[str], None]) -> None:
    """Trains a cell unless it is finished; resumes a half-trained one."""
    last = cell.run / "last.pt"
    if last.exists() and load_checkpoint(last).epoch >= cell.config.train.epochs:
        log(f"experiment: {cell.name} / {cell.separation}: trained already ({cell.run})")
        return
    log(f"experiment: training {cell.name} / {cell.separation} -> {cell.run}")
    train(cell.store, cell.run, cell.config, resume=last.exists(), progress=progress)


def run_experiment(
    configs: Sequence[Path],
    out: Path,
    stores: dict[str, Path],
    *,
    overrides: Sequence[str] = (),
    options: EvaluationOptions = EvaluationOptions(),
    progress: bool = True,
    title: str = "singerid experiment",
    log: Callable[[str], None] = print,
    separations_of: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """Trains and evaluates every config on every store (separation -> store), or only on the separations that
    `separations_of` lists for the config's file stem; returns the combined report."""
    cells = []
    for path in configs:
        config = load_config(path, overrides)
        for separation, store in stores.items():
            if separations_of is None or separation in separations_of.get(path.stem, stores):
                run = cell_run(out, path.stem, separation, config, store)
                cells.append(Cell(path.stem, separation, config, store, run))
    for cell in cells:
        train_cell(cell, progress, log)
    results: list[SystemResult] = []
    scores: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    maps = {}
    for separation, store_path in stores.items():
        store = FeatureStore(store_path)
        here = [c for c in cells if c.separation == separation]
        systems: list[tuple[SystemInfo, Embedder]] = []
        for cell in here:
            checkpoint = load_checkpoint(cell.run / f"{options.checkpoint}.pt")
            check_compatible(checkpoint, store, str(cell.run))
            encoder = SingerEncoder.from_checkpoint(checkpoint, options.device, window_frames=options.window_frames)
            systems.append((system_info(cell.name, cell.config, separation, encoder.metric), encoder))
        if options.baselines and here:
            systems += baseline_systems(here[0].config, store, options.window_frames, options.device, log)
        log(f"experiment: evaluating {len(systems)} systems on the {separation} store")
        found, embeddings = evaluate_systems(systems, store, out / "eval" / separation, options, progress, log)
        results += found
        scores.update(det_scores(found, f" ({separation})"))
        if here:
            maps[f"{here[-1].name} ({separation})"] = embeddings[here[-1].name]
    return write_report(results, out, det_scores=scores, maps=maps, title=title)


def prepare_stores(
    catalog: Path,
    out: Path,
    separations: Sequence[str],
    workers: int,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """One feature store per separation setting under OUT/stores/ (resumable)."""
    stores = {}
    for separation in separations:
        store = out / "stores" / separation
        result = prepare(catalog, store, FrontendConfig(separation=separation), workers=workers, progress=progress)
        log(
            f"experiment: store {store}: {len(result.header.tracks)} tracks, {len(result.header.rejects)} rejected, "
            f"{result.processed} prepared now in {result.seconds:.0f} s"
        )
        stores[separation] = store
    return stores
