"""Enrolling singers into a library, and the bond between a library and the model that embeds for it.

`embed_store_tracks` and `embed_catalog_tracks` give each singer's tracks as window embeddings; `enroll_tracks`
enrolls them and calibrates the open-set threshold. A library records its model by the digest of its weights and
by a path relative to the library folder (`bind_model`), so that a run folder moved together with its library
still works, and `library_encoder` refuses a checkpoint whose weights are not the ones the library was made with
(embeddings of another model are not comparable).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from singerid.audio import AudioError
from singerid.catalog import read_catalog
from singerid.checkpoint import load_checkpoint, weights_digest
from singerid.encoder import SingerEncoder
from singerid.library import LibraryError, SingerLibrary, track_scores
from singerid.store import FeatureStore

SingerTracks = dict[str, list[np.ndarray]]  # per singer, the (windows, D) embeddings of each of its tracks


def bind_model(library_folder: Path, checkpoint: Path, digest: str) -> dict[str, Any]:
    """The model record of a library: the checkpoint's path relative to the library folder, and its digest."""
    relative = os.path.relpath(checkpoint.resolve(), library_folder.resolve())
    return {"checkpoint": relative, "digest": digest}


def library_checkpoint(library_folder: Path, model: dict[str, Any]) -> Path:
    """Where a library's checkpoint is: its path relative to the library (absolute in older libraries)."""
    if "checkpoint" not in model:
        raise LibraryError(f"{library_folder}: the library records no model; enroll it again with --checkpoint")
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


def embed_store_tracks(encoder: SingerEncoder, store: FeatureStore, splits: Collection[str]) -> SingerTracks:
    """The tracks of a store (of `splits`, or all), from their stored frames."""
    tracks: SingerTracks = {}
    chosen = [i for i, t in enumerate(store.tracks) if not splits or t.split in splits]
    for i, segments in encoder.embed_many(chosen, store.frames):
        tracks.setdefault(store.tracks[i].singer_id, []).append(segments)
    return tracks


def embed_catalog_tracks(
    encoder: SingerEncoder, catalog: Path, splits: Collection[str], workers: int = 1
) -> tuple[SingerTracks, list[AudioError]]:
    """The tracks of a catalog (of `splits`, or all) from their audio files, and the files that could not be used."""
    singer_of = {t.audio_path: t.singer_id for t in read_catalog(catalog) if not splits or t.split in splits}
    tracks: SingerTracks = {}
    skipped = []
    for path, outcome in encoder.embed_files(list(singer_of), workers=workers, progress=True):
        if isinstance(outcome, AudioError):
            skipped.append(outcome)
        else:
            tracks.setdefault(singer_of[path], []).append(outcome)
    return tracks, skipped


def enroll_tracks(
    library: SingerLibrary, tracks: SingerTracks, threshold: float | None = None, false_accepts: float | None = None
) -> str:
    """Enrolls each singer from its tracks' windows and sets the open-set threshold: the one given, else calibrated
    on the enrolled tracks (leave one track out) at `false_accepts`, or at the equal error rate; returns what was
    set, in words."""
    for singer, parts in tracks.items():
        library.enroll(singer, np.concatenate(parts))
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
