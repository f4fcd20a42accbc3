"""AS-norm against raw cosine scoring: the verification EER of a trained run, seen and unseen test singers.

    python benchmarks/bench_score_norm.py RUN STORE [--top-n 300] [--cohort-tracks N]

The test tracks' 3.5 s windows are embedded as `singerid evaluate` embeds them (same trials, same seed); the
cohort is one embedding per training-split track of the same store (singers who are never tested). Prints the
one-on-one and 5-segment centroid EER of each group, raw and normalised, and their ratio.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from singerid.checkpoint import load_checkpoint
from singerid.encoder import SingerEncoder
from singerid.evaluation import test_embeddings
from singerid.protocols import ProtocolConfig, evaluate, make_trials
from singerid.scoring import DEFAULT_TOP_N, unit_rows
from singerid.splits import TRAIN
from singerid.store import FeatureStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("store", type=Path)
    parser.add_argument("--top-n", type=int, default=DEFAULT_TOP_N)
    parser.add_argument("--cohort-tracks", type=int, default=0, help="evenly spaced training tracks (0: all)")
    args = parser.parse_args()
    store = FeatureStore(args.store)
    encoder = SingerEncoder.from_checkpoint(load_checkpoint(args.run / "best.pt"), "cpu")
    started = time.perf_counter()
    tracks = test_embeddings(encoder, store, 0, progress=False)
    training = [(i, t) for i, t in enumerate(store.tracks) if t.split == TRAIN]
    if args.cohort_tracks and args.cohort_tracks < len(training):
        training = [training[round(k * len(training) / args.cohort_tracks)] for k in range(args.cohort_tracks)]
    cohort = unit_rows(
        np.stack(
            [
                segments.mean(axis=0)
                for _, segments in encoder.embed_many(training, lambda entry: store.frames(entry[0]), hop_frames=0)
            ]
        )
    )
    trials = make_trials(tracks, ProtocolConfig())
    raw = evaluate(tracks, trials, encoder.metric)
    normalised = evaluate(tracks, trials, encoder.metric, cohort=cohort, top_n=args.top_n)
    print(f"{args.run.name} on {args.store}: cohort of {len(cohort)} training tracks, top {args.top_n}")
    print(f"embedding and scoring: {time.perf_counter() - started:.0f} s")
    print("| trials | group | raw EER % | AS-norm EER % | ratio |")
    print("|---|---|---:|---:|---:|")
    for name, before, after in (
        ("one-on-one", raw.one_on_one, normalised.one_on_one),
        ("centroid of 5", raw.centroid[5], normalised.centroid[5]),
    ):
        for group in before:
            ratio = after[group].eer / max(before[group].eer, 1e-9)
            print(f"| {name} | {group} | {100 * before[group].eer:.2f} | {100 * after[group].eer:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
