"""A catalog of tracks: `metadata.csv` (singer_id,track_id,path,lrc_path,split) or a folder tree.

In a folder tree the first level names the singer, deeper levels (albums) are allowed, and `<track>.lrc` beside
its audio file holds the lyrics. Tracks without a split get one from `assign_splits`, seeded.
"""

from __future__ import annotations

import csv
import os
import random
import unicodedata
import warnings
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath

from singerid.errors import SingerIdError
from singerid.splits import SPLITS, TEST_SEEN, TEST_UNSEEN, TRAIN, VAL

AUDIO_SUFFIXES = frozenset(
    {
        ".mp3",
        ".m4a",
        ".aac",
        ".mp4",
        ".ogg",
        ".oga",
        ".opus",
        ".flac",
        ".wav",
        ".aif",
        ".aiff",
        ".wma",
        ".webm",
        ".m4b",
        ".mka",
        ".mp2",
        ".mpa",
        ".ac3",
        ".eac3",
        ".dts",
        ".wv",
        ".ape",
        ".tta",
        ".caf",
        ".au",
        ".aifc",
        ".spx",
        ".amr",
        ".mpga",
        ".mkv",
    }
)
MIN_TRAIN_TRACKS = 3  # a seen test singer keeps this many tracks for train and val
MIN_TEST_SINGERS = 4  # per test group, where the catalog has 4x as many singers


REQUIRED_COLUMNS = ("singer_id", "path")
OPTIONAL_COLUMNS = ("track_id", "lrc_path", "split")
LAYOUT = "a catalog is a folder with one folder per singer, CATALOG/<singer>/[<album>/]<track>.mp3, or a metadata.csv"


class CatalogError(SingerIdError, ValueError):
    """A catalog that cannot be read; the message names the file and the reason."""


@dataclass(frozen=True)
class Track:
    singer_id: str
    track_id: str
    audio_path: Path
    lrc_path: Path | None
    split: str  # one of SPLITS, or "" before assign_splits


