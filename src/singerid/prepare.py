"""`singerid prepare`: a catalog through the front end (section III-A of the paper) into a feature store.

Per track: decode to 16 kHz mono -> optional vocal separation -> vocal regions (LRC phrases, else the
vocal-activity detector on the separated signal) -> log-mel of the whole track -> the frames inside the regions.
Each finished track is written at once to `STORE/parts/` (frames, then its record, each atomically), so a killed
run loses nothing finished; at the end the parts are packed into shards and the index. A track that cannot be used
goes to rejects.csv with the reason, and the run goes on.

A rerun brings the store up to date with the catalog: every stored track is keyed on what made it (a
`Fingerprint` of its audio and lyrics files, its singer and split). A track whose audio or lyrics changed is
prepared again, one whose singer or split changed is relabelled, one the catalog no longer lists is dropped, and a
rejected file that changed is tried again. A store prepared from another catalog is refused unless asked.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import warnings
from contextlib import closing
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from singerid.audio import AudioError
from singerid.catalog import Track, scan_catalog
from singerid.errors import SingerIdError
from singerid.features import FeatureConfig, FrontendConfig
from singerid.fileio import atomic_path, record_from_dict, write_atomically
from singerid.frontend import TrackFrontend
from singerid.parallel import map_in_processes
from singerid.progress import progress_bar
from singerid.separation import build_separator
from singerid.splits import TEST_UNSEEN, TRAIN
from singerid.store import (
    Fingerprint,
    Reject,
    ShardWriter,
    StoredTrack,
    StoreError,
    StoreHeader,
    read_header,
    write_header,
)


def part_key(track_id: str) -> str:
    return hashlib.sha1(track_id.encode("utf-8")).hexdigest()[:20]


def in_shard(track_id: str, shard: tuple[int, int]) -> bool:
    """Whether a track belongs to machine K of N (stable across machines and runs)."""
    k, n = shard
    return int(part_key(track_id), 16) % n == k - 1


_WORKER: TrackFrontend | None = None


def _init_worker(frontend: FrontendConfig, features: FeatureConfig) -> None:
    global _WORKER
    _WORKER = TrackFrontend(frontend, features)


def file_digest(path: Path) -> str:
    """A content digest of a file (BLAKE2b, 128 bits), read in 1 MiB blocks."""
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(track: Track, known: Fingerprint | None = None) -> Fingerprint:
    """The track's files as they are now; the audio is hashed again only when its size or mtime changed."""
    try:
        lrc_digest = file_digest(track.lrc_path) if track.lrc_path else ""
    except OSError:
        lrc_digest = ""  # unreadable lyrics: the front end finds the regions another way and says so
    try:
        stat = track.audio_path.stat()
    except OSError:
        return Fingerprint(lrc_digest=lrc_digest)  # missing: the front end rejects it and says why
    if known and known.audio_digest and (known.audio_size, known.audio_mtime_ns) == (stat.st_size, stat.st_mtime_ns):
        return Fingerprint(
            audio_size=stat.st_size,
            audio_mtime_ns=stat.st_mtime_ns,
            audio_digest=known.audio_digest,
            lrc_digest=lrc_digest,
        )
    try:
        audio_digest = file_digest(track.audio_path)
    except OSError:
        audio_digest = ""
    return Fingerprint(
        audio_size=stat.st_size, audio_mtime_ns=stat.st_mtime_ns, audio_digest=audio_digest, lrc_digest=lrc_digest
    )


def _process(args: tuple[Track, Path]) -> bool:
    """Prepares one track into parts/; returns whether it was kept."""
    track, parts = args
    assert _WORKER is not None
    key = part_key(track.track_id)
    folder = parts / key[:2]
    folder.mkdir(parents=True, exist_ok=True)
    made_from = asdict(fingerprint(track))
    try:
        made = _WORKER.file_frames(track.audio_path, track.lrc_path)
    except SingerIdError as error:  # the input's fault; anything else is a bug and stops the run
        reason = error.reason if isinstance(error, AudioError) else str(error)
        record = {"reject": {**asdict(Reject(str(track.audio_path), track.track_id, reason)), **made_from}}
        _write_json(folder / f"{key}.json", record)
        return False
    for name, frames in ((f"{key}.npy", made.frames), (f"{key}.bank.npy", made.bank)):
        with atomic_path(folder / name, durable=True) as temporary, temporary.open("wb") as f:
            np.save(f, frames)
    record = {
        "track": {
            "singer_id": track.singer_id,
            "track_id": track.track_id,
            "split": track.split,
            "source": str(track.audio_path),
            "method": made.method,
            "voice_seconds": round(made.voice_seconds, 3),
            "lyrics_note": made.lyrics_note,
            "truncated_seconds": round(made.truncated_seconds, 3),
            **made_from,
        }
    }
    _write_json(folder / f"{key}.json", record)  # written last: its presence marks the track done
    return True


def _write_json(path: Path, record: dict) -> None:
    write_atomically(path, json.dumps(record, ensure_ascii=False), durable=True)


