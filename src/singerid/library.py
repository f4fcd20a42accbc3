"""The singer library: enrolled singers as prototypes in a faiss inner-product index.

Each singer is one or more unit-length prototypes: the centroid of its segment embeddings (``prototypes=1``,
as in the paper), or ``k`` spherical k-means centres of them, the paper's own future work ("a single centroid
may not be enough" for a singer with several styles). Every embedding is L2-normalised on the way in, so
inner products are cosine similarities in [-1, 1]; a singer's score is the best over its prototypes.

The index is ``faiss.index_factory(dim, index_factory, METRIC_INNER_PRODUCT)``. The default ``"auto"`` is exact
(``"Flat"``) up to ``EXACT_LIMIT`` prototypes and above it an inverted file of about 4 sqrt(rows) lists with 8-bit
codes, trained on the enrolled prototypes when the index is built, of which sqrt(lists) are probed, its candidates
re-ranked by exact inner product; a library that grows past a size boundary is rebuilt with the index its size
calls for. Any other factory string is used as given.

Open-set use: with a ``threshold``, ``identify`` answers ``[]`` when even the best singer scores below it, and
``verify`` accepts at or above it. ``calibrate_threshold`` sets it from target and non-target trial scores.

On disk, a library is a folder: ``library.json`` (format, version, dim, settings, the caller's model metadata
and the singers in order), ``vectors.npy`` (all prototypes, float32, in the same order) and, when the index is
not exact, ``index-<token>.faiss`` (the trained index, named in ``library.json``).
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import secrets
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from singerid.errors import SingerIdError
from singerid.fileio import atomic_path, write_atomically
from singerid.metrics import eer_threshold
from singerid.scoring import unit_rows

try:
    import faiss
except ImportError as missing:
    raise ImportError("the singer library needs faiss: pip install singerid[library]") from missing

LIBRARY_FORMAT = "singerid-library"
LIBRARY_VERSION = 1
METADATA_FILE = "library.json"
VECTORS_FILE = "vectors.npy"
KMEANS_ITERATIONS = 20
# index_factory "auto": exact search up to this many prototypes; above it an inverted file (IVF) of 8-bit scalar
# codes (SQ8, a quarter of the float32 bytes to scan) whose candidates are re-ranked by exact inner product (RFlat),
# trained when the index is built. Measured with benchmarks/bench_library.py (docs/BENCHMARKS.md): on vectors with
# the structure of singer embeddings the lists are unequal (the largest about 5 times the mean), recall@5 follows
# the fraction of lists probed: sqrt(lists) probed gives recall@5 0.983 at 10^6 (64 of 4,096 lists, p50 10.5 ms on
# one core) and 0.977 at 10^5 (32 of 1,024, 1.7 ms).
EXACT_LIMIT = 50_000
LISTS_PER_ROOT = 4  # about 4 sqrt(rows) lists (faiss's guidance: 4 to 16 sqrt(n))
PROBES_PER_ROOT = 1.0  # sqrt(lists) lists probed per query
REFINE_FACTOR = 4  # exact re-ranking of 4 times the rows asked for
TRAINING_POINTS_PER_LIST = 40  # k-means of the lists on at most this many prototypes per list (faiss asks 39)
ADD_BLOCK = 65_536  # singers added to a new index at a time
REBUILD_DEAD_FRACTION = 0.1  # rows of replaced or removed singers left in the index before it is rebuilt


class LibraryError(SingerIdError, ValueError):
    """A library folder that cannot be opened, or a request it cannot answer; the message says why."""


class UnknownSingerError(LibraryError, KeyError):
    """A singer id that is not enrolled; the message suggests close ones."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


@dataclass(frozen=True)
class Match:
    """One candidate singer; ``score`` is a cosine similarity in [-1, 1]."""

    singer_id: str
    score: float


@dataclass(frozen=True)
class Verification:
    """A verification decision: accepted when ``score >= threshold``."""

    singer_id: str
    score: float
    accepted: bool
    threshold: float


def singer_key(singer_id: str) -> str:
    """Singer ids are compared in Unicode NFC: 'Beyoncé' typed on one system equals 'Beyoncé' read from a
    macOS (NFD) folder name."""
    return unicodedata.normalize("NFC", singer_id)


