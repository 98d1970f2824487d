"""Choosing the operating point on validation data: the highest recall at a target precision.

A wrong offer to switch to a screen is friction, so `irp` operates at high precision: among the
candidate thresholds (every distinct validation score; a prediction is `score >= threshold`), take
the one with the highest recall whose precision reaches the target. If none reaches it, fall back to
the F0.5-maximising threshold and say so loudly (`reached=False`, a message and a warning) rather
than silently shipping a model below the precision the user asked for.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from irp.metrics import FloatArray, check_binary_scores

Rule = Literal["max_recall_at_precision", "max_f05_fallback"]

# Float slack for comparisons of ratios: 4/5 must count as reaching 0.8 whatever the rounding.
_EPS = 1e-12


class PrecisionTargetWarning(UserWarning):
    """No validation threshold reaches the target precision; the F0.5 fallback was used."""


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen operating point and how it was chosen (precision/recall/F0.5 are on validation)."""

    threshold: float
    rule: Rule
    precision: float
    recall: float
    f05: float
    target_precision: float
    reached: bool
    message: str


@dataclass(frozen=True)
class OperatingPoints:
    """Precision, recall and F0.5 at every candidate threshold, thresholds descending: each (G,)."""

    thresholds: FloatArray
    precision: FloatArray
    recall: FloatArray
    f05: FloatArray


def operating_points(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> OperatingPoints:
    """Metrics when predicting `score >= t` for every distinct score t (descending).

    Every candidate predicts at least one example positive, so precision is always defined.

    >>> op = operating_points([0, 1, 1, 0], [0.2, 0.9, 0.5, 0.5])
    >>> op.thresholds.tolist(), op.precision.tolist(), op.recall.tolist()
    ([0.9, 0.5, 0.2], [1.0, 0.6666666666666666, 0.5], [0.5, 1.0, 1.0])
    """
    y, s = check_binary_scores(y_true, scores)
    if y.size == 0:
        raise ValueError("no examples: cannot compute operating points")
    pos = y.sum()
    if pos == 0:
        raise ValueError("the labels contain no positive example: recall is undefined at every threshold")
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    end = np.append(np.flatnonzero(s_sorted[1:] != s_sorted[:-1]), s.size - 1)  # (G,) last index per tie run
    tp = np.cumsum(y_sorted)[end]  # (G,)
    predicted = (end + 1).astype(np.float64)  # (G,) examples with score >= threshold
    precision = tp / predicted
    recall = tp / pos
    fp, fn = predicted - tp, pos - tp
    f05 = 1.25 * tp / (1.25 * tp + 0.25 * fn + fp)
    return OperatingPoints(s_sorted[end], precision, recall, f05)


def choose_threshold(y_true: npt.ArrayLike, scores: npt.ArrayLike, target_precision: float = 0.8) -> ThresholdChoice:
    """Highest-recall threshold with validation precision >= `target_precision` (ties: the higher threshold).

    Falls back to the F0.5-maximising threshold (ties: the higher threshold) with `reached=False`
    and a `PrecisionTargetWarning` when no threshold reaches the target.

    >>> c = choose_threshold([0, 1, 1, 0, 1], [0.1, 0.9, 0.8, 0.7, 0.3], target_precision=0.75)
    >>> c.threshold, c.rule, c.precision, c.recall, c.reached
    (0.3, 'max_recall_at_precision', 0.75, 1.0, True)
    """
    if not 0.0 < target_precision <= 1.0:
        raise ValueError(f"target precision must be in (0, 1], got {target_precision}")
    op = operating_points(y_true, scores)
    ok = op.precision >= target_precision - _EPS
    if ok.any():
        # Recall never decreases as the threshold drops, so the max over feasible points is the
        # lowest feasible threshold; argmax returns the first (= highest) threshold at that recall.
        candidates = np.flatnonzero(ok)
        i = int(candidates[np.argmax(op.recall[candidates])])
        rule: Rule = "max_recall_at_precision"
        message = (
            f"threshold {op.thresholds[i]:.6g} reaches precision {op.precision[i]:.3f} >= {target_precision:g} "
            f"on validation with recall {op.recall[i]:.3f}"
        )
    else:
        # First (= highest) threshold whose F0.5 ties the best, up to float noise in the ratio.
        i = int(np.flatnonzero(op.f05 >= op.f05.max() - _EPS)[0])
        rule = "max_f05_fallback"
        message = (
            f"TARGET PRECISION NOT REACHED: no threshold reaches precision >= {target_precision:g} on "
            f"validation (best is {op.precision.max():.3f}); fell back to the F0.5-maximising threshold "
            f"{op.thresholds[i]:.6g} (precision {op.precision[i]:.3f}, recall {op.recall[i]:.3f})"
        )
        warnings.warn(message, PrecisionTargetWarning, stacklevel=2)
    return ThresholdChoice(
        threshold=float(op.thresholds[i]),
        rule=rule,
        precision=float(op.precision[i]),
        recall=float(op.recall[i]),
        f05=float(op.f05[i]),
        target_precision=float(target_precision),
        reached=rule == "max_recall_at_precision",
        message=message,
    )
