"""Tests for singerid.metrics: EER, minDCF, DET curve and top-k accuracy."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_curve

from singerid.metrics import (
    VerificationResult,
    det_curve,
    eer_threshold,
    equal_error_rate,
    min_dcf,
    top_k_accuracy,
    verification_result,
)


def sklearn_eer(scores: np.ndarray, labels: np.ndarray) -> float:
    """EER from scikit-learn's ROC, intersecting the first segment that reaches fnr <= fpr with y = x."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    fnr = 1.0 - tpr
    after = int(np.flatnonzero(fnr <= fpr)[0])
    if fnr[after] == fpr[after]:
        return float(fpr[after])
    x1, y1, x2, y2 = fpr[after - 1], fnr[after - 1], fpr[after], fnr[after]
    # Intersection of the line through (x1, y1), (x2, y2) with the diagonal, by the determinant formula.
    return float((x1 * y2 - y1 * x2) / ((x1 - x2) - (y1 - y2)))


def brute_force_min_dcf(scores: np.ndarray, labels: np.ndarray, p_target: float) -> float:
    target_scores = scores[labels == 1]
    non_target_scores = scores[labels == 0]
    best = np.inf
    for threshold in [*np.unique(scores), np.inf]:
        p_miss = np.mean(target_scores < threshold)
        p_fa = np.mean(non_target_scores >= threshold)
        best = min(best, p_miss * p_target + p_fa * (1 - p_target))
    return best / min(p_target, 1 - p_target)