def track_scores(
    tracks: Mapping[str, Sequence[np.ndarray]], max_queries: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Open-set calibration scores from enrollment data alone, at the level `identify` works on (a whole file).

    ``tracks``: per singer, the (n, dim) segment embeddings of each of its tracks; a track's embedding is the
    unit mean of its segments. Target scores: each track of a singer with two or more tracks against the
    centroid of the singer's other tracks (leave one track out). Best-impostor scores: each track (at most
    ``max_queries``, seeded) against the closest centroid of all other singers, which is what an unknown
    singer's best match looks like. Returns (targets, best_impostors); either may be empty."""
    per_singer = [unit_rows(np.stack([t.mean(axis=0) for t in singer_tracks])) for singer_tracks in tracks.values()]
    per_singer = [means for means in per_singer if len(means)]
    targets = [np.zeros(0)]
    for means in per_singer:
        if len(means) >= 2:
            without_each = unit_rows(means.sum(axis=0, keepdims=True) - means)  # row i: centroid without track i
            targets.append(np.sum(means * without_each, axis=1))
    if len(per_singer) < 2:
        return np.concatenate(targets), np.zeros(0)
    centroids = unit_rows(np.stack([means.mean(axis=0) for means in per_singer]))
    queries = np.concatenate(per_singer)
    owners = np.repeat(np.arange(len(per_singer)), [len(means) for means in per_singer])
    chosen = np.random.default_rng(seed).permutation(len(queries))[:max_queries]
    scores = queries[chosen] @ centroids.T
    scores[np.arange(len(chosen)), owners[chosen]] = -np.inf
    return np.concatenate(targets), scores.max(axis=1)


