"""The feature store: float16 log-mel frames of the sung parts of every track, memory-mapped, plus an index.

Layout of a store folder:
    index.json            format, version, FeatureConfig, front-end settings, shards, tracks
    frames-00000.f16 ...  raw float16 arrays of shape (frames, n_mels), one after another per track
    bank-00000.f16 ...    the same for each track's accompaniment bank (none in stores written before banks)
    rejects.csv           file,track_id,reason for every track that could not be used

A track's frames are the frames of its vocal regions, concatenated in time order; a crop never crosses a track
boundary (it may span two consecutive vocal regions of the same track). Its bank is up to 10 s of frames from
outside its vocal regions (intros, interludes, outros: see `singerid.frontend.BANK_SECONDS`), from the same signal
as its vocal frames, which the mixing augmentation adds to other tracks' crops. Files are written under a
temporary name and renamed, so a reader never sees a half-written shard or index.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from singerid.errors import SingerIdError
from singerid.features import FeatureConfig, FrontendConfig
from singerid.fileio import atomic_path, check_format, record_from_dict, write_atomically

STORE_FORMAT = "singerid-store"
STORE_VERSION = 1
SHARD_FRAMES = 1 << 22  # 4.2 M frames (11.7 h of voice, 512 MiB at 64 mels) per shard file


class StoreError(SingerIdError):
    """A store that cannot be read or merged; the message names the folder and the reason."""


@dataclass(frozen=True, kw_only=True)
class Fingerprint:
    """What a track was made from: its audio file's size, modification time and content digest, and the digest of
    its lyrics file ("" without one). Stored and rejected tracks carry it (flat in index.json), so that a rerun of
    `prepare` redoes a track whose content changed."""

    audio_size: int = -1
    audio_mtime_ns: int = -1
    audio_digest: str = ""  # "" in stores written before fingerprints were kept
    lrc_digest: str = ""

    def same_content(self, other: Fingerprint) -> bool:
        return self.audio_digest == other.audio_digest and self.lrc_digest == other.lrc_digest


@dataclass(frozen=True)
class StoredTrack(Fingerprint):
    singer_id: str
    track_id: str
    split: str
    source: str  # the audio file it came from
    method: str  # "lrc" or "vad": how its vocal regions were found
    voice_seconds: float  # seconds of voice kept
    shard: int
    offset: int  # first frame in the shard
    frames: int
    lyrics_note: str = ""  # what its LRC gave: "12 phrases", "no lyrics file", "no timed phrases, 3 lines skipped"
    truncated_seconds: float = 0.0  # audio past FrontendConfig.max_track_seconds, not read (0: the whole file)
    bank_shard: int = 0  # where its accompaniment bank lies in the bank shards ...
    bank_offset: int = 0
    bank_frames: int = 0  # ... and its frames (0: none, as in every track of a store written before banks)


@dataclass(frozen=True)
class Reject(Fingerprint):
    source: str
    track_id: str
    reason: str


@dataclass
class StoreHeader:
    """Everything but the frames: how they were made and where each track lies."""

    features: FeatureConfig
    frontend: FrontendConfig  # separation, region settings: the rest of what made the frames
    catalog: str = ""  # the catalog it was prepared from (its metadata.csv or folder, resolved)
    shards: list[int] = field(default_factory=list)  # frames per shard file
    bank_shards: list[int] = field(default_factory=list)  # frames per bank shard file
    tracks: list[StoredTrack] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


def shard_name(index: int, kind: str = "frames") -> str:
    """The file of shard `index` of the vocal frames (`kind` "frames") or of the accompaniment banks ("bank")."""
    return f"{kind}-{index:05d}.f16"


class ShardWriter:
    """Appends tracks' frames to shard files of at most SHARD_FRAMES frames, one track at a time (memory stays that
    of one track); each shard is written under a temporary name and renamed when full or closed, and its size
    appended to `sizes` (the header's `shards`, or `bank_shards` for `kind` "bank")."""

    def __init__(self, folder: Path, sizes: list[int], kind: str = "frames") -> None:
        self.folder, self.sizes, self.kind = folder, sizes, kind
        self.index, self.frames = len(sizes), 0
        self._file: Any = None
        self._target: Any = None

    def add(self, frames: np.ndarray) -> tuple[int, int]:
        """Writes a track's (frames, n_mels) frames; returns (shard, offset) of its first frame."""
        if self._file is not None and self.frames + len(frames) > SHARD_FRAMES:
            self.close()
            self.index += 1
        if self._file is None:
            self._target = atomic_path(self.folder / shard_name(self.index, self.kind), durable=True)
            self._file = self._target.__enter__().open("wb")
            self.frames = 0
        np.ascontiguousarray(frames, dtype=np.float16).tofile(self._file)
        offset, self.frames = self.frames, self.frames + len(frames)
        return self.index, offset

    def close(self) -> None:
        """Finishes the shard being written (renames it into place) and records its size in the header."""
        if self._file is None:
            return
        self._file.close()
        self._target.__exit__(None, None, None)
        self.sizes.append(self.frames)
        self._file = self._target = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        if error is None:
            self.close()
        elif self._file is not None:  # a failed run leaves no half shard behind
            self._file.close()
            self._target.__exit__(kind, error, trace)


def write_header(folder: Path, header: StoreHeader) -> None:
    """Writes index.json and rejects.csv, atomically; index.json last, as it makes the store readable."""
    rows = ["file,track_id,reason"]
    for r in header.rejects:
        rows.append(csv_line([r.source, r.track_id, r.reason]))
    write_atomically(folder / "rejects.csv", "\n".join(rows) + "\n")
    record = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "features": asdict(header.features),
        "frontend": asdict(header.frontend),
        "catalog": header.catalog,
        "shards": [{"file": shard_name(i), "frames": n} for i, n in enumerate(header.shards)],
        "bank_shards": [{"file": shard_name(i, "bank"), "frames": n} for i, n in enumerate(header.bank_shards)],
        "tracks": [asdict(t) for t in header.tracks],
        "rejects": [asdict(r) for r in header.rejects],
    }
    write_atomically(folder / "index.json", json.dumps(record, ensure_ascii=False), durable=True)


