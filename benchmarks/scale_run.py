"""The paper-scale run and its cost curves (docs/SCALE.md): `make scale`, or `python benchmarks/scale_run.py`.

For each catalog size (100, 1,000 and 5,763 singers, the paper's layout scaled: 706 of every 5,763 singers are seen
test singers and as many are unseen), every stage runs as its own `singerid` command, and its wall time, peak
memory (the largest resident set of the command and its worker processes) and disk are recorded in
`ROOT/record.json`:

    synth -> prepare (2 workers) -> store info -> experiment (train A-PNL and triplet within a time budget,
    evaluate with the paper's protocols beside the baselines: Tables II-IV) -> protocols alone (trials + scoring on
    the cached embeddings) -> enroll the test singers from their 6 enrollment songs -> identify their query songs

A stage that finished is not run again: an interrupted run (Ctrl-C) resumes from the stage it was in, and each
stage resumes its own finished work (synth, prepare and training do). `plot` draws docs/scale.png from the record.
Not run by CI (hours on a 2-core machine).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

SIZES = (100, 1000, 5763)
PAPER_SINGERS, PAPER_TEST_SINGERS = 5763, 706
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_singers(singers: int) -> int:
    return max(2, round(PAPER_TEST_SINGERS * singers / PAPER_SINGERS))


def disk_mb(path: Path) -> float:
    if not path.exists():
        return 0.0
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


class Record:
    """ROOT/record.json: per size and stage, seconds, peak memory (MB) and disk (MB); written after each stage."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def done(self, size: int, stage: str) -> bool:
        return stage in self.data.get(str(size), {})

    def add(self, size: int, stage: str, values: dict) -> None:
        self.data.setdefault(str(size), {})[stage] = values
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text(json.dumps(self.data, indent=1), encoding="utf-8")
        os.replace(temporary, self.path)


def run(command: list[str], log: Path) -> tuple[float, float]:
    """Runs a command with its output in `log`; returns (seconds, peak resident set in MB of it and its children)."""
    started = time.perf_counter()
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except KeyboardInterrupt:
            process.terminate()
            process.wait()
            raise
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) not in (0, 1):  # 1: a batch command that skipped some inputs
        raise SystemExit(f"failed ({os.waitstatus_to_exitcode(status)}): {' '.join(command)}; see {log}")
    return seconds, usage.ru_maxrss / 1024


def stage(record: Record, size: int, name: str, command: list[str], log: Path, disk: Path | None = None) -> None:
    if record.done(size, name):
        return
    print(f"[{time.strftime('%H:%M:%S')}] {size} singers: {name}", flush=True)
    seconds, peak = run(command, log)
    record.add(
        size,
        name,
        {"seconds": round(seconds, 2), "peak_mb": round(peak, 1), "disk_mb": round(disk_mb(disk), 1) if disk else 0.0},
    )


def singerid(*arguments: str | Path) -> list[str]:
    return [sys.executable, "-m", "singerid", *map(str, arguments)]


def split_test_tracks(catalog: Path, folder: Path) -> tuple[Path, list[str], dict[str, str]]:
    """enroll.csv: the first 6 tracks of each test singer; the query files: the others, with their singers."""
    with (catalog / "metadata.csv").open(encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] in ("test_seen", "test_unseen")]
    by_singer: dict[str, list[dict]] = {}
    for row in rows:
        by_singer.setdefault(row["singer_id"], []).append(row)
    enroll, queries = [], {}
    for singer, tracks in by_singer.items():
        tracks.sort(key=lambda r: r["track_id"])
        enroll += tracks[:6]
        queries.update({str(catalog / r["path"]): singer for r in tracks[6:]})
    path = folder / "enroll.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(
            {**r, "path": str(catalog / r["path"]), "lrc_path": str(catalog / r["lrc_path"])} for r in enroll
        )
    return path, list(queries), queries


def run_size(root: Path, size: int, minutes: float, record: Record, losses: tuple[str, ...]) -> None:
    folder = root.resolve() / str(size)  # absolute: enroll.csv and the query list name files by it
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "log.txt"
    catalog, store, out = folder / "catalog", folder / "store", folder / "experiment"
    synth = singerid("synth", catalog, "--preset", "paper", "--singers", size, "--test-singers", test_singers(size))
    stage(record, size, "synth", [*synth, "--workers", "2", "--quiet"], log, catalog)
    stage(record, size, "prepare", singerid("prepare", catalog, store, "--workers", "2", "--quiet"), log, store)
    stage(record, size, "store info", singerid("store", "info", store), log)
    configs = [CONFIGS / f"{loss}.yaml" for loss in losses]
    budget = [f"train.minutes={minutes}"] if minutes else ["train.epochs=1", "train.minutes=0"]
    experiment = singerid("experiment", *configs, "--store", store, "--out", out, "--set", *budget, "--quiet")
    stage(record, size, "experiment", experiment, log, out)
    if not record.done(size, "epoch"):
        logs = sorted((out / "runs").glob("cpu-none-*/log.csv"))
        with logs[0].open(encoding="utf-8") as f:
            first = next(csv.DictReader(f))
        record.add(
            size,
            "epoch",
            {"seconds": float(first["seconds"]), "segments_per_second": float(first["segments_per_second"])},
        )
    stage(
        record, size, "protocols", [sys.executable, __file__, "protocols", str(out / "eval" / "none"), str(store)], log
    )
    enroll_csv, query_files, truth = split_test_tracks(catalog, folder)
    checkpoint = next((out / "runs").glob("cpu-none-*/best.pt"))
    library = folder / "library"
    enroll = singerid("enroll", library, "--checkpoint", checkpoint, "--catalog", enroll_csv, "--workers", "2")
    stage(record, size, "enroll", [*enroll, "--quiet", "--device", "cpu"], log, library)
    if not record.done(size, "identify"):
        answers = folder / "identify.txt"
        command = singerid(
            "identify", library, *query_files, "--workers", "2", "--quiet", "--device", "cpu", "--top-k", "5"
        )
        with answers.open("w", encoding="utf-8") as f:  # the answers themselves, to score the library end to end
            started = time.perf_counter()
            done = subprocess.run(command, stdout=f, stderr=subprocess.PIPE, text=True)
            seconds = time.perf_counter() - started
        if done.returncode not in (0, 1):
            raise SystemExit(f"identify failed: {done.stderr[-2000:]}")
        top1, top5 = score_identify(answers, truth)
        record.add(
            size, "identify", {"seconds": round(seconds, 2), "files": len(query_files), "top1": top1, "top5": top5}
        )