@dataclass(frozen=True)
class PrepareResult:
    header: StoreHeader
    processed: int  # tracks processed in this run (new, changed or retried)
    skipped: int  # tracks already done and unchanged
    seconds: float
    changed: int = 0  # stored tracks whose audio or lyrics changed: prepared again
    relabelled: int = 0  # stored tracks whose singer or split changed: relabelled, frames kept
    removed: int = 0  # stored or rejected tracks the catalog no longer lists: dropped
    retried: int = 0  # rejected tracks tried again (changed since, or --retry-rejects)


def catalog_identity(catalog: str | Path) -> str:
    """The catalog's metadata.csv, or its folder, as an absolute path."""
    path = Path(catalog).resolve()
    return str(path / "metadata.csv") if path.is_dir() and (path / "metadata.csv").is_file() else str(path)


def prepare(
    catalog: str | Path,
    store: str | Path,
    frontend: FrontendConfig = FrontendConfig(),
    features: FeatureConfig = FeatureConfig(),
    *,
    workers: int = 1,
    shard: tuple[int, int] = (1, 1),
    seed: int = 0,
    progress: bool = True,
    retry_rejects: bool = False,
    other_catalog: bool = False,
) -> PrepareResult:
    """Brings the store up to date with the catalog (this machine's shard of it): new tracks and tracks whose
    files changed are prepared, relabelled ones relabelled, dropped ones removed. `retry_rejects` tries every
    rejected track again (after fixing a decoder, say); `other_catalog` accepts a store made from another catalog."""
    start_time = time.perf_counter()
    store = Path(store)
    k, n = shard
    if not 1 <= k <= n:
        raise ValueError(f"shard must be K/N with 1 <= K <= N, got {k}/{n}")
    scanned = scan_catalog(catalog, seed)
    tracks = [t for t in scanned.tracks if in_shard(t.track_id, shard)]
    build_separator(frontend.separation, frontend.separator_weights)  # a bad name or weights file: say so here
    store.mkdir(parents=True, exist_ok=True)
    parts = store / "parts"
    identity = catalog_identity(catalog)
    if (store / "index.json").exists():
        header = read_header(store)
        if header.features != features or header.frontend != frontend:
            raise StoreError(f"{store}: made with other front-end settings; prepare into a new folder")
        if header.catalog and header.catalog != identity and not other_catalog:
            raise StoreError(
                f"{store}: prepared from {header.catalog}, not {identity}; prepare into a new folder, or pass "
                "--other-catalog to bring it up to date with this one (changed tracks are prepared again)"
            )
    else:
        header = StoreHeader(features, frontend)
    header.catalog = identity
    check_parts_settings(parts, features, frontend, store)
    tracks = keep_singer_roles(tracks, header)
    plan = _plan(tracks, header, parts, retry_rejects)
    # what the catalog could not read is named in rejects.csv (found anew by every run, so never stale)
    header.rejects += [Reject(str(part.path), "", part.reason) for part in scanned.unreadable]
    bar = progress_bar(
        total=len(tracks), initial=len(tracks) - len(plan.todo), desc="prepare", unit="track", disable=not progress
    )
    jobs = [(t, parts) for t in plan.todo]
    with closing(map_in_processes(_process, jobs, workers, _init_worker, (frontend, features))) as results:
        for _ in results:
            bar.update()
    bar.close()
    _pack(store, header, plan.to_pack)
    return PrepareResult(
        header,
        processed=len(plan.todo),
        skipped=len(tracks) - len(plan.todo),
        seconds=time.perf_counter() - start_time,
        changed=plan.changed,
        relabelled=plan.relabelled,
        removed=plan.removed,
        retried=plan.retried,
    )


@dataclass
class _Plan:
    todo: list[Track]  # to run through the front end now
    to_pack: list[Track]  # whose parts go into the store at the end: todo and parts of an interrupted run
    changed: int = 0
    relabelled: int = 0
    removed: int = 0
    retried: int = 0


def _plan(tracks: list[Track], header: StoreHeader, parts: Path, retry_rejects: bool) -> _Plan:
    """Compares the catalog with the store and updates the header in place: relabels, drops removed and changed
    tracks and rejects; returns what remains to be prepared and packed."""
    stored = {t.track_id: t for t in header.tracks}
    rejected = {r.track_id: r for r in header.rejects if r.track_id}  # "": a folder the catalog could not read
    listed = {t.track_id for t in tracks}
    plan = _Plan([], [])
    kept: dict[str, StoredTrack] = {}
    for track in tracks:
        old = stored.get(track.track_id)
        reject = rejected.pop(track.track_id, None)
        if old is not None:
            now = fingerprint(track, old)
            if old.audio_digest and not now.same_content(old):
                plan.changed += 1  # the audio or the lyrics changed: its frames are stale
            else:
                relabel = (old.singer_id, old.split) != (track.singer_id, track.split)
                plan.relabelled += relabel
                kept[track.track_id] = replace(
                    old, singer_id=track.singer_id, split=track.split, source=str(track.audio_path), **asdict(now)
                )
                continue
        elif reject is not None:
            now = fingerprint(track, reject)
            if not retry_rejects and now.same_content(reject):  # a file missing then and readable now differs
                rejected[track.track_id] = replace(reject, **asdict(now))  # unchanged: it stays rejected
                continue
            plan.retried += 1
        record = _part_record(parts, track.track_id)
        if record.exists() and _part_is_current(record, track):
            plan.to_pack.append(track)  # finished by an interrupted run
            continue
        record.unlink(missing_ok=True)
        plan.todo.append(track)
        plan.to_pack.append(track)
    plan.removed = sum(1 for t in header.tracks if t.track_id not in listed)
    plan.removed += sum(1 for r in rejected.values() if r.track_id not in listed)
    header.tracks = [kept[t.track_id] for t in header.tracks if t.track_id in kept]
    header.rejects = [r for r in rejected.values() if r.track_id in listed]
    return plan


