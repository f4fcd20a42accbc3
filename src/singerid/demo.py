"""`singerid demo`: the whole chain on a freshly synthesized corpus."""

from __future__ import annotations

from pathlib import Path

from singerid.synth import SynthConfig, synthesize


def run(run_dir: Path, workers: int = 1) -> int:
    """Synthesizes the default corpus under run_dir/catalog; later stages are added as they land."""
    metadata = synthesize(SynthConfig(), run_dir / "catalog", workers=workers)
    print(f"demo: catalog written to {metadata}")
    print("demo: prepare, train, evaluate and the report are still to come (issues 3-5)")
    return 0
