"""The singer library at catalog scale: single queries on one thread through `SingerLibrary.identify` against 10^4,
10^5 and 10^6 singers (and 10^6 x 3 prototypes), 512-d, with the index `index_factory="auto"` picks (exact up to
EXACT_LIMIT prototypes, an inverted file above), against exact search of the same vectors.

The vectors have the structure of singer embeddings, not uniform noise: singer centres share a common direction
(their mean pairwise cosine) and differ along few directions (a power-law spectrum, as trained embeddings do), and
each query sits around its singer's centre at the within-singer spread of real segment embeddings. The spreads are
measured on a trained model's embeddings of a store when one is given (`SINGERID_BENCH_STORE` and
`SINGERID_BENCH_CHECKPOINT`), else they default to those measured on the demo's A-PNL model and store on
2026-11-30 (a segment's cosine to its singer's centre 0.935; cosines between singer centres 0.62 +- 0.25).

Records p50 and p99 latency, recall@1 and recall@5 against exact search, build time, memory and file size. Goals
at 10^6 singers on one core: p50 < 5 ms, recall@5 >= 0.98. `SINGERID_BENCH_LIBRARY_SIZES` (e.g. "10000,100000")
limits the sizes.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import faiss
import numpy as np
import pytest

pytestmark = pytest.mark.bench

DIM = 512
QUERIES = 300
SIZES = [int(n) for n in os.environ.get("SINGERID_BENCH_LIBRARY_SIZES", "10000,100000,1000000").split(",")]


def structure() -> tuple[float, float, float]:
    """(within-singer cosine of a segment to its singer's centre, mean and spread of between-centre cosines)."""
    store, checkpoint = os.environ.get("SINGERID_BENCH_STORE"), os.environ.get("SINGERID_BENCH_CHECKPOINT")
    if not (store and checkpoint):
        return 0.935, 0.62, 0.25
    from singerid.encoder import SingerEncoder
    from singerid.store import FeatureStore

    encoder, features = SingerEncoder.load(checkpoint, "cpu"), FeatureStore(store)
    by_singer: dict[str, list[np.ndarray]] = {}
    for i, segments in encoder.embed_many(range(min(len(features), 3000)), features.frames):
        by_singer.setdefault(features.tracks[i].singer_id, []).append(segments)
    centres, within = [], []
    for parts in by_singer.values():
        segments = np.concatenate(parts)
        centre = segments.mean(0) / np.linalg.norm(segments.mean(0))
        centres.append(centre)
        within += (segments @ centre).tolist()
    between = np.stack(centres) @ np.stack(centres).T
    off = between[~np.eye(len(centres), dtype=bool)]
    return float(np.mean(within)), float(off.mean()), float(off.std())


def singer_vectors(count: int, prototypes: int, rng: np.random.Generator, between: tuple[float, float]):
    """Unit prototypes (count * prototypes, DIM) of `count` singers, and each singer's centre: centres share a
    common direction (weight drawn for the mean between-centre cosine) and vary along a power-law spectrum."""
    mean, spread = between
    common = rng.standard_normal(DIM).astype(np.float32)
    common /= np.linalg.norm(common)
    weight = np.sqrt(np.clip(mean + spread * rng.standard_normal(count), 0.0, 0.95)).astype(np.float32)[:, None]
    basis, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
    scales = np.sqrt(np.arange(1, DIM + 1) ** -1.0).astype(np.float32)
    own = np.empty((count, DIM), np.float32)
    for start in range(0, count, 100_000):  # in blocks: 10^6 x 512 at once would double the memory
        block = rng.standard_normal((min(100_000, count - start), DIM)).astype(np.float32) * scales
        own[start : start + len(block)] = block @ basis.T.astype(np.float32)
    own /= np.linalg.norm(own, axis=1, keepdims=True)
    centres = weight * common + np.sqrt(1 - weight**2) * own
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    if prototypes == 1:
        return centres, centres
    rows = np.empty((count * prototypes, DIM), np.float32)
    for start in range(0, count, 100_000):  # in blocks and in float32: 3 x 10^6 x 512 doubles would be 12 GB
        chunk = centres[start : start + 100_000, None, :]
        jitter = rng.standard_normal((len(chunk), prototypes, DIM), dtype=np.float32)
        block = (chunk + (0.25 / np.sqrt(DIM)) * jitter).reshape(-1, DIM)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        rows[start * prototypes : start * prototypes + len(block)] = block
    return rows, centres


def queries_around(centres: np.ndarray, targets: np.ndarray, within: float, rng: np.random.Generator) -> np.ndarray:
    """Unit queries whose cosine to their singer's centre is about `within` (a segment's, averaged over a track)."""
    noise = rng.standard_normal((len(targets), DIM)).astype(np.float32)
    noise -= (noise * centres[targets]).sum(1, keepdims=True) * centres[targets]
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    queries = within * centres[targets] + np.sqrt(1 - within**2) * noise
    return queries / np.linalg.norm(queries, axis=1, keepdims=True)


def top_singers(index: faiss.Index, queries: np.ndarray, prototypes: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query, its k best singers (rows // prototypes) and each search's seconds, one query at a time."""
    found, seconds = [], []
    for query in queries:
        started = time.perf_counter()
        _, rows = index.search(query[None, :], k * prototypes)
        seconds.append(time.perf_counter() - started)
        singers = list(dict.fromkeys((rows[0] // prototypes).tolist()))[:k]
        found.append(singers + [-1] * (k - len(singers)))
    return np.array(found), np.array(seconds)


@pytest.mark.parametrize("prototypes", [1, 3])
@pytest.mark.parametrize("count", SIZES)
def test_search_latency_and_recall(count: int, prototypes: int, tmp_path: Path) -> None:
    if prototypes == 3 and count != max(SIZES):
        pytest.skip("several prototypes are measured at the largest size only")
    from singerid.library import SingerLibrary

    rng = np.random.default_rng(0)
    within, *between = structure()
    vectors, centres = singer_vectors(count, prototypes, rng, tuple(between))
    targets = rng.integers(0, count, QUERIES)
    queries = queries_around(centres, targets, within, rng)
    faiss.omp_set_num_threads(1)
    exact = faiss.IndexFlatIP(DIM)
    exact.add(vectors)
    truth, exact_seconds = top_singers(exact, queries, prototypes, 5)
    del exact
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    library = SingerLibrary(DIM, prototypes)
    names = [f"s{i:07d}" for i in range(count)]
    for i, name in enumerate(names):  # each singer's rows as its segments: k prototypes come back as they are
        library.enroll(name, vectors[i * prototypes : (i + 1) * prototypes])
    del vectors  # the library holds its own copy: 3 x 10^6 x 512 floats are 6 GB
    faiss.omp_set_num_threads(os.cpu_count() or 1)  # training and building may use every core
    started = time.perf_counter()
    library.identify(queries[0])  # builds (and trains) the index
    build = time.perf_counter() - started
    faiss.omp_set_num_threads(1)  # queries: one core
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    library.save(tmp_path / "library")
    size = sum(p.stat().st_size for p in (tmp_path / "library").iterdir()) / 2**20
    position = {name: i for i, name in enumerate(names)}
    seconds, found = [], []
    for query in queries:
        started = time.perf_counter()
        matches = library.identify(query, top_k=5)
        seconds.append(time.perf_counter() - started)
        found.append([position[m.singer_id] for m in matches] + [-1] * (5 - len(matches)))
    found_array = np.array(found)
    recall1 = float(np.mean(found_array[:, 0] == truth[:, 0]))
    recall5 = float(np.mean([len(set(f) & set(t)) / 5 for f, t in zip(found_array, truth)]))
    factory, parameters = library.built_with
    p50, p99, exact_p50 = (1000 * np.percentile(x, q) for x, q in ((seconds, 50), (seconds, 99), (exact_seconds, 50)))
    print(
        f"\n{count:>9} singers x {prototypes}: {factory} ({parameters or 'exact'}) built in {build:.1f} s, "
        f"+{grown:.0f} MB peak, library {size:.0f} MB; identify p50 {p50:.2f} ms, p99 {p99:.2f} ms (faiss exact "
        f"search alone: p50 {exact_p50:.2f} ms); recall@1 {recall1:.3f}, recall@5 {recall5:.3f} against exact "
        f"(exact top-1 is the query's singer for {np.mean(truth[:, 0] == targets):.1%})"
    )
    assert 0.0 <= recall5 <= 1.0