def random_trials(size: int, target_fraction: float, seed: int, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    labels = (rng.random(size) < target_fraction).astype(int)
    labels[:2] = [0, 1]  # both classes present
    scores = rng.normal(size=size) + 1.5 * labels
    if decimals is not None:
        scores = np.round(scores, decimals)  # many ties
    return scores, labels


TRIAL_SETS = [
    (10, 0.5, 0, None),
    (57, 0.2, 1, None),
    (1000, 0.5, 2, None),
    (1000, 0.05, 3, 1),
    (5000, 0.9, 4, None),
    (20000, 0.1, 5, 2),
    (3001, 0.33, 6, 0),
]


@pytest.mark.parametrize(("size", "target_fraction", "seed", "decimals"), TRIAL_SETS)
def test_eer_matches_sklearn_roc(size, target_fraction, seed, decimals):
    scores, labels = random_trials(size, target_fraction, seed, decimals)
    assert equal_error_rate(scores, labels) == pytest.approx(sklearn_eer(scores, labels), abs=1e-9)


def test_eer_perfect_separation_is_zero():
    assert equal_error_rate([0.1, 0.2, 0.3, 0.8, 0.9], [0, 0, 0, 1, 1]) == 0.0


def test_eer_identical_distributions_with_ties_is_half():
    rng = np.random.default_rng(7)
    per_class = rng.integers(0, 5, size=400)
    scores = np.concatenate([per_class, rng.permutation(per_class)])
    labels = np.repeat([1, 0], 400)
    assert equal_error_rate(scores, labels) == pytest.approx(0.5, abs=1e-12)
    assert equal_error_rate(np.zeros(6), [1, 0, 1, 0, 0, 0]) == 0.5


def test_eer_hand_worked_example_interpolates_inside_a_tie():
    # Operating points (false alarm, miss): (0, 1); (0, 2/3) at 0.9; (1/2, 1/3) at the tied 0.5s;
    # (1/2, 0) at 0.4; (1, 0) at 0.1.
    # Segment (0, 2/3) -> (1/2, 1/3) meets miss = false alarm at 4/5 of its length: EER = 2/5.
    # (voxceleb_trainer's rule would report max(1/2, 1/3) = 1/2 here.)
    scores = [0.9, 0.5, 0.5, 0.4, 0.1]
    labels = [1, 1, 0, 1, 0]
    assert equal_error_rate(scores, labels) == pytest.approx(0.4, abs=1e-15)
    # Tie order must not matter.
    assert equal_error_rate([0.9, 0.5, 0.5, 0.4, 0.1], [1, 0, 1, 1, 0]) == pytest.approx(0.4, abs=1e-15)


def test_eer_inverted_scores_close_to_one():
    scores, labels = random_trials(2000, 0.5, 8)
    inverted = -5.0 * scores
    assert equal_error_rate(inverted, labels) > 0.7
    assert equal_error_rate(inverted, labels) == pytest.approx(1.0 - equal_error_rate(scores, labels), abs=1e-12)
    assert equal_error_rate([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 1.0


@pytest.mark.parametrize("p_target", [0.01, 0.05])
@pytest.mark.parametrize(("size", "target_fraction", "seed", "decimals"), TRIAL_SETS[:5])
def test_min_dcf_matches_brute_force(p_target, size, target_fraction, seed, decimals):
    scores, labels = random_trials(size, target_fraction, seed, decimals)
    expected = brute_force_min_dcf(scores, labels, p_target)
    assert min_dcf(scores, labels, p_target=p_target) == pytest.approx(expected, abs=1e-12)


def test_min_dcf_costs_and_perfect_separation():
    assert min_dcf([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 0.0
    # Hand-worked: targets {0.9, 0.5}, non-targets {0.5, 0.1}; at 0.9 p_miss 1/2, p_fa 0; at 0.5 p_miss 0,
    # p_fa 1/2. With p_target 0.5, c_miss 2, c_fa 1: costs 0.5 and 0.25, default cost 0.5 -> 0.5.
    assert min_dcf([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0], p_target=0.5, c_miss=2.0) == pytest.approx(0.5)
    # Useless scores never cost more than the trivial system.
    assert min_dcf(np.zeros(10), [1, 0] * 5, p_target=0.05) == pytest.approx(1.0)


def test_det_curve_monotone_and_matches_sklearn():
    scores, labels = random_trials(3000, 0.3, 9, decimals=1)
    false_alarm_rate, miss_rate, thresholds = det_curve(scores, labels)
    assert thresholds.shape == false_alarm_rate.shape == miss_rate.shape == (np.unique(scores).size + 1,)
    assert np.all(np.diff(thresholds) < 0)
    assert np.all(np.diff(false_alarm_rate) >= 0)
    assert np.all(np.diff(miss_rate) <= 0)
    assert (false_alarm_rate[0], miss_rate[0], false_alarm_rate[-1], miss_rate[-1]) == (0.0, 1.0, 1.0, 0.0)
    fpr, tpr, sk_thresholds = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(false_alarm_rate, fpr, atol=1e-12)
    np.testing.assert_allclose(miss_rate, 1.0 - tpr, atol=1e-12)
    np.testing.assert_array_equal(thresholds[1:], sk_thresholds[1:])


def test_verification_result_combines_metrics():
    scores, labels = random_trials(1500, 0.2, 10)
    result = verification_result(scores, labels)
    assert isinstance(result, VerificationResult)
    assert result.eer == equal_error_rate(scores, labels)
    assert result.min_dcf_01 == min_dcf(scores, labels, p_target=0.01)
    assert result.min_dcf_05 == min_dcf(scores, labels, p_target=0.05)
    assert (result.trials, result.targets) == (1500, int(labels.sum()))
    with pytest.raises(AttributeError):
        result.eer = 0.0  # frozen


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2, 0.3], [0, 1], "differ in length"),
        ([0.1, 0.2], [1, 1], "both target and non-target"),
        ([0.1, 0.2], [0, 0], "both target and non-target"),
        ([0.1, np.nan], [0, 1], "finite"),
        ([0.1, np.inf], [0, 1], "finite"),
        ([0.1, 0.2], [0, 2], "1 \\(target\\) or 0"),
        ([0.1, 0.2], ["a", "b"], "1 \\(target\\) or 0"),
        ([[0.1, 0.2]], [[0, 1]], "1-D"),
    ],
)
def test_verification_metrics_reject_bad_input(scores, labels, message):
    for metric in (equal_error_rate, min_dcf, det_curve, verification_result):
        with pytest.raises(ValueError, match=message):
            metric(scores, labels)


def test_min_dcf_rejects_bad_costs():
    with pytest.raises(ValueError, match="p_target"):
        min_dcf([0.1, 0.2], [0, 1], p_target=1.0)
    with pytest.raises(ValueError, match="p_target"):
        min_dcf([0.1, 0.2], [0, 1], p_target=0.0)
    with pytest.raises(ValueError, match="positive"):
        min_dcf([0.1, 0.2], [0, 1], c_fa=0.0)


def test_eer_accepts_bool_labels():
    assert equal_error_rate([0.1, 0.9, 0.5], np.array([False, True, False])) == 0.0


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(-50, 50), st.booleans()),
        min_size=2,
        max_size=60,
    ).filter(lambda trials: len({is_target for _, is_target in trials}) == 2)
)
def test_eer_in_unit_interval_and_invariant_to_monotone_transform(trials):
    scores = np.array([score for score, _ in trials], dtype=np.float64)
    labels = np.array([is_target for _, is_target in trials])
    eer = equal_error_rate(scores, labels)
    assert 0.0 <= eer <= 1.0
    transformed = np.exp(scores / 7.0) + scores**3  # strictly increasing, keeps ties tied
    assert equal_error_rate(transformed, labels) == eer
    assert equal_error_rate(-scores, labels) == pytest.approx(1.0 - eer, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), st.booleans()),
        min_size=2,
        max_size=40,
    ).filter(lambda trials: len({is_target for _, is_target in trials}) == 2)
)
def test_eer_in_unit_interval_for_any_finite_scores(trials):
    scores = np.array([score for score, _ in trials])
    labels = np.array([is_target for _, is_target in trials])
    assert 0.0 <= equal_error_rate(scores, labels) <= 1.0
    assert equal_error_rate(scores, labels) == pytest.approx(sklearn_eer(scores, labels), abs=1e-9)