@dataclass(frozen=True)
class Unreadable:
    """A part of a catalog that could not be read (a folder without permission, a symlink loop)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Catalog:
    """The tracks of a catalog, each with a split, and what of it could not be read."""

    tracks: list[Track]
    unreadable: list[Unreadable] = field(default_factory=list)


def scan_catalog(source: str | Path, seed: int = 0) -> Catalog:
    """Reads a metadata.csv, a folder holding one, or a folder tree; every track gets a split."""
    source = Path(source)
    if not source.exists():
        raise CatalogError(f"{source}: no such file or folder")
    if source.is_dir() and (source / "metadata.csv").is_file():
        source = source / "metadata.csv"
    if source.is_file() and source.suffix.lower() in AUDIO_SUFFIXES:
        raise CatalogError(f"{source}: an audio file, not a catalog: {LAYOUT}")
    catalog = Catalog(read_metadata(source)) if source.is_file() else scan_folder(source)
    if not catalog.tracks:
        loose = [p for p in source.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES] if source.is_dir() else []
        detail = f"; the {len(loose)} audio files directly in it belong to no singer" if loose else ""
        unread = f"; {len(catalog.unreadable)} folders could not be read" if catalog.unreadable else ""
        raise CatalogError(f"{source}: no audio tracks found ({LAYOUT}){detail}{unread}")
    if any(not t.split for t in catalog.tracks):
        catalog = Catalog(assign_splits(catalog.tracks, seed), catalog.unreadable)
    return catalog


def read_catalog(source: str | Path, seed: int = 0) -> list[Track]:
    """The tracks of `scan_catalog`; what could not be read is named in a warning."""
    catalog = scan_catalog(source, seed)
    for part in catalog.unreadable:
        warnings.warn(f"{part.path}: not read ({part.reason})", stacklevel=2)
    return catalog.tracks


def read_metadata(path: Path) -> list[Track]:
    """Reads metadata.csv; paths are relative to the CSV file; an empty lrc_path means a same-named .lrc beside
    the audio file, if there is one."""
    root = path.parent
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise CatalogError(f"{path}: cannot read metadata ({error})") from error
    missing = [column for column in REQUIRED_COLUMNS if not rows or column not in rows[0]]
    if missing:
        raise CatalogError(
            f"{path}: lacks the column{'s' * (len(missing) > 1)} {', '.join(missing)} (required: "
            f"{', '.join(REQUIRED_COLUMNS)}; optional: {', '.join(OPTIONAL_COLUMNS)})"
        )
    tracks, seen = [], set()
    for line, row in enumerate(rows, start=2):
        extra, absent = row.pop(None, []), sum(value is None for value in row.values())  # DictReader's marks
        if extra or absent:
            raise CatalogError(
                f"{path}:{line}: {len(row) - absent + len(extra)} fields, but the header has {len(row)}; every row "
                "needs one value per column (empty is fine; quote fields that hold commas)"
            )
        empty = [column for column in REQUIRED_COLUMNS if not row[column].strip()]
        if empty:
            raise CatalogError(f"{path}:{line}: empty {' and '.join(empty)}; every track needs a singer and a file")
        split = (row.get("split") or "").strip()
        if split and split not in SPLITS:
            raise CatalogError(f"{path}:{line}: unknown split '{split}'; use one of {', '.join(SPLITS)} or leave empty")
        track_id = (row.get("track_id") or "").strip() or Path(row["path"]).with_suffix("").as_posix()
        if track_id in seen:
            raise CatalogError(f"{path}:{line}: duplicate track_id '{track_id}'")
        seen.add(track_id)
        lrc = (row.get("lrc_path") or "").strip()
        audio = resolve_path(root, row["path"])
        singer = unicodedata.normalize("NFC", row["singer_id"].strip())
        # no lrc_path given: a same-named .lrc beside the audio, as in a folder tree
        tracks.append(Track(singer, track_id, audio, resolve_path(root, lrc) if lrc else lyrics_beside(audio), split))
    return tracks


def resolve_path(root: Path, written: str) -> Path:
    """A path as a metadata.csv writes it, relative to `root` (or absolute). When it does not exist as written,
    the forms other tools write are tried: Windows separators, stray spaces around the field, and the other
    Unicode normalisation of accented names (macOS hands out NFD names, most editors write NFC)."""
    as_written = root / written
    if as_written.exists():
        return as_written
    current = root
    for part in PurePath(written.strip().replace("\\", "/")).parts:
        candidate = current / part
        if not candidate.exists():
            key = unicodedata.normalize("NFC", part)
            try:
                candidate = next(c for c in current.iterdir() if unicodedata.normalize("NFC", c.name) == key)
            except (StopIteration, OSError):
                return as_written
        current = candidate
    return current


def scan_folder(root: Path) -> Catalog:
    """Finds audio files under root/<singer>/...; a same-named .lrc beside a file is its lyrics. Singer ids are
    the folder names in Unicode NFC, so 'Sigur Rós' copied from a macOS disk (NFD) is the same singer.

    Hidden files and folders (names starting with '.', such as the '._song.mp3' resource forks macOS leaves on
    other disks, and the folders NAS boxes add, such as '@eaDir') are not tracks; audio files directly in `root`
    belong to no singer (a warning names them). A song found in several formats ('Song.flac' and 'Song.mp3' side
    by side) is one track, read from the first of LOSSLESS_FIRST's suffixes present; a warning names the others.
    Symbolic links to folders are followed (a loop is reported, not followed twice); folders that cannot be read
    are reported in `Catalog.unreadable`.
    """
    tracks, duplicates, unreadable = [], [], []
    loose = sorted(p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if loose:
        _warn_unread(root, loose, "audio files directly in the catalog folder belong to no singer")
    for singer_dir in sorted(p for p in root.iterdir() if p.is_dir() and not _is_hidden(p.name)):
        singer = unicodedata.normalize("NFC", singer_dir.name)  # one singer, whatever form the file system gave
        found: dict[str, list[Path]] = defaultdict(list)
        for audio in _audio_files(singer_dir, unreadable):
            relative = audio.relative_to(singer_dir)
            found[(Path(singer_dir.name) / relative).with_suffix("").as_posix()].append(audio)
        for track_id, files in found.items():
            audio = min(files, key=_format_preference)
            duplicates += [f for f in files if f != audio]
            tracks.append(Track(singer, track_id, audio, lyrics_beside(audio), ""))
    if duplicates:
        names = [str(f.relative_to(root)) for f in duplicates]
        _warn_unread(root, names, "files are another format of a track found already")
    return Catalog(tracks, unreadable)


def _audio_files(folder: Path, unreadable: list[Unreadable]) -> list[Path]:
    """The audio files below `folder`, sorted, outside hidden folders; symbolic links to folders are followed
    once (a loop is reported in `unreadable`, as is a folder that cannot be listed)."""
    files: list[Path] = []
    visited: set[tuple[int, int]] = set()

    def failed(error: OSError) -> None:
        unreadable.append(Unreadable(Path(error.filename or folder), f"cannot list the folder: {error.strerror}"))

    for current, folders, names in os.walk(folder, onerror=failed, followlinks=True):
        here = Path(current)
        try:
            stat = here.stat()
        except OSError as error:
            failed(error)
            folders.clear()
            continue
        if (stat.st_dev, stat.st_ino) in visited:
            unreadable.append(Unreadable(here, "a symbolic link loop back to a folder read already"))
            folders.clear()
            continue
        visited.add((stat.st_dev, stat.st_ino))
        folders[:] = sorted(name for name in folders if not _is_hidden(name))
        for name in names:
            path = here / name
            if not _is_hidden(name) and path.suffix.lower() in AUDIO_SUFFIXES and path.is_file():
                files.append(path)
    return sorted(files)


def _warn_unread(root: Path, names: list[str], why: str) -> None:
    listed = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    warnings.warn(f"{root}: {len(names)} {why}, not read: {listed}", stacklevel=3)


LOSSLESS_FIRST = (".flac", ".wav", ".aiff", ".aif")
# Folders that file systems and NAS boxes keep beside the music (thumbnails, trash, indexes).
SYSTEM_FOLDERS = frozenset({"@eadir", "#recycle", "#snapshot", "$recycle.bin", "system volume information"})


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_FOLDERS


def _format_preference(path: Path) -> tuple[int, str]:
    suffix = path.suffix.lower()
    return (LOSSLESS_FIRST.index(suffix) if suffix in LOSSLESS_FIRST else len(LOSSLESS_FIRST), path.name)


def lyrics_beside(audio: Path) -> Path | None:
    """The LRC file of an audio file: `Song.lrc` (any case of the suffix) or `Song.mp3.lrc` beside it."""
    for candidate in sorted(audio.parent.glob(f"{glob_escape(audio.stem)}.*")):
        if candidate.suffix.lower() == ".lrc" and candidate.stem in (audio.stem, audio.name) and candidate.is_file():
            return candidate
    return None


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def assign_splits(tracks: list[Track], seed: int, unseen_fraction: float = 0.15, test_tracks: int = 10) -> list[Track]:
    """Splits like the paper: unseen singers (test tracks only), seen singers with separate test tracks, and
    train/val 8:2 for the rest of the seen singers' tracks. Tracks that already have a split keep it.

    A singer can be a test singer only with at least 7 tracks (6 enrollment songs + 1 query song); a seen test
    singer keeps at least MIN_TRAIN_TRACKS tracks for training, so singers with 10 tracks qualify. About
    `unseen_fraction` of the singers become unseen and as many seen singers get test tracks, at least
    MIN_TEST_SINGERS of each where the catalog has four times as many singers (fewer make no ranking).
    """
    by_singer: dict[str, list[Track]] = defaultdict(list)
    for track in tracks:
        by_singer[track.singer_id].append(track)
    rng = random.Random(seed)
    singers = sorted(by_singer)
    rng.shuffle(singers)
    count = max(round(unseen_fraction * len(singers)), min(MIN_TEST_SINGERS, len(singers) // 4))
    unseen = [s for s in singers if len(by_singer[s]) >= 7][:count]
    seen_test = [s for s in singers if s not in unseen and len(by_singer[s]) >= 7 + MIN_TRAIN_TRACKS][:count]
    decided: dict[str, str] = {}
    for singer in singers:
        open_tracks = [t for t in by_singer[singer] if not t.split]
        rng.shuffle(open_tracks)
        if singer in unseen:
            decided.update((t.track_id, TEST_UNSEEN) for t in open_tracks)
            continue
        if singer in seen_test:
            n_test = min(test_tracks, len(open_tracks) - MIN_TRAIN_TRACKS)
            decided.update((t.track_id, TEST_SEEN) for t in open_tracks[:n_test])
            open_tracks = open_tracks[n_test:]
        n_val = round(0.2 * len(open_tracks)) if len(open_tracks) >= 2 else 0
        decided.update((t.track_id, VAL) for t in open_tracks[:n_val])
        decided.update((t.track_id, TRAIN) for t in open_tracks[n_val:])
    return [t if t.split else replace(t, split=decided[t.track_id]) for t in tracks]
