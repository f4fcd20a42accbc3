"""Shared fixtures: one tiny synthetic catalog per test run, made by the project's own synthesizer."""

from __future__ import annotations

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