def csv_line(values: list[str]) -> str:
    from io import StringIO

    buffer = StringIO()
    csv.writer(buffer, lineterminator="").writerow(values)
    return buffer.getvalue()


def read_header(folder: Path) -> StoreHeader:
    path = Path(folder) / "index.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{folder}: not a feature store (no index.json); make one with `singerid prepare`") from None
    except (OSError, json.JSONDecodeError) as error:
        raise StoreError(f"{path}: unreadable index ({error})") from error
    problem = check_format(record, STORE_FORMAT, STORE_VERSION, "feature store index", str(path))
    if problem:
        raise StoreError(problem)
    source = str(path)
    try:
        return StoreHeader(
            features=record_from_dict(FeatureConfig, record["features"], source),
            frontend=record_from_dict(FrontendConfig, record["frontend"], source),
            catalog=record.get("catalog", ""),
            shards=[s["frames"] for s in record["shards"]],
            bank_shards=[s["frames"] for s in record.get("bank_shards", [])],
            tracks=[record_from_dict(StoredTrack, t, source) for t in record["tracks"]],
            rejects=[record_from_dict(Reject, r, source) for r in record["rejects"]],
        )
    except (KeyError, TypeError, ValueError) as error:
        raise StoreError(f"{path}: damaged index ({type(error).__name__}: {error})") from error


class FeatureStore:
    """Read access to a store: any crop of any track without loading the store into memory."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.header = read_header(self.folder)
        self.tracks = self.header.tracks
        self.features = self.header.features
        self._shards: dict[tuple[str, int], np.ndarray] = {}
        for kind, sizes in (("frames", self.header.shards), ("bank", self.header.bank_shards)):
            for i, frames in enumerate(sizes):
                path = self.folder / shard_name(i, kind)
                expected = frames * self.features.n_mels * 2
                if not path.is_file() or path.stat().st_size != expected:
                    raise StoreError(f"{path}: missing or of the wrong size (expected {expected} bytes)")

    def __len__(self) -> int:
        return len(self.tracks)

    def _shard(self, index: int, kind: str = "frames") -> np.ndarray:
        shard = self._shards.get((kind, index))
        if shard is None:  # opened lazily, so that forked data-loader workers each map their own
            sizes = self.header.bank_shards if kind == "bank" else self.header.shards
            shape = (sizes[index], self.features.n_mels)
            shard = np.memmap(self.folder / shard_name(index, kind), dtype=np.float16, mode="r", shape=shape)
            self._shards[(kind, index)] = shard
        return shard

    def frames(self, track: int) -> np.ndarray:
        """All frames of one track, a read-only float16 view (frames, n_mels)."""
        t = self.tracks[track]
        return self._shard(t.shard)[t.offset : t.offset + t.frames]

    def bank(self, track: int) -> np.ndarray:
        """The track's accompaniment bank, a read-only float16 view (bank_frames, n_mels); empty without one."""
        t = self.tracks[track]
        if not t.bank_frames:
            return np.empty((0, self.features.n_mels), np.float16)
        return self._shard(t.bank_shard, "bank")[t.bank_offset : t.bank_offset + t.bank_frames]

    @property
    def has_bank(self) -> bool:
        """Whether any track has an accompaniment bank (a store written before banks has none)."""
        return bool(self.header.bank_shards)

    def crop(self, track: int, start: int, length: int) -> np.ndarray:
        """`length` frames from `start` as float32; a track shorter than `length` is repeated (tiled)."""
        return cut(self.frames(track), start, length)

    def random_crop(self, track: int, length: int, rng: np.random.Generator) -> np.ndarray:
        available = self.tracks[track].frames - length
        return self.crop(track, int(rng.integers(0, available + 1)) if available > 0 else 0, length)

    def random_bank_crop(self, track: int, length: int, rng: np.random.Generator) -> np.ndarray:
        """`length` frames of the track's bank from a random start, float32 (tiled when the bank is shorter)."""
        bank = self.bank(track)
        available = len(bank) - length
        return cut(bank, int(rng.integers(0, available + 1)) if available > 0 else 0, length)

    def summary(self) -> dict[str, Any]:
        """Singers, tracks and hours of voice per split, frames and bytes."""
        per_split: dict[str, dict[str, Any]] = defaultdict(lambda: {"singers": set(), "tracks": 0, "hours": 0.0})
        for t in self.tracks:
            entry = per_split[t.split]
            entry["singers"].add(t.singer_id)
            entry["tracks"] += 1
            entry["hours"] += t.voice_seconds / 3600
        methods: dict[str, int] = defaultdict(int)
        detector_reasons: dict[str, int] = defaultdict(int)  # why tracks fell to the detector
        for t in self.tracks:
            methods[t.method] += 1
            if t.method == "vad" and t.lyrics_note:
                detector_reasons[t.lyrics_note.split(" (")[0].split(",")[0]] += 1
        frames = sum(self.header.shards)
        return {
            "store": str(self.folder),
            "singers": len({t.singer_id for t in self.tracks}),
            "tracks": len(self.tracks),
            "rejects": len(self.header.rejects),
            "truncated": sum(1 for t in self.tracks if t.truncated_seconds > 0),
            "frames": frames,
            "bytes": frames * self.features.n_mels * 2,
            "methods": dict(methods),
            "detector_reasons": dict(detector_reasons),
            "frontend": asdict(self.header.frontend),
            "splits": {
                split: {"singers": len(e["singers"]), "tracks": e["tracks"], "hours": round(e["hours"], 3)}
                for split, e in sorted(per_split.items())
            },
        }


