"""Evaluation metrics: top-k identification accuracy, and EER, minDCF and the DET curve for verification.

Verification convention: ``labels`` are 1 for a target trial (same singer) and 0 for a non-target trial;
a higher score means "more likely the same singer"; a trial is accepted when ``score >= threshold``. Equal
scores are always grouped into one operating point, so the results do not depend on the order of tied trials.
All rates are fractions in [0, 1], not percentages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "VerificationResult",
    "det_curve",
    "equal_error_rate",
    "min_dcf",
    "top_k_accuracy",
    "verification_result",
]


@dataclass(frozen=True)
class VerificationResult:
    """Summary of one verification trial list (rates as fractions in [0, 1])."""

    eer: float
    min_dcf_01: float  # normalised minDCF at p_target = 0.01, c_miss = c_fa = 1
    min_dcf_05: float  # normalised minDCF at p_target = 0.05, c_miss = c_fa = 1
    trials: int
    targets: int


def _validated_trials(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return (scores as float64, labels as bool), both 1-D, or raise ValueError naming the problem."""
    score_array = np.asarray(scores, dtype=np.float64)
    label_array = np.asarray(labels)
    if score_array.ndim != 1 or label_array.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D, got shapes {score_array.shape} and {label_array.shape}")
    if score_array.shape != label_array.shape:
        raise ValueError(f"scores and labels differ in length: {score_array.size} != {label_array.size}")
    if not np.all(np.isfinite(score_array)):
        raise ValueError(f"scores must be finite; found {np.count_nonzero(~np.isfinite(score_array))} that are not")
    if label_array.dtype != np.bool_:
        if not np.issubdtype(label_array.dtype, np.number) or not np.all((label_array == 0) | (label_array == 1)):
            raise ValueError("labels must be 1 (target) or 0 (non-target)")
        label_array = label_array == 1
    targets = int(np.count_nonzero(label_array))
    if targets == 0 or targets == label_array.size:
        raise ValueError(
            f"both target and non-target trials are needed; got {targets} targets and "
            f"{label_array.size - targets} non-targets"
        )
    return score_array, label_array


