"""The paper's evaluation protocols (section III-B..D) on precomputed segment embeddings.

Seen singers (split ``test_seen``) and unseen singers (split ``test_unseen``) form two groups, always evaluated
apart: a group's candidates are only its own singers. Per singer, ``enroll_songs`` tracks chosen with a seed are
enrollment songs and the others query songs; an enrollment and a query never share a track.

- Identification (Tables II, III): a singer's prototype is the normalised mean of the normalised embeddings of
  every segment of its enrollment songs; a query is the normalised mean of n segments of its query songs; top-1
  and top-5 accuracy of cosine scores against all prototypes of the group. With the ``sqeuclidean`` metric (the
  prototypical loss's own, eq. 3), prototypes and queries are plain means of the raw embeddings and the score is
  minus their squared Euclidean distance.
- One-on-one verification (Table II): single segment against single segment; targets come from two different
  tracks of one singer, non-targets pair a segment of the singer with one of another singer of the group.
- Centroid verification (Table IV): the centroid of s segments of the claimed singer's enrollment songs against
  one segment of the query songs of the same singer (target) or of another singer (non-target).

Trials are drawn once by :func:`make_trials`, saved as JSON, and scored by :func:`evaluate`. They reference
segments as (track, segment index), the track by its position in ``Trials.track_ids``.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from singerid.errors import SingerIdError
from singerid.fileio import write_atomically
from singerid.metrics import top_k_accuracy, verification_result
from singerid.results import METRICS, EvaluationResult, IdentificationScore, VerificationScore
from singerid.scoring import DEFAULT_TOP_N, normalised_pair_scores, unit_rows
from singerid.splits import GROUP_OF_SPLIT, GROUPS

__all__ = [
    "GroupTrials",
    "IdentificationTrials",
    "ProtocolConfig",
    "SegmentRefs",
    "TrackEmbeddings",
    "Trials",
    "VerificationTrials",
    "evaluate",
    "load_trials",
    "make_trials",
    "save_trials",
]

TRIALS_FORMAT = "singerid-trials"
TRIALS_VERSION = 1
# Random streams, one per kind of draw, so that changing one condition leaves the others' trials unchanged.
_STREAM_ENROLLMENT, _STREAM_IDENTIFICATION, _STREAM_ONE_ON_ONE, _STREAM_CENTROID = range(4)


class ProtocolError(SingerIdError, ValueError):
    """Test tracks, settings or a saved trials file the protocols cannot use; the message says why."""


class TrialListError(SingerIdError, ValueError):
    """A verification trial list that cannot be read; the message names the file and the line."""


@dataclass(frozen=True, eq=False)
class TrackEmbeddings:
    """The segment embeddings of one test track."""

    singer_id: str
    track_id: str
    split: str  # "test_seen" or "test_unseen"
    segments: np.ndarray  # (n_segments, D) float32: embeddings of the track's 3.5 s windows


@dataclass(frozen=True)
class ProtocolConfig:
    """How trials are drawn (defaults follow the paper)."""

    enroll_songs: int = 6  # songs per singer whose segments form the enrollment centroid
    query_segments: tuple[int, ...] = (1, 3, 5)  # identification query lengths in segments (Table III)
    queries_per_singer: int = 20  # identification trials per singer and query length
    verification_trials_per_singer: int = 120  # one-on-one, half target half non-target (paper: 120)
    enroll_segments: tuple[int, ...] = (1, 3, 5)  # Table IV centroid sizes
    seed: int = 0  # seeds every draw; the same seed and tracks give the same trials

    def __post_init__(self) -> None:
        for name in ("enroll_songs", "queries_per_singer", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "seed" else 1):
                raise ProtocolError(
                    f"ProtocolConfig.{name} must be a {'non-negative' if name == 'seed' else 'positive'} "
                    f"integer, got {value!r}"
                )
        count = self.verification_trials_per_singer
        if isinstance(count, bool) or not isinstance(count, int) or count < 2:
            raise ProtocolError(f"ProtocolConfig.verification_trials_per_singer must be an integer >= 2, got {count!r}")
        for name in ("query_segments", "enroll_segments"):
            sizes = tuple(getattr(self, name))
            if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
                raise ProtocolError(
                    f"ProtocolConfig.{name} must be a non-empty list of positive integers, got {sizes!r}"
                )
            if len(set(sizes)) != len(sizes):
                raise ProtocolError(f"ProtocolConfig.{name} has repeated values: {sizes!r}")
            object.__setattr__(self, name, sizes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProtocolConfig:
        """Build from a mapping such as ``asdict(config)`` or its JSON; unknown keys raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ProtocolError(f"unknown ProtocolConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True, eq=False)
class SegmentRefs:
    """Segments of a list of trials: trial i averages segments (tracks[i, j], segments[i, j]) over j."""

    tracks: np.ndarray  # (trials, n) int64: position in Trials.track_ids
    segments: np.ndarray  # (trials, n) int64: segment index within that track

    def __post_init__(self) -> None:
        tracks = np.asarray(self.tracks, dtype=np.int64)
        segments = np.asarray(self.segments, dtype=np.int64)
        if tracks.ndim != 2 or tracks.shape != segments.shape:
            raise ProtocolError(
                f"segment references must be two (trials, n) arrays, got {tracks.shape} and {segments.shape}"
            )
        object.__setattr__(self, "tracks", tracks)
        object.__setattr__(self, "segments", segments)

    def to_dict(self) -> dict[str, Any]:
        return {"tracks": self.tracks.tolist(), "segments": self.segments.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SegmentRefs:
        return cls(np.array(data["tracks"], dtype=np.int64), np.array(data["segments"], dtype=np.int64))


@dataclass(frozen=True, eq=False)
class IdentificationTrials:
    """Identification queries of one length; candidates are the group's singers."""

    queries: SegmentRefs  # (trials, n) segments of the target singer's query songs
    targets: np.ndarray  # (trials,) int64: the true singer's position in GroupTrials.singers

    def to_dict(self) -> dict[str, Any]:
        return {"targets": self.targets.tolist(), "queries": self.queries.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IdentificationTrials:
        return cls(SegmentRefs.from_dict(data["queries"]), np.array(data["targets"], dtype=np.int64))


@dataclass(frozen=True, eq=False)
class VerificationTrials:
    """Verification pairs: the mean of the enrollment segments (the claim) against the query segment."""

    enrollment: SegmentRefs  # (trials, s) segments of the claimed singer
    query: SegmentRefs  # (trials, 1) the segment to verify
    enrollment_singers: np.ndarray  # (trials,) int64: claimed singer's position in GroupTrials.singers
    query_singers: np.ndarray  # (trials,) int64: the query segment's singer

    @property
    def labels(self) -> np.ndarray:
        """(trials,) bool: True for a target trial (same singer)."""
        return self.enrollment_singers == self.query_singers

    def to_dict(self) -> dict[str, Any]:
        return {
            "enrollment_singers": self.enrollment_singers.tolist(),
            "query_singers": self.query_singers.tolist(),
            "enrollment": self.enrollment.to_dict(),
            "query": self.query.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VerificationTrials:
        return cls(
            enrollment=SegmentRefs.from_dict(data["enrollment"]),
            query=SegmentRefs.from_dict(data["query"]),
            enrollment_singers=np.array(data["enrollment_singers"], dtype=np.int64),
            query_singers=np.array(data["query_singers"], dtype=np.int64),
        )


@dataclass(frozen=True, eq=False)
class GroupTrials:
    """All trials of one group (seen or unseen)."""

    singers: tuple[str, ...]  # candidate singers, sorted; trials refer to them by position
    enrollment_tracks: tuple[tuple[int, ...], ...]  # per singer: its enrollment songs (positions in track_ids)
    query_tracks: tuple[tuple[int, ...], ...]  # per singer: its query songs, disjoint from its enrollment songs
    identification: Mapping[int, IdentificationTrials]  # query segments -> trials
    one_on_one: VerificationTrials  # single segment against single segment
    centroid: Mapping[int, VerificationTrials]  # enrollment segments -> trials

    def to_dict(self) -> dict[str, Any]:
        return {
            "singers": list(self.singers),
            "enrollment_tracks": [list(t) for t in self.enrollment_tracks],
            "query_tracks": [list(t) for t in self.query_tracks],
            "identification": {str(n): t.to_dict() for n, t in self.identification.items()},
            "one_on_one": self.one_on_one.to_dict(),
            "centroid": {str(s): t.to_dict() for s, t in self.centroid.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GroupTrials:
        return cls(
            singers=tuple(data["singers"]),
            enrollment_tracks=tuple(tuple(t) for t in data["enrollment_tracks"]),
            query_tracks=tuple(tuple(t) for t in data["query_tracks"]),
            identification={int(n): IdentificationTrials.from_dict(t) for n, t in data["identification"].items()},
            one_on_one=VerificationTrials.from_dict(data["one_on_one"]),
            centroid={int(s): VerificationTrials.from_dict(t) for s, t in data["centroid"].items()},
        )


@dataclass(frozen=True, eq=False)
class Trials:
    """Every trial list of an evaluation, as drawn by :func:`make_trials`."""

    config: ProtocolConfig
    track_ids: tuple[str, ...]  # the tracks the trials use
    track_segments: tuple[int, ...]  # their segment counts, checked against the embeddings by evaluate
    groups: Mapping[str, GroupTrials]  # "seen", "unseen"; a group with < 2 eligible singers is absent
    skipped_singers: Mapping[str, str] = field(default_factory=dict)  # singer_id -> why it takes no part

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` inverts it."""
        return {
            "format": TRIALS_FORMAT,
            "version": TRIALS_VERSION,
            "config": asdict(self.config),
            "track_ids": list(self.track_ids),
            "track_segments": list(self.track_segments),
            "skipped_singers": dict(self.skipped_singers),
            "groups": {name: group.to_dict() for name, group in self.groups.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trials:
        if data.get("format") != TRIALS_FORMAT:
            raise ProtocolError(f"not a singerid trials file: format is {data.get('format')!r}, not {TRIALS_FORMAT!r}")
        if data.get("version") != TRIALS_VERSION:
            raise ProtocolError(
                f"unsupported trials version {data.get('version')!r}; this singerid reads {TRIALS_VERSION}"
            )
        unknown_groups = sorted(set(data["groups"]) - set(GROUPS))
        if unknown_groups:
            raise ProtocolError(f"unknown groups {unknown_groups} in trials; known groups: {list(GROUPS)}")
        return cls(
            config=ProtocolConfig.from_dict(data["config"]),
            track_ids=tuple(data["track_ids"]),
            track_segments=tuple(int(n) for n in data["track_segments"]),
            groups={name: GroupTrials.from_dict(group) for name, group in data["groups"].items()},
            skipped_singers=dict(data["skipped_singers"]),
        )


@dataclass
class _GroupPools:
    """Segment references of one group, singer after singer: its enrollment segments, then its query segments."""

    tracks: np.ndarray  # (refs,) position in the track table
    segments: np.ndarray  # (refs,) segment index within the track
    track_start: np.ndarray  # (refs,) first ref of the same track
    track_size: np.ndarray  # (refs,) segments of the same track
    enrollment_start: np.ndarray  # (singers,) first ref of the singer
    enrollment_size: np.ndarray  # (singers,)
    query_size: np.ndarray  # (singers,); the query refs follow the enrollment refs

    @property
    def query_start(self) -> np.ndarray:
        return self.enrollment_start + self.enrollment_size

    def refs(self, indices: np.ndarray) -> SegmentRefs:
        return SegmentRefs(self.tracks[indices], self.segments[indices])


def _tracks_by_group(tracks: Sequence[TrackEmbeddings]) -> dict[str, dict[str, list[tuple[str, int]]]]:
    """group -> singer -> sorted [(track_id, segment count)], validating the input."""
    if len(tracks) == 0:
        raise ProtocolError("no tracks given: the protocols need segment embeddings of test_seen/test_unseen tracks")
    grouped: dict[str, dict[str, list[tuple[str, int]]]] = {group: {} for group in GROUPS}
    singer_split: dict[str, str] = {}
    seen_ids: set[str] = set()
    dims: set[int] = set()
    for track in tracks:
        if track.split not in GROUP_OF_SPLIT:
            raise ProtocolError(
                f"track {track.track_id!r} has split {track.split!r}; expected one of {list(GROUP_OF_SPLIT)}"
            )
        if track.track_id in seen_ids:
            raise ProtocolError(f"track id {track.track_id!r} appears more than once")
        seen_ids.add(track.track_id)
        if singer_split.setdefault(track.singer_id, track.split) != track.split:
            raise ProtocolError(f"singer {track.singer_id!r} has tracks in both test_seen and test_unseen")
        shape = np.shape(track.segments)
        if len(shape) != 2:
            raise ProtocolError(f"track {track.track_id!r}: segments must be (n_segments, D), got shape {shape}")
        dims.add(shape[1])
        singer_tracks = grouped[GROUP_OF_SPLIT[track.split]].setdefault(track.singer_id, [])
        if shape[0] > 0:
            singer_tracks.append((track.track_id, shape[0]))
    if len(dims) > 1:
        raise ProtocolError(f"segment embeddings differ in dimension across tracks: {sorted(dims)}")
    for singers in grouped.values():
        for singer_tracks in singers.values():
            singer_tracks.sort()
    return grouped


def _sample_indices(rng: np.random.Generator, sizes: np.ndarray, n: int) -> np.ndarray:
    """(rows, n) indices, row r from range(sizes[r]): distinct where sizes[r] >= n; else all, then repeats.

    Robert Floyd's sampling algorithm, run on all rows at once.
    """
    rows = sizes.size
    distinct = np.minimum(sizes, n)
    chosen = np.zeros((rows, n), dtype=np.int64)
    for i in range(n):
        limit = sizes - distinct + i + 1  # Floyd: draw t in [0, limit); if taken, take limit - 1
        draw = rng.integers(0, limit)
        taken = (chosen[:, :i] == draw[:, None]).any(axis=1)
        floyd = np.where(taken, limit - 1, draw)
        repeat = rng.integers(0, sizes)
        chosen[:, i] = np.where(i < distinct, floyd, repeat)
    return chosen


def _other_singers(rng: np.random.Generator, singers: np.ndarray, count: int) -> np.ndarray:
    """For each singer position, a uniformly drawn different singer among ``count``."""
    others = rng.integers(0, count - 1, size=singers.size)
    return others + (others >= singers)


def _group_trials(
    singer_tracks: Mapping[str, list[tuple[str, int]]],
    config: ProtocolConfig,
    group_index: int,
    track_ids: list[str],
    track_segments: list[int],
) -> GroupTrials:
    """Draw every trial of one group, appending its tracks to the shared track table."""
    singers = tuple(sorted(singer_tracks))
    enrollment_rng = np.random.default_rng([config.seed, group_index, _STREAM_ENROLLMENT, 0])
    enrollment_tracks: list[tuple[int, ...]] = []
    query_tracks: list[tuple[int, ...]] = []
    ref_tracks: list[np.ndarray] = []
    ref_segments: list[np.ndarray] = []
    ref_track_start: list[np.ndarray] = []
    ref_track_size: list[np.ndarray] = []
    enrollment_size: list[int] = []
    query_size: list[int] = []
    ref_count = 0
    for singer in singers:
        entries = singer_tracks[singer]
        chosen = set(enrollment_rng.permutation(len(entries))[: config.enroll_songs].tolist())
        parts = (
            [e for i, e in enumerate(entries) if i in chosen],
            [e for i, e in enumerate(entries) if i not in chosen],
        )
        positions: list[tuple[int, ...]] = []
        for part in parts:
            part_positions = []
            for track_id, count in part:
                part_positions.append(len(track_ids))
                ref_tracks.append(np.full(count, len(track_ids), dtype=np.int64))
                ref_segments.append(np.arange(count, dtype=np.int64))
                ref_track_start.append(np.full(count, ref_count, dtype=np.int64))
                ref_track_size.append(np.full(count, count, dtype=np.int64))
                track_ids.append(track_id)
                track_segments.append(count)
                ref_count += count
            positions.append(tuple(part_positions))
        enrollment_tracks.append(positions[0])
        query_tracks.append(positions[1])
        enrollment_size.append(sum(count for _, count in parts[0]))
        query_size.append(sum(count for _, count in parts[1]))
    enrollment_sizes = np.array(enrollment_size, dtype=np.int64)
    query_sizes = np.array(query_size, dtype=np.int64)
    pools = _GroupPools(
        tracks=np.concatenate(ref_tracks),
        segments=np.concatenate(ref_segments),
        track_start=np.concatenate(ref_track_start),
        track_size=np.concatenate(ref_track_size),
        enrollment_start=np.concatenate(([0], np.cumsum(enrollment_sizes + query_sizes)[:-1])).astype(np.int64),
        enrollment_size=enrollment_sizes,
        query_size=query_sizes,
    )
    singer_count = len(singers)

    identification = {}
    for n in config.query_segments:
        rng = np.random.default_rng([config.seed, group_index, _STREAM_IDENTIFICATION, n])
        owners = np.repeat(np.arange(singer_count), config.queries_per_singer)
        picks = pools.query_start[owners, None] + _sample_indices(rng, pools.query_size[owners], n)
        identification[n] = IdentificationTrials(pools.refs(picks), owners)

    target_count = config.verification_trials_per_singer // 2
    target_owners = np.repeat(np.arange(singer_count), target_count)
    non_target_owners = np.repeat(np.arange(singer_count), config.verification_trials_per_singer - target_count)
    owners = np.concatenate((target_owners, non_target_owners))

    rng = np.random.default_rng([config.seed, group_index, _STREAM_ONE_ON_ONE, 0])
    all_size = pools.enrollment_size + pools.query_size
    first = pools.enrollment_start[owners] + rng.integers(0, all_size[owners])
    # Target: a segment of the same singer from another track (its refs are skipped over).
    first_target = first[: target_owners.size]
    other_track = pools.enrollment_start[target_owners] + rng.integers(
        0, all_size[target_owners] - pools.track_size[first_target]
    )
    other_track += np.where(other_track >= pools.track_start[first_target], pools.track_size[first_target], 0)
    other_singers = _other_singers(rng, non_target_owners, singer_count)
    other_singer = pools.enrollment_start[other_singers] + rng.integers(0, all_size[other_singers])
    query_owners = np.concatenate((target_owners, other_singers))
    one_on_one = VerificationTrials(
        enrollment=pools.refs(first[:, None]),
        query=pools.refs(np.concatenate((other_track, other_singer))[:, None]),
        enrollment_singers=owners,
        query_singers=query_owners,
    )

    centroid = {}
    for s in config.enroll_segments:
        rng = np.random.default_rng([config.seed, group_index, _STREAM_CENTROID, s])
        enrollment = pools.enrollment_start[owners, None] + _sample_indices(rng, pools.enrollment_size[owners], s)
        query = pools.query_start[query_owners] + rng.integers(0, pools.query_size[query_owners])
        centroid[s] = VerificationTrials(pools.refs(enrollment), pools.refs(query[:, None]), owners, query_owners)

    return GroupTrials(
        singers=singers,
        enrollment_tracks=tuple(enrollment_tracks),
        query_tracks=tuple(query_tracks),
        identification=identification,
        one_on_one=one_on_one,
        centroid=centroid,
    )


def make_trials(tracks: Sequence[TrackEmbeddings], config: ProtocolConfig | None = None) -> Trials:
    """Draw the identification and verification trials of both groups, deterministically from ``config.seed``.

    Only segment counts are read, so trials can be drawn before any model exists. The result does not depend on
    the order of ``tracks``. Singers with fewer than ``enroll_songs + 1`` tracks with segments, and the lone
    eligible singer of a group, are skipped and listed in ``Trials.skipped_singers``.
    Raises ValueError for empty or inconsistent input, or when neither group has two eligible singers.
    """
    config = config or ProtocolConfig()
    grouped = _tracks_by_group(tracks)
    needed = config.enroll_songs + 1
    skipped: dict[str, str] = {}
    track_ids: list[str] = []
    track_segments: list[int] = []
    groups: dict[str, GroupTrials] = {}
    for group_index, group in enumerate(GROUPS):
        eligible = {}
        for singer, singer_tracks in grouped[group].items():
            if len(singer_tracks) >= needed:
                eligible[singer] = singer_tracks
            else:
                skipped[singer] = f"{len(singer_tracks)} tracks with segments; {needed} needed"
        if len(eligible) < 2:
            for singer in eligible:
                skipped[singer] = f"the only eligible singer of group {group!r}"
            continue
        groups[group] = _group_trials(eligible, config, group_index, track_ids, track_segments)
    if not groups:
        counts = {group: len(grouped[group]) for group in GROUPS}
        raise ProtocolError(
            f"no group has 2 singers with >= {needed} tracks with segments (singers per group: {counts}); "
            "lower enroll_songs or add tracks"
        )
    return Trials(config, tuple(track_ids), tuple(track_segments), groups, dict(sorted(skipped.items())))


def save_trials(trials: Trials, path: str | os.PathLike[str]) -> Path:
    """Write ``trials`` as JSON, atomically (a temporary file renamed over ``path``); returns the path."""
    return write_atomically(path, json.dumps(trials.to_dict(), separators=(",", ":")))  # dumps: the fast C encoder


def load_trials(path: str | os.PathLike[str]) -> Trials:
    """Read trials written by :func:`save_trials`; ProtocolError names the file when it is not one."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Trials.from_dict(data)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as error:
        raise ProtocolError(f"{path}: not a valid singerid trials file ({type(error).__name__}: {error})") from error


class _SegmentTable:
    """The segment embeddings of the trials' tracks, stacked in ``Trials.track_ids`` order; unit rows for the
    cosine metric, raw rows for the squared Euclidean one."""

    def __init__(self, tracks: Sequence[TrackEmbeddings], trials: Trials, metric: str) -> None:
        if metric not in METRICS:
            raise ProtocolError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
        if len(tracks) == 0:
            raise ProtocolError("no tracks given: evaluate needs the segment embeddings the trials refer to")
        self.cosine = metric == "cosine"
        by_id = {track.track_id: track for track in tracks}
        blocks = []
        for track_id, expected in zip(trials.track_ids, trials.track_segments):
            track = by_id.get(track_id)
            if track is None:
                raise ProtocolError(f"the trials use track {track_id!r}, which is not among the given embeddings")
            segments = np.asarray(track.segments, dtype=np.float32)
            if segments.ndim != 2 or segments.shape[0] != expected or expected < 1:
                raise ProtocolError(
                    f"track {track_id!r} has segments of shape {segments.shape}; the trials were drawn for "
                    f"{expected} segments"
                )
            blocks.append(segments)
        if len({block.shape[1] for block in blocks}) > 1:
            raise ProtocolError("segment embeddings differ in dimension across tracks")
        self.matrix = np.concatenate(blocks)
        if self.cosine:
            self.matrix = unit_rows(self.matrix)
        self.counts = np.array(trials.track_segments, dtype=np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(self.counts)[:-1])).astype(np.int64)
        self.track_sums = np.add.reduceat(self.matrix, self.offsets, axis=0)

    def rows(self, refs: SegmentRefs) -> np.ndarray:
        if np.any((refs.tracks < 0) | (refs.tracks >= self.counts.size)):
            raise ProtocolError(f"trials refer to track positions outside [0, {self.counts.size})")
        if np.any((refs.segments < 0) | (refs.segments >= self.counts[refs.tracks])):
            raise ProtocolError("trials refer to segment indices beyond their track's segments")
        return self.offsets[refs.tracks] + refs.segments

    def _centre(self, total: np.ndarray, count: np.ndarray | int) -> np.ndarray:
        """A sum of rows as their normalised mean (cosine) or their mean (squared Euclidean)."""
        if self.cosine:
            return unit_rows(total)
        return total / np.reshape(count, (-1, 1))

    def centroids(self, refs: SegmentRefs) -> np.ndarray:
        """(trials, D): per trial, the centre of its segments."""
        rows = self.rows(refs)
        total = self.matrix[rows[:, 0]].copy()
        for column in range(1, rows.shape[1]):
            total += self.matrix[rows[:, column]]
        return self._centre(total, rows.shape[1])

    def prototypes(self, enrollment_tracks: Sequence[Sequence[int]]) -> np.ndarray:
        """(singers, D): per singer, the centre of every segment of its enrollment tracks."""
        flat = np.fromiter((t for tracks in enrollment_tracks for t in tracks), dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum([len(tracks) for tracks in enrollment_tracks])[:-1])).astype(np.int64)
        total = np.add.reduceat(self.track_sums[flat], starts, axis=0)
        return self._centre(total, np.add.reduceat(self.counts[flat], starts))

    def score_matrix(self, queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(Q, C) scores, higher for closer: cosine, or minus the squared Euclidean distance."""
        products = queries @ candidates.T
        if self.cosine:
            return products
        squares = np.einsum("ij,ij->i", queries, queries)[:, None] + np.einsum("ij,ij->i", candidates, candidates)
        return 2 * products - squares

    def pair_scores(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """(trials,) scores of row i against row i."""
        if self.cosine:
            return np.einsum("ij,ij->i", first, second).astype(np.float64)
        return -np.sum((first.astype(np.float64) - second) ** 2, axis=1)


def _verify(
    table: _SegmentTable, trials: VerificationTrials, cohort: np.ndarray | None, top_n: int
) -> tuple[np.ndarray, np.ndarray, VerificationScore]:
    enrolments, queries = table.centroids(trials.enrollment), table.centroids(trials.query)
    if cohort is None:
        scores = table.pair_scores(enrolments, queries)
    else:
        scores = normalised_pair_scores(enrolments, queries, cohort, top_n)
    labels = trials.labels
    summary = verification_result(scores, labels)
    score = VerificationScore(summary.eer, summary.min_dcf_01, summary.min_dcf_05, summary.trials, summary.targets)
    return scores, labels, score


def evaluate(
    tracks: Sequence[TrackEmbeddings],
    trials: Trials,
    metric: str = "cosine",
    cohort: np.ndarray | None = None,
    top_n: int = DEFAULT_TOP_N,
) -> EvaluationResult:
    """Score every trial of ``trials`` on the segment embeddings of ``tracks``, with cosine similarity or (for
    models trained on it) minus the squared Euclidean distance; with a ``cohort`` (unit embeddings), verification
    scores are cosines normalised by AS-norm (:mod:`singerid.scoring`), whatever ``metric``.

    ``tracks`` must hold every track the trials use, with the same segment counts (ValueError otherwise).
    """
    table = _SegmentTable(tracks, trials, metric)
    identification: dict[str, dict[int, IdentificationScore]] = {}
    one_on_one: dict[str, VerificationScore] = {}
    centroid: dict[int, dict[str, VerificationScore]] = {s: {} for s in trials.config.enroll_segments}
    raw_scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for group, group_trials in trials.groups.items():
        prototypes = table.prototypes(group_trials.enrollment_tracks)
        identification[group] = {}
        for n, queries in group_trials.identification.items():
            candidate_scores = table.score_matrix(table.centroids(queries.queries), prototypes)
            identification[group][n] = IdentificationScore(
                top1=top_k_accuracy(candidate_scores, queries.targets, 1),
                top5=top_k_accuracy(candidate_scores, queries.targets, 5),
                trials=int(queries.targets.size),
            )
        scores, labels, one_on_one[group] = _verify(table, group_trials.one_on_one, cohort, top_n)
        raw_scores[f"one_on_one/{group}"] = (scores, labels)
        for s, pairs in group_trials.centroid.items():
            scores, labels, centroid.setdefault(s, {})[group] = _verify(table, pairs, cohort, top_n)
            raw_scores[f"centroid/{s}/{group}"] = (scores, labels)
    singers = {group: len(trials.groups[group].singers) if group in trials.groups else 0 for group in GROUPS}
    singers["skipped"] = len(trials.skipped_singers)
    return EvaluationResult(
        identification=identification,
        one_on_one=one_on_one,
        centroid=centroid,
        singers=singers,
        skipped_singers=dict(trials.skipped_singers),
        verification_scores=raw_scores,
    )


def read_trial_list(path: str | Path) -> list[tuple[int, str, str]]:
    """A published-style trial list: `label path1 path2` per line (label 1 target, 0 non-target), fields
    separated by tabs when the line has any, else by whitespace, with shell-style quotes around a path that
    holds spaces (`1 "My Song.mp3" 'Other one.flac'`); blank lines and `#` comments skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise TrialListError(f"{path}: cannot read trial list ({error})") from error
    trials = []
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            fields = line.strip("\r\n").split("\t") if "\t" in line else shlex.split(line, posix=True)
        except ValueError:  # an unclosed quote, as an apostrophe in an unquoted path makes
            fields = []
        if len(fields) != 3 or fields[0].strip() not in ("0", "1"):
            raise TrialListError(
                f"{path}:{number}: expected 'label path1 path2' with label 0 or 1 (separate the fields by tabs, "
                f"or quote paths that hold spaces), got {line!r}"
            )
        trials.append((int(fields[0]), fields[1].strip(), fields[2].strip()))
    if not trials:
        raise TrialListError(f"{path}: no trials")
    return trials
