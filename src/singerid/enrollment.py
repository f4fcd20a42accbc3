"""Enrolling singers into a library, and the bond between a library and the model that embeds for it.

`store_singers` and `catalog_singers` give each singer with its tracks' window embeddings, one singer at a time;
`enroll_singers` enrolls them as they come (memory holds the library's vectors, not the catalog's embeddings) and
calibrates the open-set threshold. A library records its model by the digest of its weights and
by a path relative to the library folder (`bind_model`), so that a run folder moved together with its library
still works, and `library_encoder` refuses a checkpoint whose weights are not the ones the library was made with
(embeddings of another model are not comparable).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from singerid.audio import AudioError
from singerid.catalog import read_catalog
from singerid.checkpoint import BASE, checkpoint_path, load_checkpoint, weights_digest
from singerid.encoder import SingerEncoder
from singerid.library import LibraryError, SingerLibrary, track_scores
from singerid.store import FeatureStore

SingerSegments = tuple[str, list[np.ndarray]]  # a singer and the (windows, D) embeddings of each of its tracks
CALIBRATION_SINGERS = 2000  # singers whose tracks calibrate the open-set threshold (memory stays bounded)


def bind_model(library_folder: Path, checkpoint: Path, digest: str) -> dict[str, Any]:
    """The model record of a library: the checkpoint's path relative to the library folder (or `base`, the
    shipped encoder, by name), and its digest."""
    if str(checkpoint) == BASE:
        return {"checkpoint": BASE, "digest": digest}
    relative = os.path.relpath(checkpoint.resolve(), library_folder.resolve())
    return {"checkpoint": relative, "digest": digest}


def library_checkpoint(library_folder: Path, model: dict[str, Any]) -> Path:
    """Where a library's checkpoint is: its path relative to the library (absolute in older libraries)."""
    if "checkpoint" not in model:
        raise LibraryError(f"{library_folder}: the library records no model; enroll it again with --checkpoint")
    if model["checkpoint"] == BASE:
        return checkpoint_path(BASE)
    path = Path(model["checkpoint"])
    return path if path.is_absolute() else library_folder / path


def check_model(library_folder: Path, model: dict[str, Any], checkpoint: Path, digest: str) -> None:
    """Refuses a checkpoint whose weights are not those the library was made with."""
    if model.get("digest") and model["digest"] != digest:
        raise LibraryError(
            f"{library_folder}: made with a model of weights {model['digest']}, but {checkpoint} holds weights "
            f"{digest}; embeddings of two models cannot be compared: enroll into a new library"
        )


def library_encoder(library_folder: Path, library: SingerLibrary, device: str = "auto") -> SingerEncoder:
    """The encoder of a library's own model, checked against the digest it recorded."""
    path = library_checkpoint(library_folder, library.model_info)
    checkpoint = load_checkpoint(path)
    check_model(library_folder, library.model_info, path, weights_digest(checkpoint.model))
    return SingerEncoder.from_checkpoint(checkpoint, device)


Shard = tuple[int, int]  # part K of N (1-based), as `prepare --shard K/N`


def shard_singers(singers: Iterable[str], shard: Shard | None) -> set[str]:
    """The singers of part K of N: every N-th in sorted order from the K-th (all when `shard` is None), so each
    singer is embedded on exactly one machine and the parts merge into one library."""
    ordered = sorted(set(singers))
    if shard is None:
        return set(ordered)
    k, n = shard
    return set(ordered[k - 1 :: n])


def store_singers(
    encoder: SingerEncoder, store: FeatureStore, splits: Collection[str], shard: Shard | None = None
) -> Iterator[SingerSegments]:
    """Each singer of a store (of `splits`, or all; of part `shard`) with its tracks' window embeddings, one singer
    at a time."""
    wanted = [i for i, t in enumerate(store.tracks) if not splits or t.split in splits]
    mine = shard_singers((store.tracks[i].singer_id for i in wanted), shard)
    chosen = sorted((i for i in wanted if store.tracks[i].singer_id in mine), key=lambda i: store.tracks[i].singer_id)
    embedded = ((store.tracks[i].singer_id, segments) for i, segments in encoder.embed_many(chosen, store.frames))
    yield from _by_singer(embedded)