def _error_rates(score_array: np.ndarray, is_target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-alarm and miss rates at each distinct score taken as threshold, plus the accept-nothing point."""
    order = np.argsort(score_array)[::-1]
    sorted_scores = score_array[order]
    sorted_targets = is_target[order]
    # The last trial of each run of equal scores: accepting at that score accepts the whole run.
    run_ends = np.append(np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1)
    accepted_targets = np.cumsum(sorted_targets, dtype=np.int64)[run_ends]
    accepted_non_targets = run_ends + 1 - accepted_targets
    target_count = accepted_targets[-1]
    non_target_count = accepted_non_targets[-1]
    false_alarm_rate = np.concatenate(([0.0], accepted_non_targets / non_target_count))
    miss_rate = np.concatenate(([1.0], (target_count - accepted_targets) / target_count))
    thresholds = np.concatenate(([np.inf], sorted_scores[run_ends]))
    return false_alarm_rate, miss_rate, thresholds


def _eer_from_rates(false_alarm_rate: np.ndarray, miss_rate: np.ndarray) -> float:
    """Where the piecewise-linear curve through the operating points crosses miss = false alarm."""
    gap = miss_rate - false_alarm_rate  # non-increasing from 1 (accept nothing) to -1 (accept all)
    after = int(np.argmax(gap <= 0))
    if gap[after] == 0:
        return float(false_alarm_rate[after])
    before = after - 1
    fraction = gap[before] / (gap[before] - gap[after])
    return float(false_alarm_rate[before] + fraction * (false_alarm_rate[after] - false_alarm_rate[before]))


def _min_dcf_from_rates(
    false_alarm_rate: np.ndarray, miss_rate: np.ndarray, p_target: float, c_miss: float, c_fa: float
) -> float:
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must lie strictly between 0 and 1, got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"c_miss and c_fa must be positive, got {c_miss} and {c_fa}")
    costs = c_miss * p_target * miss_rate + c_fa * (1.0 - p_target) * false_alarm_rate
    default_cost = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(costs.min() / default_cost)


def det_curve(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Operating points ``(false_alarm_rate, miss_rate, thresholds)`` for plotting a DET curve.

    One point per distinct score (accept ``score >= threshold``), preceded by the accept-nothing point
    (threshold ``inf``, false alarm 0, miss 1). Thresholds decrease; false-alarm rates rise from 0 to 1 and
    miss rates fall from 1 to 0. Length: number of distinct scores + 1.
    """
    return _error_rates(*_validated_trials(scores, labels))


def equal_error_rate(scores: ArrayLike, labels: ArrayLike) -> float:
    """Equal error rate as a fraction in [0, 1].

    The miss and false-alarm rates are taken at every distinct score (ties grouped), and the EER is the point
    where the straight segments between consecutive operating points cross the line miss = false alarm, i.e.
    linear interpolation at the crossing. (clovaai/voxceleb_trainer instead reports the larger of the two
    rates at the operating point where they are closest, which can differ by up to one step of the curve.)
    """
    return _eer_from_rates(*_error_rates(*_validated_trials(scores, labels))[:2])


def eer_threshold(scores: ArrayLike, labels: ArrayLike) -> float:
    """The score threshold (accept at or above) at the equal error rate: interpolated between the two operating
    points whose segment crosses miss = false alarm, as :func:`equal_error_rate` does for the rate."""
    false_alarm_rate, miss_rate, thresholds = _error_rates(*_validated_trials(scores, labels))
    gap = miss_rate - false_alarm_rate
    after = int(np.argmax(gap <= 0))
    if gap[after] == 0 or not np.isfinite(thresholds[after - 1]):
        return float(thresholds[after])
    fraction = gap[after - 1] / (gap[after - 1] - gap[after])
    return float(thresholds[after - 1] + fraction * (thresholds[after] - thresholds[after - 1]))


def min_dcf(
    scores: ArrayLike, labels: ArrayLike, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0
) -> float:
    """Normalised minimum detection cost (NIST SRE).

    ``min over thresholds of c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)``, divided by the cost
    of the better trivial system, ``min(c_miss * p_target, c_fa * (1 - p_target))``. The thresholds include
    accept-all and accept-nothing, so the result lies in [0, 1].
    """
    false_alarm_rate, miss_rate, _ = _error_rates(*_validated_trials(scores, labels))
    return _min_dcf_from_rates(false_alarm_rate, miss_rate, p_target, c_miss, c_fa)


def verification_result(scores: ArrayLike, labels: ArrayLike) -> VerificationResult:
    """EER and minDCF (p_target 0.01 and 0.05) of one trial list, sorting the scores once."""
    score_array, is_target = _validated_trials(scores, labels)
    false_alarm_rate, miss_rate, _ = _error_rates(score_array, is_target)
    return VerificationResult(
        eer=_eer_from_rates(false_alarm_rate, miss_rate),
        min_dcf_01=_min_dcf_from_rates(false_alarm_rate, miss_rate, 0.01, 1.0, 1.0),
        min_dcf_05=_min_dcf_from_rates(false_alarm_rate, miss_rate, 0.05, 1.0, 1.0),
        trials=int(score_array.size),
        targets=int(np.count_nonzero(is_target)),
    )


def top_k_accuracy(scores: ArrayLike, targets: ArrayLike, k: int) -> float:
    """Fraction of queries whose true candidate is among the ``k`` best-scoring candidates.

    ``scores`` is (queries, candidates), higher = better; ``targets`` holds each query's true candidate index.
    Ties are pessimistic: every other candidate scoring at least as high as the true one ranks above it, so
    a query whose scores are all equal is correct only when ``k >= candidates``.
    """
    score_matrix = np.asarray(scores, dtype=np.float64)
    target_array = np.asarray(targets)
    if score_matrix.ndim != 2 or score_matrix.shape[0] == 0 or score_matrix.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty (queries, candidates) matrix, got shape {score_matrix.shape}")
    if target_array.shape != (score_matrix.shape[0],):
        raise ValueError(
            f"targets must have shape ({score_matrix.shape[0]},) to match scores, got {target_array.shape}"
        )
    if not np.issubdtype(target_array.dtype, np.integer):
        raise ValueError(f"targets must be integer candidate indices, got dtype {target_array.dtype}")
    candidates = score_matrix.shape[1]
    if np.any((target_array < 0) | (target_array >= candidates)):
        raise ValueError(f"targets must lie in [0, {candidates}); got values outside")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not np.all(np.isfinite(score_matrix)):
        raise ValueError("scores must be finite")
    true_scores = score_matrix[np.arange(score_matrix.shape[0]), target_array]
    # Candidates at least as good as the true one, the true one excluded: its pessimistic 0-based rank.
    rank = np.count_nonzero(score_matrix >= true_scores[:, None], axis=1) - 1
    return float(np.mean(rank < k))
