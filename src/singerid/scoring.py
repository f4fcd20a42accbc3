"""Score normalisation: adaptive symmetric normalisation (AS-norm) of cosine scores against a cohort.

A raw cosine score s(e, t) between an enrolment e and a test t is normalised by the statistics of each side's
closest cohort embeddings: with mu_x and sigma_x the mean and standard deviation of the `top_n` highest cosines
between x and the cohort,

    as_norm(s) = ((s - mu_e) / sigma_e + (s - mu_t) / sigma_t) / 2

(Matejka et al., "Analysis of score normalization in multilingual speaker recognition", Interspeech 2017; the
"top-N cohort" variant WeSpeaker and SpeechBrain users know). The cohort should be singers who are neither enrolled
nor tested: a model's training singers are the usual choice. A cohort file is what `singerid embed` writes: an npz
of one embedding per file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from singerid.errors import SingerIdError

DEFAULT_TOP_N = 300  # cohort embeddings per side (WeSpeaker's recipes use 200-400)
BLOCK_ROWS = 1024  # rows scored against the cohort at a time (memory: BLOCK_ROWS x cohort floats)


class CohortError(SingerIdError, ValueError):
    """A cohort file or setting that cannot be used; the message names the file and the reason."""


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """(n, d) float32 rows scaled to unit length (zero rows stay zero)."""
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.finfo(np.float32).tiny)


def load_cohort(path: str | Path, dim: int | None = None) -> np.ndarray:
    """The unit embeddings of a cohort file (npz, one array per entry: an embedding, or segment embeddings that are
    averaged), as written by `singerid embed`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = [np.asarray(data[key], dtype=np.float32) for key in data.files]
    except FileNotFoundError:
        raise CohortError(f"{path}: no such cohort file") from None
    except (OSError, ValueError) as error:
        raise CohortError(f"{path}: not an npz of embeddings ({error})") from error
    vectors = [a.mean(axis=0) if a.ndim == 2 else a for a in arrays if a.ndim in (1, 2) and a.size]
    if len(vectors) < 2 or len({v.shape for v in vectors}) != 1:
        raise CohortError(f"{path}: a cohort needs at least 2 embeddings of one dimension, found {len(vectors)}")
    cohort = unit_rows(np.stack(vectors))
    if dim is not None and cohort.shape[1] != dim:
        raise CohortError(f"{path}: cohort embeddings have {cohort.shape[1]} dimensions, the model {dim}")
    return cohort


def cohort_statistics(
    vectors: np.ndarray, cohort: np.ndarray, top_n: int = DEFAULT_TOP_N
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of unit `vectors`: mean and standard deviation of its `top_n` highest cosines with the cohort."""
    if top_n < 1:
        raise CohortError(f"top_n must be at least 1, got {top_n}")
    vectors = unit_rows(vectors)
    n = min(top_n, len(cohort))
    means, deviations = np.empty(len(vectors)), np.empty(len(vectors))
    for start in range(0, len(vectors), BLOCK_ROWS):
        scores = vectors[start : start + BLOCK_ROWS] @ cohort.T
        top = np.partition(scores, len(cohort) - n, axis=1)[:, len(cohort) - n :].astype(np.float64)
        means[start : start + len(top)] = top.mean(axis=1)
        deviations[start : start + len(top)] = top.std(axis=1)
    return means, np.maximum(deviations, 1e-6)


def as_norm(
    scores: np.ndarray,
    enrolment: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """AS-norm of `scores` given each side's cohort (mean, standard deviation), broadcast like the scores."""
    (mean_e, std_e), (mean_t, std_t) = enrolment, test
    return 0.5 * ((scores - mean_e) / std_e + (scores - mean_t) / std_t)


def normalised_pair_scores(
    enrolments: np.ndarray, tests: np.ndarray, cohort: np.ndarray, top_n: int = DEFAULT_TOP_N
) -> np.ndarray:
    """AS-norm scores of row i of `enrolments` against row i of `tests` (both (n, d))."""
    enrolments, tests = unit_rows(enrolments), unit_rows(tests)
    raw = np.einsum("ij,ij->i", enrolments, tests).astype(np.float64)
    return as_norm(raw, cohort_statistics(enrolments, cohort, top_n), cohort_statistics(tests, cohort, top_n))


def normalised_candidates(
    query: np.ndarray, candidates: list[np.ndarray], cohort: np.ndarray, top_n: int = DEFAULT_TOP_N
) -> tuple[np.ndarray, np.ndarray]:
    """Raw and AS-norm scores of one query (d,) against each candidate singer's (k, d) unit prototypes: a singer's
    score is that of its closest prototype, normalised with that prototype's cohort statistics."""
    query = unit_rows(query)
    closest = np.stack([prototypes[np.argmax(prototypes @ query[0])] for prototypes in candidates])
    raw = (closest @ query[0]).astype(np.float64)
    return raw, as_norm(raw, cohort_statistics(closest, cohort, top_n), cohort_statistics(query, cohort, top_n))