def _part_is_current(record: Path, track: Track) -> bool:
    """Whether an interrupted run's part was made from the track's files as they are now."""
    entry = json.loads(record.read_text(encoding="utf-8"))
    made = record_from_dict(
        Fingerprint, {k: v for k, v in next(iter(entry.values())).items() if k in _FINGERPRINT}, str(record)
    )
    return bool(made.audio_digest) and fingerprint(track, made).same_content(made)


_FINGERPRINT = {f.name for f in fields(Fingerprint)}


def keep_singer_roles(tracks: list[Track], header: StoreHeader) -> list[Track]:
    """New tracks of a singer the store holds already keep that singer's role, whatever the catalog's split
    rule says now (a catalog that grew between runs can re-draw its seeded splits): an unseen singer's new tracks
    are test_unseen, a seen singer's are never test_unseen. So a resumed store never trains on an unseen singer."""
    unseen: dict[str, bool] = {}
    for t in header.tracks:
        unseen[t.singer_id] = unseen.get(t.singer_id, True) and t.split == TEST_UNSEEN
    kept, moved = [], set()
    for track in tracks:
        role = unseen.get(track.singer_id)
        if role is True and track.split != TEST_UNSEEN:
            track = replace(track, split=TEST_UNSEEN)
            moved.add(track.singer_id)
        elif role is False and track.split == TEST_UNSEEN:
            track = replace(track, split=TRAIN)
            moved.add(track.singer_id)
        kept.append(track)
    if moved:
        names = ", ".join(sorted(moved)[:5]) + (", ..." if len(moved) > 5 else "")
        warnings.warn(
            f"{len(moved)} singers keep their role in this store (seen or unseen) against the catalog's splits "
            f"({names}); prepare a new store to change a singer's role",
            stacklevel=2,
        )
    return kept


def check_parts_settings(parts: Path, features: FeatureConfig, frontend: FrontendConfig, store: Path) -> None:
    """Unpacked parts of an interrupted run are resumed only with the settings that made them."""
    path = parts / "settings.json"
    if path.exists():
        settings = json.loads(path.read_text(encoding="utf-8"))
        made_with = (
            record_from_dict(FeatureConfig, settings["features"], str(path)),
            record_from_dict(FrontendConfig, settings["frontend"], str(path)),
        )
        if made_with != (features, frontend):
            raise StoreError(
                f"{store}: an interrupted run with other front-end settings left {parts}; rerun it with "
                "its settings, or prepare into a new folder"
            )
        return
    parts.mkdir(parents=True, exist_ok=True)
    _write_json(path, {"features": asdict(features), "frontend": asdict(frontend)})


def _part_record(parts: Path, track_id: str) -> Path:
    key = part_key(track_id)
    return parts / key[:2] / f"{key}.json"


def _pack(store: Path, header: StoreHeader, new_tracks: list[Track]) -> None:
    """Moves finished parts into new shard files and the index, in catalog order; then removes the parts. The
    frames of tracks prepared again stay unreferenced in their old shards. A part without a bank (left by an
    interrupted run of a singerid before banks) is stored without one."""
    parts = store / "parts"
    with ShardWriter(store, header.shards) as shards, ShardWriter(store, header.bank_shards, "bank") as banks:
        for track in new_tracks:
            path = _part_record(parts, track.track_id)
            if not path.exists():
                continue  # not finished (an interrupted worker): done by the next run
            record = json.loads(path.read_text(encoding="utf-8"))
            if "reject" in record:
                header.rejects.append(record_from_dict(Reject, record["reject"], str(path)))
                continue
            frames = np.load(path.with_suffix(".npy"))
            shard, offset = shards.add(frames)
            bank_path = path.with_suffix(".bank.npy")
            bank = np.load(bank_path) if bank_path.exists() else frames[:0]
            bank_shard, bank_offset = banks.add(bank) if len(bank) else (0, 0)
            # singer and split are this run's (parts of an interrupted run may hold an older draw of a changed catalog)
            stored = {**record["track"], "singer_id": track.singer_id, "split": track.split}
            header.tracks.append(
                StoredTrack(
                    **stored,
                    shard=shard,
                    offset=offset,
                    frames=len(frames),
                    bank_shard=bank_shard,
                    bank_offset=bank_offset,
                    bank_frames=len(bank),
                )
            )
    write_header(store, header)
    shutil.rmtree(parts, ignore_errors=True)
