"""Frame precision and recall of the vocal-activity detector on catalogs whose vocal stems are known.

A catalog is a folder with `metadata.csv` (singer_id,track_id,path,...) and `stems/<track_id>.flac`, the vocal
alone as mixed: what `singerid synth OUT --stems` and `benchmarks/make_independent_catalog.py` write. A 10 ms frame
is sung when the stem's 40 ms energy is within 30 dB of its loud level (95th percentile) and above -60 dBFS, with
gaps under 0.3 s closed (the detector's own minimum gap). The detector runs as `prepare` runs it on a track
without lyrics (no separation: REPET-SIM's estimate gives the vocal share).

    python benchmarks/vad_quality.py CATALOG... [--seconds 5-15] [--loop SECONDS] [--limit N] [--tracks]

`--seconds` keeps the tracks of that length; `--loop` tiles every track (mixture and stem) to that length, as
a looped track would be.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from singerid.audio import load_audio
from singerid.vad import detect_vocal_activity

RATE = 16000
HOP = 160


def stem_truth(stem: np.ndarray) -> np.ndarray:
    """Sung 10 ms frames of a vocal stem."""
    frames = 1 + len(stem) // HOP
    padded = np.pad(stem, (320, 320 + HOP))
    windows = np.lib.stride_tricks.sliding_window_view(padded, 640)[::HOP][:frames]
    energy = 10 * np.log10(np.mean(windows.astype(np.float64) ** 2, axis=1) + 1e-12)
    sung = energy > max(float(np.percentile(energy, 95)) - 30.0, -60.0)
    return close_gaps(sung, 30)


def close_gaps(mask: np.ndarray, frames: int) -> np.ndarray:
    """Fills runs of False shorter than `frames` between two runs of True."""
    mask = mask.copy()
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    for end, start in zip(ends[:-1], starts[1:], strict=True):
        if start - end < frames:
            mask[end:start] = True
    return mask


def region_mask(regions: list[tuple[float, float]], frames: int) -> np.ndarray:
    mask = np.zeros(frames, bool)
    for start, end in regions:
        mask[round(start * 100) : round(end * 100)] = True
    return mask


def score_catalog(
    catalog: Path, loop: float | None = None, limit: int | None = None, lengths: tuple[float, float] = (0, np.inf)
) -> list[dict[str, float]]:
    """Per track of `lengths` seconds: precision, recall, share of frames sung and kept, seconds, detector time."""
    with (catalog / "metadata.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    scores = []
    for row in rows:
        if limit is not None and len(scores) >= limit:
            break
        mix = load_audio(catalog / row["path"], RATE)
        if not lengths[0] <= len(mix) / RATE <= lengths[1]:
            continue
        stem = load_audio(catalog / "stems" / f"{row['track_id']}.flac", RATE)
        n = min(len(mix), len(stem))
        mix, stem = mix[:n], stem[:n]
        if loop:
            repeats = int(np.ceil(loop * RATE / n))
            mix, stem = np.tile(mix, repeats)[: round(loop * RATE)], np.tile(stem, repeats)[: round(loop * RATE)]
        truth = stem_truth(stem)
        start = time.perf_counter()
        found = region_mask(detect_vocal_activity(mix, RATE), len(truth))
        elapsed = time.perf_counter() - start
        hits = float((found & truth).sum())
        scores.append(
            {
                "precision": hits / found.sum() if found.any() else float("nan"),
                "recall": hits / max(truth.sum(), 1),
                "sung": truth.mean(),
                "kept": found.mean(),
                "seconds": loop or n / RATE,
                "time": elapsed,
                "track": row["track_id"],
            }
        )
    return scores


def summary(name: str, scores: list[dict[str, float]]) -> str:
    precision = np.array([s["precision"] for s in scores])
    recall = np.array([s["recall"] for s in scores])
    seconds = [s["seconds"] for s in scores]
    rejected = sum(s["kept"] * s["seconds"] < 1.0 for s in scores)  # under min_voice_seconds
    sung, kept = np.mean([s["sung"] for s in scores]), np.mean([s["kept"] for s in scores])
    return (
        f"| {name} | {len(scores)} | {min(seconds):.0f}-{max(seconds):.0f} s | {np.nanmean(precision):.2f} "
        f"| {recall.mean():.2f} | {sung:.2f} | {kept:.2f} | {rejected} "
        f"| {sum(s['time'] for s in scores) / sum(seconds) * 60:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("catalogs", nargs="+", type=Path)
    parser.add_argument("--loop", type=float, help="tile every track to this many seconds")
    parser.add_argument("--limit", type=int, help="at most this many tracks per catalog")
    parser.add_argument("--seconds", default="0-inf", help="only tracks of this length range, e.g. 5-15 or 180-480")
    parser.add_argument("--tracks", action="store_true", help="also print every track's scores")
    args = parser.parse_args()
    low, high = (float(x) for x in args.seconds.split("-"))
    print("| catalog | tracks | length | precision | recall | sung | kept | < 1 s kept | detector s/min |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for catalog in args.catalogs:
        scores = score_catalog(catalog, args.loop, args.limit, (low, high))
        name = catalog.name + (f" looped to {args.loop:.0f} s" if args.loop else "")
        print(summary(name, scores), flush=True)
        if args.tracks:
            for s in scores:
                print(f"    {s['track']}: P {s['precision']:.2f} R {s['recall']:.2f} sung {s['sung']:.2f}", end=" ")
                print(f"kept {s['kept']:.2f}")


if __name__ == "__main__":
    main()