def score_identify(answers: Path, truth: dict[str, str]) -> tuple[float, float]:
    """Top-1 and top-5 of `identify`'s closest singers against each query file's singer."""
    top1 = top5 = total = 0
    for line in answers.read_text(encoding="utf-8").splitlines():
        path, _, rest = line.partition(": ")  # "PATH: s001 (0.91), ..." or "PATH: unknown singer (...); closest: ..."
        if path not in truth:
            continue
        names = re.findall(r"(\S+) \(-?[0-9.]+\)", rest)
        total += 1
        top1 += bool(names) and names[0] == truth[path]
        top5 += truth[path] in names[:5]
    return round(top1 / max(total, 1), 4), round(top5 / max(total, 1), 4)


def protocols(eval_dir: Path, store_path: Path) -> None:
    """Trials and scoring alone, on the cached embeddings of the trained A-PNL system (timed by the caller)."""
    import numpy as np

    from singerid.protocols import ProtocolConfig, TrackEmbeddings, evaluate, make_trials
    from singerid.splits import TEST_SPLITS
    from singerid.store import read_header

    cache = next(p for p in sorted(eval_dir.glob("embeddings-cpu-*.npz")))
    data = np.load(cache)
    tracks = [
        TrackEmbeddings(t.singer_id, t.track_id, t.split, data[t.track_id])
        for t in read_header(store_path).tracks
        if t.split in TEST_SPLITS
    ]
    started = time.perf_counter()
    result = evaluate(tracks, make_trials(tracks, ProtocolConfig()))
    print(f"protocols: {time.perf_counter() - started:.2f} s for {result.singers} singers")


def plot(root: Path, out: Path) -> None:
    """Wall time, peak memory and disk of each stage against the number of singers, on log-log axes, with the
    growth exponent (slope) of each; and the slopes printed."""
    import numpy as np
    from matplotlib.figure import Figure

    data = json.loads((root / "record.json").read_text(encoding="utf-8"))
    sizes = sorted(int(s) for s in data)
    stages = ["synth", "prepare", "epoch", "protocols", "enroll", "identify", "store info"]
    figure = Figure(figsize=(13, 4.2))
    for column, (metric, label) in enumerate(
        (("seconds", "wall time (s)"), ("peak_mb", "peak memory (MB)"), ("disk_mb", "disk (MB)"))
    ):
        axes = figure.add_subplot(1, 3, column + 1)
        for name in stages:
            points = [(n, data[str(n)][name].get(metric)) for n in sizes if name in data[str(n)]]
            points = [(n, v) for n, v in points if v]
            if len(points) < 2:
                continue
            x, y = np.log(np.array(points, dtype=float)).T
            slope = np.polyfit(x, y, 1)[0]
            print(f"{metric:>8} {name:>10}: slope {slope:.2f}  " + ", ".join(f"{n}: {v:g}" for n, v in points))
            axes.plot([n for n, _ in points], [v for _, v in points], marker="o", label=f"{name} (slope {slope:.2f})")
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("singers")
        axes.set_ylabel(label)
        axes.grid(True, which="both", color="0.9")
        axes.legend(fontsize="x-small")
    figure.suptitle("singerid cost per stage against catalog size (2 cores, no GPU)")
    figure.savefig(out, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action")
    go = actions.add_parser("run", help="run (or resume) every size")
    go.add_argument("--root", type=Path, default=Path("runs/scale"))
    go.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    go.add_argument("--minutes", type=float, default=20.0, help="training budget per loss at the largest size")
    go.add_argument(
        "--losses", nargs="+", default=["cpu", "cpu-triplet"], help="configs/<name>.yaml to train at full size"
    )
    timing = actions.add_parser("protocols")
    timing.add_argument("eval_dir", type=Path)
    timing.add_argument("store", type=Path)
    drawing = actions.add_parser("plot")
    drawing.add_argument("--root", type=Path, default=Path("runs/scale"))
    drawing.add_argument("--out", type=Path, default=Path("docs/scale.png"))
    args = parser.parse_args()
    if args.action == "protocols":
        protocols(args.eval_dir, args.store)
    elif args.action == "plot":
        plot(args.root, args.out)
    else:
        args.root.mkdir(parents=True, exist_ok=True)
        record = Record(args.root / "record.json")
        largest = max(args.sizes)
        for size in sorted(args.sizes):
            losses = tuple(args.losses) if size == largest else ("cpu",)
            run_size(args.root, size, args.minutes if size == largest else 0.0, record, losses)
        report = args.root / str(largest) / "experiment" / "report.md"
        print(f"scale: record in {args.root / 'record.json'}; report {report}")
