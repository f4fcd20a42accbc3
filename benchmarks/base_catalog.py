"""The training catalog of the base encoder: several catalogs (voices from more than one synthesizer) in one
metadata.csv that `singerid prepare` reads.

    python benchmarks/base_catalog.py OUT.csv NAME=CATALOG [NAME=CATALOG ...]

Each CATALOG is a folder holding a metadata.csv. A catalog whose tracks have splits gives only its train and val
tracks (its unseen test singers stay unseen; a split catalog must give every track a split); a catalog without
splits gives every singer's tracks to train and val, 4:1 in file order, a singer of 2-4 tracks validating on its
last (all its singers are training singers, none is tested). Singer and track ids get the NAME as a prefix
(`NAME-x00`), so that two catalogs cannot share a singer; paths are written absolute. The base encoder's card in
the README names the catalogs.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from singerid.catalog import Track, read_metadata
from singerid.fileio import atomic_path
from singerid.splits import TRAIN, TRAINING_SPLITS, VAL
from singerid.synth import METADATA_COLUMNS

VAL_EVERY = 5  # a catalog without splits: every fifth track of a singer validates


def training_tracks(catalog: Path) -> list[Track]:
    """The catalog's train and val tracks; where it has no splits, all of its tracks, split 4:1 per singer."""
    tracks = read_metadata(catalog / "metadata.csv")
    if any(track.split for track in tracks):
        if not all(track.split for track in tracks):
            raise SystemExit(f"{catalog}: some tracks have a split and some do not")
        return [track for track in tracks if track.split in TRAINING_SPLITS]
    by_singer: dict[str, list[Track]] = defaultdict(list)
    for track in tracks:
        by_singer[track.singer_id].append(track)
    return [
        replace(t, split=VAL if validates(i, len(singer)) else TRAIN)
        for singer in by_singer.values()
        for i, t in enumerate(singer)
    ]


def validates(index: int, tracks: int) -> bool:
    """Whether a singer's `index`-th of `tracks` tracks goes to val: every fifth, or the last of 2-4."""
    return index % VAL_EVERY == VAL_EVERY - 1 or (1 < tracks < VAL_EVERY and index == tracks - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="metadata.csv to write")
    parser.add_argument("catalogs", nargs="+", metavar="NAME=CATALOG")
    args = parser.parse_args()
    rows, names = [], set()
    for named in args.catalogs:
        name, _, folder = named.partition("=")
        if not name or not folder:
            parser.error(f"{named}: give NAME=CATALOG")
        if name in names:
            parser.error(f"{name}: two catalogs of one name would share singer ids")
        names.add(name)
        catalog = Path(folder)
        tracks = training_tracks(catalog)
        rows += [
            [
                f"{name}-{t.singer_id}",
                f"{name}-{t.track_id}",
                t.audio_path.resolve(),
                t.lrc_path.resolve() if t.lrc_path else "",
                t.split,
            ]
            for t in tracks
        ]
        print(f"{catalog}: {len({t.singer_id for t in tracks})} singers, {len(tracks)} tracks")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as temporary, temporary.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(METADATA_COLUMNS)
        writer.writerows(rows)
    print(f"wrote {args.out} ({len(rows)} tracks)")


if __name__ == "__main__":
    main()