def test_top_k_constructed():
    scores = np.array(
        [
            [0.9, 0.1, 0.2, 0.3, 0.0, 0.4],  # true 0 ranks 1st
            [0.5, 0.6, 0.7, 0.8, 0.9, 0.1],  # true 0 ranks 5th
            [0.5, 0.6, 0.7, 0.8, 0.9, 0.95],  # true 0 ranks 6th
            [0.1, 0.9, 0.3, 0.2, 0.0, 0.4],  # true 2 ranks 3rd
        ]
    )
    targets = np.array([0, 0, 0, 2])
    assert top_k_accuracy(scores, targets, k=1) == 0.25
    assert top_k_accuracy(scores, targets, k=3) == 0.5
    assert top_k_accuracy(scores, targets, k=5) == 0.75
    assert top_k_accuracy(scores, targets, k=6) == 1.0
    assert top_k_accuracy(scores, targets, k=100) == 1.0


def test_top_k_ties_count_against_the_true_candidate():
    scores = np.array([[0.7, 0.7, 0.1], [0.2, 0.2, 0.2]])
    assert top_k_accuracy(scores, [0, 1], k=1) == 0.0
    assert top_k_accuracy(scores, [1, 1], k=2) == 0.5
    assert top_k_accuracy(scores, [1, 1], k=3) == 1.0


def test_top_k_matches_sorting_loop():
    rng = np.random.default_rng(11)
    scores = np.round(rng.normal(size=(300, 40)), 1)
    targets = rng.integers(0, 40, size=300)
    for k in (1, 5):
        hits = 0
        for row, target in zip(scores, targets, strict=True):
            # Sort descending; among equal scores put the true candidate last (pessimistic).
            order = sorted(range(40), key=lambda c: (-row[c], c == target))
            hits += target in order[:k]
        assert top_k_accuracy(scores, targets, k) == pytest.approx(hits / 300)


@pytest.mark.parametrize(
    ("scores", "targets", "k", "message"),
    [
        ([[0.1, 0.2]], [0], 0, "positive integer"),
        ([[0.1, 0.2]], [0], 1.5, "positive integer"),
        ([[0.1, 0.2]], [2], 1, "targets must lie"),
        ([[0.1, 0.2]], [-1], 1, "targets must lie"),
        ([[0.1, 0.2]], [0, 1], 1, "shape"),
        ([[0.1, 0.2]], [0.0], 1, "integer"),
        ([0.1, 0.2], [0], 1, "matrix"),
        (np.zeros((0, 3)), np.zeros(0, dtype=int), 1, "matrix"),
        ([[0.1, np.nan]], [0], 1, "finite"),
    ],
)
def test_top_k_rejects_bad_input(scores, targets, k, message):
    with pytest.raises(ValueError, match=message):
        top_k_accuracy(scores, targets, k)


@pytest.mark.bench
def test_ten_million_trials_against_scikit_learn():
    """Speed of EER + minDCF on 10^7 trials, against scikit-learn's roc_curve + the crossing (EER alone)."""
    scores, labels = random_trials(10**7, 0.1, 12)
    start = time.perf_counter()
    result = verification_result(scores, labels)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    reference = sklearn_eer(scores, labels)
    theirs = time.perf_counter() - start
    assert result.eer == pytest.approx(reference, abs=1e-9)
    print(
        f"\n10^7 trials: singerid EER + 2 minDCF {ours:.2f} s, scikit-learn roc_curve EER {theirs:.2f} s; "
        f"ratio {theirs / ours:.2f}x"
    )


@pytest.mark.parametrize("seed", range(5))
def test_eer_threshold_splits_the_errors_evenly(seed: int) -> None:
    scores, labels = random_trials(4000, 0.3, seed)
    threshold = eer_threshold(scores, labels)
    miss = np.mean(scores[labels == 1] < threshold)
    false_alarm = np.mean(scores[labels == 0] >= threshold)
    eer = equal_error_rate(scores, labels)
    assert miss == pytest.approx(eer, abs=0.01) and false_alarm == pytest.approx(eer, abs=0.01)
    assert eer_threshold([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == pytest.approx(0.8)  # separable: the lowest target
