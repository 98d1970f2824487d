"""Threshold choice against brute force and scikit-learn's precision_recall_curve."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import fbeta_score, precision_recall_curve

from irp.threshold import PrecisionTargetWarning, ThresholdChoice, choose_threshold, operating_points


def brute_force(y: np.ndarray, s: np.ndarray, target: float) -> tuple[float, str]:
    """(threshold, rule) by trying every distinct score with plain numpy, as the spec words it."""
    rows = []
    for t in sorted(set(s.tolist()), reverse=True):  # descending: the first best is the highest threshold
        pred = s >= t
        tp = int((pred & (y == 1)).sum())
        precision, recall = tp / pred.sum(), tp / y.sum()
        f05 = 1.25 * precision * recall / (0.25 * precision + recall) if tp else 0.0
        rows.append((t, precision, recall, f05))
    feasible = [r for r in rows if r[1] >= target - 1e-12]
    if feasible:
        best = max(r[2] for r in feasible)
        return next(r[0] for r in feasible if r[2] == best), "max_recall_at_precision"
    best = max(r[3] for r in rows)
    return next(r[0] for r in rows if r[3] == pytest.approx(best, abs=1e-12)), "max_f05_fallback"


samples = st.integers(1, 50).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda y: sum(y) > 0),
        st.lists(st.integers(0, 8).map(lambda v: v / 8), min_size=n, max_size=n),  # many ties
    )
)


@settings(max_examples=200, deadline=None)
@given(samples, st.sampled_from([0.5, 0.6, 2 / 3, 0.75, 0.8, 0.9, 1.0]))
def test_choice_equals_brute_force(data: tuple[list[int], list[float]], target: float) -> None:
    y, s = np.array(data[0]), np.array(data[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionTargetWarning)
        choice = choose_threshold(y, s, target)
    threshold, rule = brute_force(y, s, target)
    assert (choice.threshold, choice.rule) == (threshold, rule)
    assert choice.reached == (rule == "max_recall_at_precision")
    pred = s >= choice.threshold  # the reported metrics are those of `score >= threshold`
    assert choice.precision == pytest.approx(y[pred].mean())
    assert choice.recall == pytest.approx(y[pred].sum() / y.sum())
    assert choice.f05 == pytest.approx(fbeta_score(y, pred.astype(int), beta=0.5))
    if choice.reached:
        assert choice.precision >= target - 1e-12


@settings(max_examples=100, deadline=None)
@given(samples)
def test_operating_points_match_sklearn_precision_recall_curve(data: tuple[list[int], list[float]]) -> None:
    y, s = np.array(data[0]), np.array(data[1])
    op = operating_points(y, s)
    precision, recall, thresholds = precision_recall_curve(y, s)
    # sklearn: thresholds ascending with one extra (P=1, R=0) end point; ours: every distinct score, descending.
    ours = dict(zip(op.thresholds.tolist(), zip(op.precision.tolist(), op.recall.tolist())))
    assert set(thresholds.tolist()) <= set(ours)
    for t, p, r in zip(thresholds, precision[:-1], recall[:-1]):
        assert ours[t] == pytest.approx((p, r))


def test_exact_ties_and_exact_target() -> None:
    # Scores 0.9 (1 pos), 0.5 tied (3 pos, 1 neg), 0.1 (1 neg): at 0.5 precision is exactly 4/5 = 0.8.
    y = [1, 1, 1, 0, 1, 0]
    s = [0.9, 0.5, 0.5, 0.5, 0.5, 0.1]
    choice = choose_threshold(y, s, 0.8)
    assert choice == ThresholdChoice(
        threshold=0.5,
        rule="max_recall_at_precision",
        precision=0.8,
        recall=1.0,
        f05=pytest.approx(1.25 * 4 / (1.25 * 4 + 1)),  # type: ignore[arg-type]
        target_precision=0.8,
        reached=True,
        message=choice.message,
    )
    # The tied block is all-or-nothing: with 0.81 no threshold between 0.9 and 0.5 exists.
    assert choose_threshold(y, s, 0.81).threshold == 0.9


def test_equal_recall_prefers_the_higher_threshold() -> None:
    # Thresholds 0.8 and 0.6 both give recall 1 and precision >= 0.5; 0.8 has the higher precision.
    choice = choose_threshold([1, 0, 0], [0.8, 0.6, 0.2], 0.5)
    assert (choice.threshold, choice.precision, choice.recall) == (0.8, 1.0, 1.0)


def test_fallback_is_loud() -> None:
    y, s = [0, 1, 0, 1, 0, 0], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    with pytest.warns(PrecisionTargetWarning, match="TARGET PRECISION NOT REACHED"):
        choice = choose_threshold(y, s, 0.9)
    assert choice.rule == "max_f05_fallback" and not choice.reached
    assert "0.9" in choice.message and "F0.5" in choice.message
    assert choice.threshold == 0.6  # F0.5 is 0.5 at 0.6 vs 0.3846 at 0.8


def test_choice_is_frozen_and_degenerate_inputs_raise() -> None:
    choice = choose_threshold([0, 1], [0.1, 0.9])
    with pytest.raises(dataclasses.FrozenInstanceError):
        choice.threshold = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="no positive example"):
        choose_threshold([0, 0], [0.1, 0.9])
    with pytest.raises(ValueError, match="no examples"):
        choose_threshold([], [])
    with pytest.raises(ValueError, match="target precision"):
        choose_threshold([0, 1], [0.1, 0.9], target_precision=0.0)