def _unit_rows(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    """``vectors`` as a float32 (n, dim) array of unit rows; (dim,) counts as one row."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != dim or array.shape[0] == 0:
        raise ValueError(f"{what} must have shape (n, {dim}) or ({dim},) with n >= 1, got {np.shape(vectors)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what} must be finite (found NaN or infinity)")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{what} contain an all-zero vector, which has no direction")
    return np.ascontiguousarray(array / norms, dtype=np.float32)


def _kmeans_plus_plus(points: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding on unit vectors (squared distance 2 - 2 cos): spread-out starting centres."""
    chosen = [int(rng.integers(len(points)))]
    nearest = np.maximum(2.0 - 2.0 * points @ points[chosen[0]], 0.0)
    for _ in range(count - 1):
        total = float(nearest.sum())
        if total <= 0.0:
            chosen.append(int(rng.integers(len(points))))
        else:
            chosen.append(int(rng.choice(len(points), p=nearest / total)))
        nearest = np.minimum(nearest, np.maximum(2.0 - 2.0 * points @ points[chosen[-1]], 0.0))
    return points[chosen]


@contextlib.contextmanager
def _single_threaded() -> Iterator[None]:
    """Run faiss on one thread in this block: OpenMP start-up dwarfs a tiny per-singer k-means, and on a busy
    machine its spinning threads made each one take ~100 ms instead of <1 ms. (The OpenMP thread count is
    per calling thread, so other threads are unaffected.)"""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


class SingerLibrary:
    """Enrolled singers, searchable by cosine similarity; thread-safe."""

    def __init__(
        self,
        dim: int,
        prototypes: int = 1,
        threshold: float | None = None,
        *,
        index_factory: str = "auto",
        index_parameters: str = "",
        model_info: Mapping[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        """A library of ``dim``-dimensional embeddings.

        ``prototypes``: per singer (1 = the centroid). ``threshold``: for open-set rejection and verification.
        ``index_factory`` / ``index_parameters``: the faiss index and its search settings; "auto" (the default)
        is exact ("Flat") up to EXACT_LIMIT prototypes and an inverted file above ("IVF4096,SQ8,RFlat", nprobe 64
        at 10^6); any factory string works ("HNSW32" with "efSearch=128", ...). ``model_info``: free JSON metadata
        saved with the library (the model's checkpoint and digest). ``seed``: seeds the k-means of every singer.
        """
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if not isinstance(prototypes, int) or prototypes <= 0:
            raise ValueError(f"prototypes must be a positive integer, got {prototypes!r}")
        self.dim = dim
        self.prototypes = prototypes
        self.threshold = None if threshold is None else float(threshold)
        self.index_factory = index_factory
        self.index_parameters = index_parameters
        self.model_info = dict(model_info or {})
        try:
            json.dumps(self.model_info)
        except (TypeError, ValueError) as error:
            raise ValueError(f"model_info must be JSON-serialisable: {error}") from error
        self.seed = seed
        self._vectors: dict[str, np.ndarray] = {}
        self._totals: dict[str, tuple[int, float]] = {}  # per singer: segments enrolled, norm of their sum
        self._lock = threading.RLock()
        # The index holds the prototypes of _indexed_singers; _row_owner maps each index row to a position there.
        self._index: Any = None
        self._indexed_singers: list[str] = []
        self._position: dict[str, int] = {}  # singer -> its position in _indexed_singers
        self._row_owner = np.zeros(0, dtype=np.int64)  # -1: a row of a replaced or removed singer
        self._pending: list[str] = []
        self.built_with = ("", "")  # the index factory and parameters in use (auto resolved)

    @property
    def singers(self) -> list[str]:
        """Enrolled singer ids, in enrolment order."""
        with self._lock:
            return list(self._vectors)

    def __len__(self) -> int:
        return len(self._vectors)

    def __contains__(self, singer_id: object) -> bool:
        return isinstance(singer_id, str) and singer_key(singer_id) in self._vectors

    def prototypes_of(self, singer_id: str) -> np.ndarray:
        """A copy of the singer's unit prototypes, shape (k, dim)."""
        return self._prototypes(singer_id).copy()

    # -- enrolment -------------------------------------------------------------------------------------------

    def enroll(self, singer_id: str, embeddings: np.ndarray, *, replace: bool = False) -> None:
        """Enroll a singer from its (n, dim) segment embeddings; for a singer enrolled already, the segments are
        added to what it has (its centroid is that of all its segments), unless `replace`."""
        if not isinstance(singer_id, str) or not singer_id:
            raise LibraryError(f"singer_id must be a non-empty string, got {singer_id!r}")
        singer_id = singer_key(singer_id)
        segments = _unit_rows(embeddings, self.dim, f"embeddings of {singer_id!r}")
        with self._lock:
            known = singer_id in self._vectors and not replace
            count, norm = self._totals[singer_id] if known else (0, 0.0)
            total = segments.sum(axis=0)  # the running sum of unit segments: the centroid's direction
            if known and self.prototypes == 1:
                total = total + self._vectors[singer_id][0] * norm
                prototypes = self._fit_prototypes(total[None, :])
            elif known:  # k-means again, the old prototypes standing for the segments they summed up
                old = np.repeat(self._vectors[singer_id], max(1, min(count // self.prototypes, 100)), axis=0)
                prototypes = self._fit_prototypes(np.concatenate([old, segments]))
            else:
                prototypes = self._fit_prototypes(segments)
            self._totals[singer_id] = (count + len(segments), float(np.linalg.norm(total)))
            indexed = singer_id in self._vectors and self._index is not None and singer_id not in self._pending
            self._vectors[singer_id] = prototypes
            if indexed:
                self._retire(singer_id)
            if self._index is not None and singer_id not in self._pending:
                self._pending.append(singer_id)

    @classmethod
    def merged(cls, parts: Sequence[SingerLibrary]) -> SingerLibrary:
        """One library of the singers of `parts` (libraries enrolled on disjoint singers by the same model, such as
        `enroll --shard K/N`). Its threshold is the mean of the parts' thresholds weighted by their singers (each
        part calibrated on its own singers)."""
        if not parts:
            raise LibraryError("no library to merge")
        first = parts[0]
        for part in parts[1:]:
            if (part.dim, part.prototypes) != (first.dim, first.prototypes):
                raise LibraryError(
                    f"cannot merge a library of {part.dim}-d embeddings x {part.prototypes} prototypes with one of "
                    f"{first.dim} x {first.prototypes}"
                )
            if part.model_info.get("digest") != first.model_info.get("digest"):
                raise LibraryError("the libraries were made with different models; their embeddings cannot mix")
        merged = cls(
            first.dim,
            first.prototypes,
            index_factory=first.index_factory,
            index_parameters=first.index_parameters,
            model_info=first.model_info,
            seed=first.seed,
        )
        thresholds = [(part.threshold, len(part)) for part in parts if part.threshold is not None]
        if thresholds:
            merged.threshold = sum(t * n for t, n in thresholds) / max(sum(n for _, n in thresholds), 1)
        for part in parts:
            for singer in part.singers:
                if singer in merged._vectors:
                    raise LibraryError(f"singer {singer!r} is in two of the libraries; shards hold disjoint singers")
                merged._vectors[singer] = part._vectors[singer]
                merged._totals[singer] = part._totals[singer]
        return merged

    def remove(self, singer_id: str) -> None:
        """Remove an enrolled singer; KeyError if it is not enrolled."""
        with self._lock:
            self._prototypes(singer_id)
            key = singer_key(singer_id)
            if self._index is not None and key not in self._pending:
                self._retire(key)
            if key in self._pending:
                self._pending.remove(key)
            del self._vectors[key]
            del self._totals[key]

    def _fit_prototypes(self, segments: np.ndarray) -> np.ndarray:
        """The centroid (k = 1), the segments themselves (n <= k), or k spherical k-means centres."""
        if self.prototypes == 1 or len(segments) <= self.prototypes:
            centres = segments.mean(axis=0, keepdims=True) if self.prototypes == 1 else segments
        else:
            rng = np.random.default_rng(self.seed)
            kmeans = faiss.Kmeans(
                self.dim,
                self.prototypes,
                niter=KMEANS_ITERATIONS,
                seed=self.seed,
                spherical=True,
                min_points_per_centroid=1,
                verbose=False,
            )
            with _single_threaded():
                kmeans.train(segments, init_centroids=_kmeans_plus_plus(segments, self.prototypes, rng))
            centres = kmeans.centroids
        norms = np.linalg.norm(centres, axis=1, keepdims=True)
        if (norms < 1e-6).any():
            raise LibraryError("the segment embeddings cancel out (their centroid is zero); cannot enroll")
        return np.ascontiguousarray(centres / norms, dtype=np.float32)

    def _prototypes(self, singer_id: str) -> np.ndarray:
        try:
            return self._vectors[singer_key(singer_id)]
        except KeyError:
            close = difflib.get_close_matches(singer_key(singer_id), list(self._vectors), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            message = f"singer {singer_id!r} is not enrolled in this library ({len(self)} singers){hint}"
            raise UnknownSingerError(message) from None

    # -- the index -------------------------------------------------------------------------------------------

    def _retire(self, singer_id: str) -> None:
        """Marks an indexed singer's rows dead (graph indexes cannot remove rows); a rebuild clears them later."""
        position = self._position[singer_id]
        self._row_owner[self._row_owner == position] = -1

    def _sync_index(self) -> None:
        """Bring the index up to date: append newly enrolled singers, or rebuild when too many rows are dead."""
        dead = int(np.sum(self._row_owner < 0))
        too_dead = dead > REBUILD_DEAD_FRACTION * max(len(self._row_owner), 1)
        outgrown = bool(self._pending) and self.resolved_index(self._rows()) != self.built_with
        if self._index is None or (self._pending and not self._index.is_trained) or too_dead or outgrown:
            self._build_index()
        elif self._pending:
            new = [singer for singer in self._pending if singer not in self._position]
            for singer in new:
                self._position[singer] = len(self._indexed_singers)
                self._indexed_singers.append(singer)
            self._add_rows(self._stack(self._pending), self._pending)
            self._pending = []

    def _rows(self) -> int:
        """Prototypes enrolled, all singers together."""
        return sum(len(vectors) for vectors in self._vectors.values())

    def resolved_index(self, rows: int) -> tuple[str, str]:
        """The faiss factory and parameters for `rows` prototypes: as given, or "auto" resolved by size."""
        if self.index_factory != "auto":
            return self.index_factory, self.index_parameters
        if rows <= EXACT_LIMIT:
            return "Flat", ""
        lists = 2 ** round(math.log2(LISTS_PER_ROOT * math.sqrt(rows)))
        probes = min(lists, max(1, round(PROBES_PER_ROOT * math.sqrt(lists))))
        return f"IVF{lists},SQ8,RFlat", f"nprobe={probes},k_factor_rf={REFINE_FACTOR}"

    def _build_index(self, index: Any = None, built_with: tuple[str, str] | None = None) -> None:
        """A new index of every singer's prototypes (or `index`, read from disk, which holds exactly them and was
        built as `built_with` says, which an older "auto" may have resolved otherwise)."""
        self._indexed_singers = list(self._vectors)
        self._position = {singer: i for i, singer in enumerate(self._indexed_singers)}
        self._pending = []
        self._row_owner = np.zeros(0, dtype=np.int64)
        rows = self._rows()
        factory, parameters = self.resolved_index(rows)
        self.built_with = built_with or (factory, parameters)
        if index is not None:
            self._index = index
            self._add_rows(None, self._indexed_singers)
            return
        self._index = faiss.index_factory(self.dim, factory, faiss.METRIC_INNER_PRODUCT)
        if parameters:
            faiss.ParameterSpace().set_index_parameters(self._index, parameters)
        if not self._index.is_trained and rows:
            lists = getattr(faiss.extract_index_ivf(self._index), "nlist", 0) if "IVF" in factory else 0
            sample = rows if not lists else min(rows, lists * TRAINING_POINTS_PER_LIST)
            chosen = np.sort(np.random.default_rng(self.seed).choice(rows, sample, replace=False))
            try:
                self._index.train(self._rows_at(chosen))
            except RuntimeError as error:
                raise LibraryError(f"cannot train index {factory!r} on {rows} prototypes: {error}") from error
        for start in range(0, len(self._indexed_singers), ADD_BLOCK):  # in blocks: no second copy of every row
            block = self._indexed_singers[start : start + ADD_BLOCK]
            self._add_rows(self._stack(block), block)

    def _rows_at(self, rows: np.ndarray) -> np.ndarray:
        """The prototypes at these positions (sorted) of all singers' rows stacked in index order."""
        counts = np.array([len(self._vectors[singer]) for singer in self._indexed_singers])
        starts = np.cumsum(counts) - counts
        owners = np.searchsorted(starts, rows, side="right") - 1
        singers = self._indexed_singers
        return np.stack([self._vectors[singers[o]][r - starts[o]] for o, r in zip(owners.tolist(), rows.tolist())])

    def _stack(self, singer_ids: list[str]) -> np.ndarray:
        if not singer_ids:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([self._vectors[singer] for singer in singer_ids])

    def _add_rows(self, vectors: np.ndarray | None, singer_ids: list[str]) -> None:
        """Adds the singers' prototypes to the index (None: they are in it already) and records their rows."""
        counts = [len(self._vectors[singer]) for singer in singer_ids]
        owners = np.repeat(np.array([self._position[s] for s in singer_ids], dtype=np.int64), counts)
        if vectors is not None and len(vectors) and self._index.is_trained:
            self._index.add(vectors)
        self._row_owner = np.concatenate([self._row_owner, owners])

    def _search_singers(self, queries: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best ``top_k`` distinct singers per query: (positions in _indexed_singers, scores); -1 where none.

        A singer has at most ``prototypes`` rows, so the best ``top_k * prototypes`` rows hold at least
        ``top_k`` distinct singers; among each singer's rows the first (best) one gives its score.
        """
        rows_wanted = min(self._index.ntotal, top_k * self.prototypes + int(np.sum(self._row_owner < 0)))
        if rows_wanted == 0:
            empty = np.full((len(queries), top_k), -1, dtype=np.int64)
            return empty, np.full((len(queries), top_k), -np.inf, dtype=np.float32)
        scores, rows = self._index.search(queries, rows_wanted)
        owners = np.where(rows >= 0, self._row_owner[np.maximum(rows, 0)], -1)
        by_owner = np.argsort(owners, axis=1, kind="stable")
        sorted_owners = np.take_along_axis(owners, by_owner, axis=1)
        first_of_owner = np.ones_like(sorted_owners, dtype=bool)
        first_of_owner[:, 1:] = sorted_owners[:, 1:] != sorted_owners[:, :-1]
        keep = np.zeros_like(first_of_owner)
        np.put_along_axis(keep, by_owner, first_of_owner & (sorted_owners >= 0), axis=1)
        kept_scores = np.where(keep, scores, -np.inf)
        best = np.argsort(-kept_scores, axis=1, kind="stable")[:, :top_k]
        best_scores = np.take_along_axis(kept_scores, best, axis=1)
        best_owners = np.where(np.isfinite(best_scores), np.take_along_axis(owners, best, axis=1), -1)
        return best_owners, np.clip(best_scores, -1.0, 1.0)

    def _matches(self, owners: np.ndarray, scores: np.ndarray) -> list[Match]:
        return [
            Match(self._indexed_singers[owner], float(score))
            for owner, score in zip(owners.tolist(), scores.tolist())
            if owner >= 0
        ]

    # -- queries ---------------------------------------------------------------------------------------------

    def identify(self, embedding: np.ndarray, top_k: int = 5, *, open_set: bool = True) -> list[Match]:
        """The ``top_k`` closest singers to one query, best first.

        ``embedding``: (dim,), or (n, dim) segment embeddings of one query, averaged to their unit centroid.
        With a threshold and ``open_set``, a query whose best score is below the threshold gets ``[]``
        (an unknown singer); ``open_set=False`` returns the candidates regardless.
        """
        query = _unit_rows(embedding, self.dim, "embedding")
        if len(query) > 1:
            query = _unit_rows(query.mean(axis=0), self.dim, "the query centroid")
        return self.identify_batch(query, top_k, open_set=open_set)[0]

    def identify_batch(self, embeddings: np.ndarray, top_k: int = 5, *, open_set: bool = True) -> list[list[Match]]:
        """``identify`` for each row of (m, dim) ``embeddings``, in one batched search."""
        if not isinstance(top_k, int) or top_k <= 0:
            raise LibraryError(f"top_k must be a positive integer, got {top_k!r}")
        queries = _unit_rows(embeddings, self.dim, "embeddings")
        with self._lock:
            self._sync_index()
            owners, scores = self._search_singers(queries, top_k)
            results = [self._matches(owner_row, score_row) for owner_row, score_row in zip(owners, scores)]
        if open_set and self.threshold is not None:
            results = [matches if matches and matches[0].score >= self.threshold else [] for matches in results]
        return results

    def verify(self, singer_id: str, embedding: np.ndarray, threshold: float | None = None) -> Verification:
        """Is ``embedding`` (dim,) this singer? Score = best cosine over its prototypes, accepted at >= threshold.

        ``threshold`` overrides the library's; one of the two must be set.
        """
        with self._lock:
            prototypes = self._prototypes(singer_id)
        threshold = self.threshold if threshold is None else float(threshold)
        if threshold is None:
            raise LibraryError("no verification threshold: pass one, or set it with calibrate_threshold()")
        query = _unit_rows(embedding, self.dim, "embedding")
        if len(query) > 1:
            raise ValueError(f"verify takes one embedding of shape ({self.dim},), got {np.shape(embedding)}")
        score = float(np.clip((prototypes @ query[0]).max(), -1.0, 1.0))
        return Verification(singer_key(singer_id), score, score >= threshold, threshold)

    def similar(self, singer_id: str, top_k: int = 5) -> list[Match]:
        """Other singers closest to this one, best first; score = best cosine between their prototypes."""
        if not isinstance(top_k, int) or top_k <= 0:
            raise LibraryError(f"top_k must be a positive integer, got {top_k!r}")
        with self._lock:
            self._sync_index()
            prototypes = self._prototypes(singer_id)
            owners, scores = self._search_singers(prototypes, top_k + 1)
            candidates = self._matches(owners.ravel(), scores.ravel())
        best: dict[str, float] = {}
        own = singer_key(singer_id)
        for match in candidates:
            if match.singer_id != own and match.score > best.get(match.singer_id, -math.inf):
                best[match.singer_id] = match.score
        ranked = sorted(best.items(), key=lambda item: -item[1])[:top_k]
        return [Match(singer, score) for singer, score in ranked]

    # -- threshold -------------------------------------------------------------------------------------------

    def calibrate_threshold(
        self,
        target_scores: Iterable[float],
        nontarget_scores: Iterable[float],
        false_accept_rate: float | None = 0.01,
    ) -> float:
        """Set and return the lowest threshold whose false-accept rate on ``nontarget_scores`` is at most
        ``false_accept_rate``, moved up to halfway to the next target score (same empirical rates, more margin);
        with ``false_accept_rate=None``, the threshold at the equal error rate of the two score sets.
        """
        targets = np.asarray(list(target_scores), dtype=np.float64)
        nontargets = np.asarray(list(nontarget_scores), dtype=np.float64)
        for name, scores in (("target_scores", targets), ("nontarget_scores", nontargets)):
            if scores.ndim != 1 or scores.size == 0 or not np.isfinite(scores).all():
                raise ValueError(f"{name} must be a non-empty list of finite numbers")
        if false_accept_rate is None:
            labels = np.concatenate([np.ones(targets.size, bool), np.zeros(nontargets.size, bool)])
            self.threshold = eer_threshold(np.concatenate([targets, nontargets]), labels)
            return self.threshold
        if not 0.0 <= false_accept_rate < 1.0:
            raise ValueError(f"false_accept_rate must lie in [0, 1), got {false_accept_rate}")
        allowed = int(math.floor(false_accept_rate * nontargets.size + 1e-9))
        highest_rejected = float(np.sort(nontargets)[::-1][allowed])
        above = targets[targets > highest_rejected]
        if above.size:
            threshold = (highest_rejected + float(above.min())) / 2.0
        else:
            threshold = float(np.nextafter(highest_rejected, math.inf))
        self.threshold = threshold
        return threshold

    # -- files -----------------------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write ``library.json`` and ``vectors.npy`` into ``folder``, each atomically (temp file + rename), and the
        trained index when it is not exact (an inverted file of 10^6 singers takes a while to train). The index goes
        to a new ``index-<token>.faiss`` before ``library.json`` names it, so a crash leaves the old pair intact."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            singers = list(self._vectors)
            parts = [self._vectors[singer] for singer in singers]  # enroll replaces arrays, never changes them
            rows = sum(len(part) for part in parts)
            factory, parameters = self.resolved_index(rows)
            index_file = None
            if factory != "Flat" and rows:  # worth saving: building it costs time
                self._sync_index()
                if (self._row_owner < 0).any() or self._indexed_singers != singers:
                    self._build_index()  # the file must hold exactly these rows, in this order
                factory, parameters = self.built_with  # what the file holds: an older rule's index until rebuilt
                index_file = f"index-{secrets.token_hex(4)}.faiss"
                with atomic_path(folder / index_file, durable=True) as temporary:
                    faiss.write_index(self._index, str(temporary))
            totals = [self._totals[singer] for singer in singers]
            metadata = {
                "format": LIBRARY_FORMAT,
                "version": LIBRARY_VERSION,
                "dim": self.dim,
                "prototypes": self.prototypes,
                "threshold": self.threshold,
                "index_factory": self.index_factory,
                "index_parameters": self.index_parameters,
                "seed": self.seed,
                "model": self.model_info,
                "index": {"factory": factory, "parameters": parameters, "file": index_file},
                "singers": [
                    {"id": singer, "rows": len(self._vectors[singer]), "segments": count, "norm": norm}
                    for singer, (count, norm) in zip(singers, totals)
                ],
            }
        with atomic_path(folder / VECTORS_FILE, durable=True) as temporary:  # written part by part, not stacked
            vectors = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=(rows, self.dim))
            start = 0
            for part in parts:
                vectors[start : start + len(part)] = part
                start += len(part)
            vectors.flush()
            del vectors
        write_atomically(
            folder / METADATA_FILE, json.dumps(metadata, indent=1, ensure_ascii=False) + "\n", durable=True
        )
        for old in folder.glob("index*.faiss"):  # earlier saves' indexes, now named by nobody
            if old.name != index_file:
                old.unlink(missing_ok=True)

    @classmethod
    def open(cls, folder: str | Path, dim: int | None = None) -> SingerLibrary:
        """Load a saved library; ``dim``, if given, must match. LibraryError names the file and the reason."""
        folder = Path(folder)
        metadata_path = folder / METADATA_FILE
        vectors_path = folder / VECTORS_FILE
        try:
            metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LibraryError(f"{metadata_path}: not found; {folder} is not a singer library") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise LibraryError(f"{metadata_path}: unreadable ({error})") from error
        _check_metadata(metadata, metadata_path, dim)
        try:
            vectors = np.load(vectors_path, allow_pickle=False)
        except FileNotFoundError:
            raise LibraryError(f"{vectors_path}: not found (the library's vectors are missing)") from None
        except (OSError, ValueError) as error:
            raise LibraryError(f"{vectors_path}: unreadable ({error})") from error
        rows = [entry["rows"] for entry in metadata["singers"]]
        expected_shape = (sum(rows), metadata["dim"])
        if vectors.dtype != np.float32 or vectors.shape != expected_shape:
            raise LibraryError(
                f"{vectors_path}: holds {vectors.dtype} {vectors.shape}, but {METADATA_FILE} needs float32 "
                f"{expected_shape}; the two files do not belong together"
            )
        library = cls(
            metadata["dim"],
            metadata["prototypes"],
            metadata["threshold"],
            index_factory=metadata["index_factory"],
            index_parameters=metadata["index_parameters"],
            model_info=metadata["model"],
            seed=metadata["seed"],
        )
        offsets = np.cumsum([0, *rows])
        for entry, start, stop in zip(metadata["singers"], offsets[:-1], offsets[1:]):
            library._vectors[entry["id"]] = np.ascontiguousarray(vectors[start:stop])
            # libraries written before the totals were kept: each prototype stands for one segment
            library._totals[entry["id"]] = (entry.get("segments", entry["rows"]), entry.get("norm", 1.0))
        saved_index = metadata.get("index") or {}
        index_file = saved_index.get("file")
        if index_file and (folder / index_file).is_file():
            try:
                index = faiss.read_index(str(folder / index_file))
            except RuntimeError as error:
                raise LibraryError(f"{folder / index_file}: unreadable index ({error})") from error
            if index.ntotal != len(vectors):
                raise LibraryError(f"{folder / index_file}: holds {index.ntotal} rows, the library {len(vectors)}")
            built_with = (saved_index.get("factory", ""), saved_index.get("parameters", ""))
            if built_with[1]:  # faiss saves nprobe and k_factor_rf, not every search setting
                faiss.ParameterSpace().set_index_parameters(index, built_with[1])
            library._build_index(index, built_with)  # an older rule's index is rebuilt at the next enrolment
        return library


def _check_metadata(metadata: Any, path: Path, dim: int | None) -> None:
    """Raise LibraryError unless ``metadata`` is a version-1 library description (of ``dim``, if given)."""
    if not isinstance(metadata, dict) or metadata.get("format") != LIBRARY_FORMAT:
        raise LibraryError(f"{path}: not a singer library (format is not {LIBRARY_FORMAT!r})")
    version = metadata.get("version")
    if version != LIBRARY_VERSION:
        hint = " (written by a newer singerid; upgrade)" if isinstance(version, int) and version > 1 else ""
        raise LibraryError(f"{path}: unsupported library version {version!r}; this singerid reads 1{hint}")
    problems = []
    for key in ("dim", "prototypes"):
        if not isinstance(metadata.get(key), int) or isinstance(metadata.get(key), bool) or metadata[key] <= 0:
            problems.append(f"{key} must be a positive integer")
    if metadata.get("threshold") is not None and not isinstance(metadata["threshold"], (int, float)):
        problems.append("threshold must be a number or null")
    if not all(isinstance(metadata.get(key), str) for key in ("index_factory", "index_parameters")):
        problems.append("index_factory and index_parameters must be strings")
    if not isinstance(metadata.get("seed"), int):
        problems.append("seed must be an integer")
    if not isinstance(metadata.get("model"), dict):
        problems.append("model must be an object")
    singers = metadata.get("singers")
    if not isinstance(singers, list) or not all(
        isinstance(entry, dict)
        and isinstance(entry.get("id"), str)
        and entry["id"]
        and isinstance(entry.get("rows"), int)
        and entry["rows"] > 0
        for entry in singers
    ):
        problems.append("singers must be a list of {id: non-empty string, rows: positive integer}")
    elif len({entry["id"] for entry in singers}) != len(singers):
        problems.append("singer ids must be unique")
    if problems:
        raise LibraryError(f"{path}: invalid library description: {'; '.join(problems)}")
    if dim is not None and metadata["dim"] != dim:
        raise LibraryError(f"{path}: library embeddings have dim {metadata['dim']}, expected {dim}")