def catalog_singers(
    encoder: SingerEncoder,
    catalog: Path,
    splits: Collection[str],
    workers: int,
    skipped: list[AudioError],
    shard: Shard | None = None,
) -> Iterator[SingerSegments]:
    """Each singer of a catalog (of `splits`, or all; of part `shard`) with its tracks' window embeddings from
    their audio files, one singer at a time; the files that cannot be used are appended to `skipped`."""
    wanted = [t for t in read_catalog(catalog) if not splits or t.split in splits]
    mine = shard_singers((t.singer_id for t in wanted), shard)
    tracks = sorted((t for t in wanted if t.singer_id in mine), key=lambda t: t.singer_id)
    singer_of = {t.audio_path: t.singer_id for t in tracks}

    def embedded() -> Iterator[tuple[str, np.ndarray]]:
        for path, outcome in encoder.embed_files(list(singer_of), workers=workers, progress=True):
            if isinstance(outcome, AudioError):
                skipped.append(outcome)
            else:
                yield singer_of[path], outcome

    yield from _by_singer(embedded())


def _by_singer(tracks: Iterable[tuple[str, np.ndarray]]) -> Iterator[SingerSegments]:
    """Consecutive tracks of one singer gathered: (singer, [its tracks' windows])."""
    for singer, group in itertools.groupby(tracks, key=lambda entry: entry[0]):
        yield singer, [segments for _, segments in group]


@dataclass
class Enrolled:
    """What an enrolment did."""

    singers: int
    tracks: int
    threshold: str  # the open-set threshold set, in words


def enroll_singers(
    library: SingerLibrary,
    singers: Iterable[SingerSegments],
    threshold: float | None = None,
    false_accepts: float | None = None,
    calibration_singers: int = CALIBRATION_SINGERS,
    *,
    replace: bool = False,
    recalibrate: bool = False,
) -> Enrolled:
    """Enrolls each singer from its tracks' windows as they come (nothing but the library's vectors stays in
    memory, whatever the number of singers), and sets the open-set threshold: the one given, else calibrated at
    `false_accepts` (or at the equal error rate) on the tracks of the first `calibration_singers` singers (leave
    one track out). A library that has a threshold keeps it when extended, unless `recalibrate` (the tracks of
    this call alone may be few or unlike the rest). A singer enrolled already gets these tracks added, or replaced
    by them (`replace`)."""
    earlier = library.threshold if len(library) else None
    calibration: dict[str, list[np.ndarray]] = {}
    count = tracks = 0
    for singer, parts in singers:
        library.enroll(singer, np.concatenate(parts), replace=replace)
        count, tracks = count + 1, tracks + len(parts)
        if len(calibration) < calibration_singers:
            calibration[singer] = parts
    if not count:
        return Enrolled(0, 0, "")
    if threshold is None and earlier is not None and not recalibrate:
        library.threshold = earlier
        return Enrolled(count, tracks, f"open-set threshold {earlier:.3f} kept (set earlier; --recalibrate to redo)")
    return Enrolled(count, tracks, calibrate(library, calibration, threshold, false_accepts))


def calibrate(
    library: SingerLibrary, tracks: dict[str, list[np.ndarray]], threshold: float | None, false_accepts: float | None
) -> str:
    """Sets the library's open-set threshold (given, or calibrated on `tracks`); returns what was set, in words."""
    if threshold is not None:
        library.threshold = threshold
        return f"open-set threshold {library.threshold:.3f} (given)"
    targets, impostors = track_scores(tracks)
    if not (len(targets) and len(impostors)):
        return "no open-set threshold (calibrating one needs two singers and a singer with two tracks)"
    chosen = library.calibrate_threshold(targets, impostors, false_accepts)
    point = "equal error rate" if false_accepts is None else f"{100 * false_accepts:g} % false accepts"
    return (
        f"open-set threshold {chosen:.3f} at the {point} on the enrolled tracks (leave one track out: "
        f"{100 * np.mean(targets < chosen):.1f} % of known singers' files fall below it, "
        f"{100 * np.mean(impostors >= chosen):.1f} % of other singers' files pass it; optimistic "
        "for tracks the model was trained on)"
    )
