"""Singers nobody trained on, measured on one store: the base encoder zero-shot beside the untrained network, MFCC
statistics and the speech peer; the budgeted CPU config (configs/cpu.yaml) trained from scratch and fine-tuned from
the base encoder at several budgets; and each training augmentation on and off at one budget.

    python benchmarks/unseen_study.py STORE --out DIR [--budgets 5 15 30] [--finetune-budgets 5 15]
                                      [--augment-minutes 5] [--only NAME ...]

Every system goes through the user's commands (`singerid train`, `singerid evaluate`, benchmarks/zero_shot.py)
one after another, on this machine's CPUs; the protocols' trials are seeded, so every system meets the same trials.
A run whose results exist is not run again, so an interrupted study resumes. Writes DIR/study.md (seen and unseen
one-segment top-1 and one-on-one EER, the unseen-seen gap and ratio, per system) and DIR/study.json.

Run names: zero-shot; scratch-<M> (configs/cpu.yaml with train.minutes=M and no augmentation); base-<M> (the same,
`--init base`); aug-<name> (scratch at --augment-minutes with one augmentation on; its "off" row is
scratch-<augment-minutes>).
The gain augmentation is left out: under the model's default per-segment input normalisation it changes nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from singerid.fileio import write_atomically
from singerid.results import SystemResult, load_results
from singerid.splits import SEEN, UNSEEN

# augmentation runs: name -> config overrides (probability per crop, the strengths at their defaults)
AUGMENTATIONS = {
    "mix": ["augment.mix=0.5"],
    "tilt": ["augment.tilt=0.5"],
    "masks": ["augment.time_mask=0.5", "augment.freq_mask=0.5"],
    "reverb": ["augment.reverb=0.5"],
}
NO_AUGMENTATION = ["augment.mix=0"]  # configs/cpu.yaml mixes since this study; its budget rows run without
AUGMENTATIONS["all"] = [override for overrides in AUGMENTATIONS.values() for override in overrides]
BENCHMARKS = Path(__file__).resolve().parent


def planned_runs(args: argparse.Namespace) -> dict[str, list[str]]:
    """Run name -> extra `singerid train` arguments, in the order they run (the short, telling ones first)."""
    runs: dict[str, list[str]] = {}
    budgets = sorted(set(args.budgets) | set(args.finetune_budgets) | {args.augment_minutes})
    for minutes in budgets:
        if minutes in args.budgets or minutes == args.augment_minutes:
            runs[f"scratch-{minutes:g}"] = ["--set", f"train.minutes={minutes:g}", *NO_AUGMENTATION]
        if minutes in args.finetune_budgets:
            runs[f"base-{minutes:g}"] = ["--set", f"train.minutes={minutes:g}", *NO_AUGMENTATION, "--init", "base"]
        if minutes == args.augment_minutes:
            for name, overrides in AUGMENTATIONS.items():
                runs[f"aug-{name}"] = ["--set", f"train.minutes={minutes:g}", *NO_AUGMENTATION, *overrides]
    return runs


def singerid(*arguments: str | Path) -> None:
    command = [sys.executable, "-m", "singerid", *map(str, arguments)]
    print("$", " ".join(command[2:]), flush=True)
    subprocess.run(command, check=True)


def train_and_evaluate(store: Path, run: Path, extra: list[str]) -> Path:
    """Trains a run (resuming a cut one) and evaluates its best checkpoint without baselines; returns results.json."""
    results = run / f"eval-{store.name}" / "results.json"
    if results.exists():
        return results
    if (run / "last.pt").exists():
        singerid("train", store, run, "--resume", "--quiet")
    else:
        singerid("train", store, run, "--config", "cpu", *extra, "--quiet")
    singerid("evaluate", run, store, "--no-baselines", "--quiet")
    return results


def zero_shot(store: Path, out: Path) -> Path:
    results = out / "results.json"
    if not results.exists():
        command = [sys.executable, str(BENCHMARKS / "zero_shot.py"), str(store), "--out", str(out)]
        print("$", " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True)
    return results


def row(name: str, system: SystemResult, minutes: float | None) -> dict[str, object]:
    result = system.result
    top1 = {group: result.top1(group) for group in (SEEN, UNSEEN)}
    eer = {group: result.one_on_one[group].eer for group in (SEEN, UNSEEN)}
    return {
        "run": name,
        "system": system.system.name,
        "minutes": minutes,
        "top1": top1,
        "eer": eer,
        "top1_gap": top1[SEEN] - top1[UNSEEN],
        "eer_ratio": eer[UNSEEN] / eer[SEEN] if eer[SEEN] else float("inf"),
        "singers": result.singers,
    }


def table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| run | system | minutes | top-1 seen | top-1 unseen | gap (pts) | EER seen | EER unseen | EER ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        top1, eer = r["top1"], r["eer"]
        minutes = "-" if r["minutes"] is None else f"{r['minutes']:.1f}"
        lines.append(
            f"| {r['run']} | {r['system']} | {minutes} | {100 * top1[SEEN]:.1f} | {100 * top1[UNSEEN]:.1f} "
            f"| {100 * r['top1_gap']:.1f} | {100 * eer[SEEN]:.1f} | {100 * eer[UNSEEN]:.1f} | {r['eer_ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def trained_minutes(run: Path) -> float | None:
    """Minutes of training from the run's log.csv (the sum of its epochs' `seconds`), when it has one."""
    log = run / "log.csv"
    if not log.exists():
        return None
    with log.open(encoding="utf-8", newline="") as f:
        return sum(float(epoch["seconds"]) for epoch in csv.DictReader(f)) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budgets", type=float, nargs="*", default=[5, 15, 30], help="from-scratch budgets, minutes")
    parser.add_argument("--finetune-budgets", type=float, nargs="*", default=[5, 15], help="fine-tune budgets")
    parser.add_argument("--augment-minutes", type=float, default=5, help="budget of the augmentation runs")
    parser.add_argument("--only", nargs="*", default=None, help="run only these names (zero-shot, scratch-5, ...)")
    args = parser.parse_args()

    def wanted(name: str) -> bool:
        return args.only is None or name in args.only

    rows: list[dict[str, object]] = []
    started = time.time()
    if wanted("zero-shot"):
        for system in load_results(zero_shot(args.store, args.out / "zero-shot")):
            rows.append(row("zero-shot", system, None))
    for name, extra in planned_runs(args).items():
        if not wanted(name):
            continue
        run = args.out / "runs" / name
        (system, *_) = load_results(train_and_evaluate(args.store, run, extra))
        rows.append(row(name, system, trained_minutes(run)))
        write_atomically(args.out / "study.json", json.dumps(rows, indent=1))
        write_atomically(args.out / "study.md", table(rows))
        print(table(rows[-1:]).splitlines()[-1], f"({(time.time() - started) / 60:.1f} min so far)", flush=True)
    write_atomically(args.out / "study.json", json.dumps(rows, indent=1))
    write_atomically(args.out / "study.md", table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