def cut(frames: np.ndarray, start: int, length: int) -> np.ndarray:
    """`length` of `frames` from `start` as float32; fewer frames than `length` are repeated (tiled)."""
    if len(frames) >= length:
        if not 0 <= start <= len(frames) - length:
            raise IndexError(f"crop [{start}, {start + length}) outside track of {len(frames)} frames")
        return np.asarray(frames[start : start + length], dtype=np.float32)
    reps = -(-length // len(frames))
    return np.tile(np.asarray(frames, dtype=np.float32), (reps, 1))[:length]


def format_summary(summary: dict[str, Any]) -> str:
    lines = [
        f"store {summary['store']}: {summary['singers']} singers, {summary['tracks']} tracks, "
        f"{summary['rejects']} rejected, {summary['frames']} frames, {summary['bytes'] / 2**20:.1f} MiB",
        f"front end: {json.dumps(summary['frontend'], ensure_ascii=False)}; regions by {summary['methods']}",
    ]
    if summary.get("truncated"):
        lines.append(
            f"{summary['truncated']} tracks were longer than the front end reads and were cut "
            "(index.json, truncated_seconds)"
        )
    if summary.get("detector_reasons"):
        reasons = ", ".join(f"{why}: {count}" for why, count in sorted(summary["detector_reasons"].items()))
        lines.append(f"the detector found the regions of tracks with {reasons} (per track: index.json, lyrics_note)")
    lines += [
        f"{'split':<12} {'singers':>8} {'tracks':>8} {'voice h':>9}",
    ]
    for split, e in summary["splits"].items():
        lines.append(f"{split:<12} {e['singers']:>8} {e['tracks']:>8} {e['hours']:>9.2f}")
    return "\n".join(lines)


def merge_stores(out: Path, parts: list[Path]) -> StoreHeader:
    """Joins stores prepared as shards of one catalog (`prepare --shard K/N`) into one store at `out`."""
    if (out / "index.json").exists():
        raise StoreError(f"{out}: is a store already; merge into a new folder")
    for part in parts:
        if (part / "parts").exists():
            raise StoreError(f"{part}: has unfinished tracks (an interrupted prepare); rerun its prepare first")
    headers = [read_header(p) for p in parts]
    first = headers[0]
    for part, header in zip(parts[1:], headers[1:]):
        if header.features != first.features or header.frontend != first.frontend:
            raise StoreError(f"{part}: made with other front-end settings than {parts[0]}; cannot merge")
    out.mkdir(parents=True, exist_ok=True)
    merged = StoreHeader(first.features, first.frontend, first.catalog)
    seen: set[str] = set()
    for part, header in zip(parts, headers):
        base, bank_base = len(merged.shards), len(merged.bank_shards)
        for kind, sizes, merged_sizes in (
            ("frames", header.shards, merged.shards),
            ("bank", header.bank_shards, merged.bank_shards),
        ):
            for i, frames in enumerate(sizes):
                with atomic_path(out / shard_name(len(merged_sizes), kind), durable=True) as temporary:
                    shutil.copyfile(part / shard_name(i, kind), temporary)
                merged_sizes.append(frames)
        for t in header.tracks:
            if t.track_id in seen:
                raise StoreError(f"{part}: track '{t.track_id}' is in two of the stores to merge")
            seen.add(t.track_id)
            merged.tracks.append(
                StoredTrack(**{**asdict(t), "shard": t.shard + base, "bank_shard": t.bank_shard + bank_base})
            )
        merged.rejects.extend(header.rejects)
    write_header(out, merged)
    return merged
