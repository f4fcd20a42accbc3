"""`singerid demo`: the whole chain on a freshly synthesized corpus, on a CPU, in minutes.

synth (the default corpus) -> prepare with and without separation (repet) -> train the demo configs (A-PNL and
triplet, CPU-sized) -> evaluate with the paper's protocols beside the untrained network and an MFCC baseline ->
print Tables II-IV and write RUN/report.md with plots. A rerun resumes every stage.
"""

from __future__ import annotations

import time
from pathlib import Path

from singerid.config import ConfigError
from singerid.experiment import prepare_stores, run_experiment
from singerid.report import format_tables
from singerid.results import load_results
from singerid.synth import SynthConfig, synthesize

CONFIG_DIR = Path(__file__).resolve().parent / "configs"  # package data; `configs/` in a checkout links here
DEMO_CONFIGS = ("demo.yaml", "demo-triplet.yaml")
SEPARATIONS = ("none", "repet")
# A-PNL on both stores shows the effect of separation; triplet on the plain store keeps the demo within 10 minutes
SEPARATIONS_OF = {"demo": SEPARATIONS, "demo-triplet": ("none",)}


def run(run_dir: Path, workers: int = 1) -> int:
    """Runs the demo into run_dir; returns the process exit code."""
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", flush=True)

    configs = [CONFIG_DIR / name for name in DEMO_CONFIGS]
    missing = [str(p) for p in configs if not p.is_file()]
    if missing:
        raise ConfigError(f"demo configs not found: {', '.join(missing)} (a broken installation: reinstall singerid)")
    log("demo 1/4: synthesizing the default corpus (singerid synth)")
    metadata = synthesize(SynthConfig(), run_dir / "catalog", workers=workers)
    log(f"demo 2/4: preparing feature stores with separation {' and '.join(SEPARATIONS)} (singerid prepare)")
    stores = prepare_stores(metadata, run_dir, SEPARATIONS, workers, log=log)
    log("demo 3/4 and 4/4: training the demo configs and evaluating (singerid experiment)")
    report = run_experiment(
        configs, run_dir, stores, title="singerid demo on the synthetic corpus", log=log, separations_of=SEPARATIONS_OF
    )
    print(format_tables(load_results(report.parent / "results.json")))
    log(f"demo: done; report {report}")
    return 0
