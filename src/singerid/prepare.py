"""`singerid prepare`: a catalog through the front end (section III-A of the paper) into a feature store.

Per track: decode to 16 kHz mono -> optional vocal separation -> vocal regions (LRC phrases, else the
vocal-activity detector on the separated signal) -> log-mel of the whole track -> the frames inside the regions.
Each finished track is written at once to `STORE/parts/` (frames, then its record, each atomically), so a killed
run loses nothing finished; at the end the parts are packed into shards and the index. A track that cannot be used
goes to rejects.csv with the reason, and the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from singerid.audio import AudioError
from singerid.catalog import Track, read_catalog
from singerid.errors import SingerIdError
from singerid.features import FeatureConfig, FrontendConfig
from singerid.fileio import atomic_path, record_from_dict, write_atomically
from singerid.frontend import TrackFrontend
from singerid.parallel import map_in_processes
from singerid.separation import build_separator
from singerid.splits import TEST_UNSEEN, TRAIN
from singerid.store import (
    SHARD_FRAMES,
    Reject,
    StoredTrack,
    StoreError,
    StoreHeader,
    read_header,
    write_header,
    write_shard,
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


def _process(args: tuple[Track, Path]) -> bool:
    """Prepares one track into parts/; returns whether it was kept."""
    track, parts = args
    assert _WORKER is not None
    key = part_key(track.track_id)
    folder = parts / key[:2]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        frames, method, seconds, lyrics_note = _WORKER.file_frames(track.audio_path, track.lrc_path)
    except SingerIdError as error:  # the input's fault; anything else is a bug and stops the run
        reason = error.reason if isinstance(error, AudioError) else str(error)
        record = {"reject": asdict(Reject(str(track.audio_path), track.track_id, reason))}
        _write_json(folder / f"{key}.json", record)
        return False
    with atomic_path(folder / f"{key}.npy", durable=True) as temporary, temporary.open("wb") as f:
        np.save(f, frames)
    record = {
        "track": {
            "singer_id": track.singer_id,
            "track_id": track.track_id,
            "split": track.split,
            "source": str(track.audio_path),
            "method": method,
            "voice_seconds": round(seconds, 3),
            "lyrics_note": lyrics_note,
        }
    }
    _write_json(folder / f"{key}.json", record)  # written last: its presence marks the track done
    return True


def _write_json(path: Path, record: dict) -> None:
    write_atomically(path, json.dumps(record, ensure_ascii=False), durable=True)


@dataclass(frozen=True)
class PrepareResult:
    header: StoreHeader
    processed: int  # tracks processed in this run
    skipped: int  # tracks already done by an earlier run
    seconds: float


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
) -> PrepareResult:
    """Prepares every track of the catalog (of this machine's shard) that the store does not hold yet;
    `retry_rejects` tries the tracks an earlier run rejected once more (after fixing the files, say)."""
    start_time = time.perf_counter()
    store = Path(store)
    k, n = shard
    if not 1 <= k <= n:
        raise ValueError(f"shard must be K/N with 1 <= K <= N, got {k}/{n}")
    tracks = [t for t in read_catalog(catalog, seed) if in_shard(t.track_id, shard)]
    build_separator(frontend.separation, frontend.separator_weights)  # a bad name or weights file: say so here
    store.mkdir(parents=True, exist_ok=True)
    parts = store / "parts"
    if (store / "index.json").exists():
        header = read_header(store)
        if header.features != features or header.frontend != frontend:
            raise StoreError(f"{store}: made with other front-end settings; prepare into a new folder")
    else:
        header = StoreHeader(features, frontend)
    check_parts_settings(parts, features, frontend, store)
    if retry_rejects:
        retried = {r.track_id for r in header.rejects}
        header.rejects = []
        for track_id in retried:
            _part_record(parts, track_id).unlink(missing_ok=True)
    done = {t.track_id for t in header.tracks} | {r.track_id for r in header.rejects}
    tracks = keep_singer_roles(tracks, header)
    todo = [t for t in tracks if t.track_id not in done and not _part_record(parts, t.track_id).exists()]
    skipped = len(tracks) - len(todo)
    bar = tqdm(total=len(tracks), initial=skipped, desc="prepare", unit="track", disable=not progress)
    jobs = [(t, parts) for t in todo]
    with closing(map_in_processes(_process, jobs, workers, _init_worker, (frontend, features))) as results:
        for _ in results:
            bar.update()
    bar.close()
    _pack(store, header, [t for t in tracks if t.track_id not in done])
    return PrepareResult(header, len(todo), skipped, time.perf_counter() - start_time)


def keep_singer_roles(tracks: list[Track], header: StoreHeader) -> list[Track]:
    """New tracks of a singer the store holds already keep that singer's role, whatever the catalog's split
    rule says now (a catalog that grew between runs can re-draw its seeded splits): an unseen singer's new tracks
    are test_unseen, a seen singer's are never test_unseen. So a resumed store never trains on an unseen singer."""
    unseen: dict[str, bool] = {}
    for t in header.tracks:
        unseen[t.singer_id] = unseen.get(t.singer_id, True) and t.split == TEST_UNSEEN
    kept = []
    for track in tracks:
        role = unseen.get(track.singer_id)
        if role is True and track.split != TEST_UNSEEN:
            track = replace(track, split=TEST_UNSEEN)
        elif role is False and track.split == TEST_UNSEEN:
            track = replace(track, split=TRAIN)
        kept.append(track)
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
    """Moves finished parts into new shard files and the index, in catalog order; then removes the parts."""
    parts = store / "parts"
    buffer: list[np.ndarray] = []
    buffered = 0
    shard = len(header.shards)
    for track in new_tracks:
        path = _part_record(parts, track.track_id)
        if not path.exists():
            continue  # not finished (an interrupted worker): done by the next run
        record = json.loads(path.read_text(encoding="utf-8"))
        if "reject" in record:
            header.rejects.append(Reject(**record["reject"]))
            continue
        frames = np.load(path.with_suffix(".npy"))
        if buffered + len(frames) > SHARD_FRAMES and buffer:
            write_shard(store, shard, np.concatenate(buffer))
            header.shards.append(buffered)
            shard, buffer, buffered = shard + 1, [], 0
        # the split is this run's (parts of an interrupted run may hold an older draw of a changed catalog)
        stored = {**record["track"], "split": track.split}
        header.tracks.append(StoredTrack(**stored, shard=shard, offset=buffered, frames=len(frames)))
        buffer.append(frames)
        buffered += len(frames)
    if buffer:
        write_shard(store, shard, np.concatenate(buffer))
        header.shards.append(buffered)
    write_header(store, header)
    shutil.rmtree(parts, ignore_errors=True)
