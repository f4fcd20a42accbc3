"""Shared fixtures: one tiny synthetic catalog per test run, made by the project's own synthesizer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from singerid.synth import QUICK, SynthConfig, synthesize

QUICK_CONFIG = SynthConfig(**QUICK, stems=True)


@pytest.fixture(scope="session")
def quick_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`singerid synth --quick --stems`: 6 singers (2 seen-test, 2 unseen), 6 s tracks, MP3 + LRC + stems."""
    root = tmp_path_factory.mktemp("catalog")
    synthesize(QUICK_CONFIG, root, workers=2, progress=False)
    return root


@pytest.fixture(scope="session")
def quick_store(quick_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The quick catalog through `singerid prepare` (no separation)."""
    from singerid.prepare import prepare

    store = tmp_path_factory.mktemp("store")
    prepare(quick_catalog, store, workers=2, progress=False)
    return store


TINY = [
    "model.channels=[4,8,16,32]",
    "model.blocks=[1,1,1,1]",
    "model.embedding_dim=32",
    "train.workers=0",
    "batch.singers=4",
    "train.epochs=2",
    "train.validate_every=1",
]


@pytest.fixture(scope="session")
def tiny_run(quick_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny A-PNL model trained for two epochs on the quick store (a folder name with a space)."""
    from singerid.config import load_config
    from singerid.train import train

    run = tmp_path_factory.mktemp("runs") / "tiny apnl"
    train(quick_store, run, load_config(None, TINY), progress=False)
    return run


def refuse_listing(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make `folder` unlistable, as a folder without read permission is (tests run as root, so chmod is moot)."""
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:
        if isinstance(path, str | os.PathLike) and Path(path) == folder:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
