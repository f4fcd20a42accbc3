"""A pretrained encoder on a catalog it never saw (no training on it), beside the baselines: Tables II-IV.

    python benchmarks/zero_shot.py STORE --out DIR [--checkpoint base] [--no-baselines]

`singerid evaluate` scores a run on the store it was trained on (its seen test singers must be trained on); this
scores any checkpoint, by default the shipped base encoder, on any store's test tracks with the same protocols,
trials and 3.5 s windows, next to the untrained network, MFCC statistics and the speech peer (when installed).
The procedural corpus draws a singer's voice from (seed, singer index): measure on a catalog made with another
`singerid synth --seed` than the encoder's training catalog, or on one made outside the project.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from singerid.checkpoint import load_checkpoint
from singerid.encoder import SingerEncoder
from singerid.evaluation import EvaluationOptions, baseline_systems, evaluate_systems, system_info
from singerid.report import write_report
from singerid.store import FeatureStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", default="base", help="base (the shipped encoder) or a checkpoint file")
    parser.add_argument("--no-baselines", action="store_true")
    args = parser.parse_args()
    store = FeatureStore(args.store)
    checkpoint = load_checkpoint(args.checkpoint)
    encoder = SingerEncoder.from_checkpoint(checkpoint, "cpu")
    name = f"{Path(args.checkpoint).stem} (zero-shot)"
    info = system_info(name, checkpoint.config, store.header.frontend.separation, encoder.metric)
    systems = [(info, encoder)]
    options = EvaluationOptions(device="cpu", baselines=not args.no_baselines)
    if options.baselines:
        systems += baseline_systems(checkpoint.config, store, options.window_frames, options.device)
    results, _ = evaluate_systems(systems, store, args.out, options)
    report = write_report(results, args.out, title=f"{name} on {args.store}")
    print(report.read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
