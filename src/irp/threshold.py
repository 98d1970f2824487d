"""Choosing the operating point on validation data: a threshold whose precision is certified.

A wrong offer to switch to a screen is friction, so `irp` operates at high precision. A prediction is
`score >= threshold`; the candidate thresholds are the distinct validation scores.

The certified rule (`confidence > 0`, rule "certified_precision"): fixed-sequence testing. The candidates are
scanned from the highest threshold downward; at each, the one-sided exact (Clopper-Pearson) lower confidence
bound of precision is computed from the true positives among the validation records it predicts positive; the
scan stops at the first threshold whose bound falls below the target, and the last threshold that passed is
chosen (the most recall whose precision is still certified). With confidence C (delta = 1 - C), the chosen
threshold's precision on new records from the validation distribution is at least the target with probability
at least C: the hypotheses "precision(t_j) < target" are tested in an order fixed before the labels are seen,
each at level delta, so the family-wise error stays at delta without any multiplicity correction.

Where the sequence starts matters. Started at the single top-scored record it is powerless: one predicted
positive certifies at most 1 - delta (0.1 at C = 0.9), and even at 11 records one early negative ends the scan
(P(top 11 all positive) = 0.57 at precision 0.95). So the scan starts at the highest threshold that predicts at
least `min_predicted` records positive, by default `max(n_min, ceil(0.05 * n))`, where n_min =
ceil(log(delta) / log(target)) is the smallest count at which an all-positive set can be certified. The start
depends on the number of records only, never on labels, so the guarantee holds. Checked on synthetic scores
(3,500 validation records, 21 % positives, precision ~0.9 among the top: `tests/test_threshold.py`): that start
certifies a threshold in nearly every draw, where starting at n_min fails whenever one of the first few records
is a negative; later candidates only add records, so a start of 5 % of the records costs no recall whenever the
certifiable region is larger than that.

What the guarantee covers, honestly: new records drawn from the same distribution as the validation file (the
bound is exact for a threshold fixed in advance; taking it at a validation score is conservative when precision
grows with the score). It says nothing about drift: re-check with `irp threshold` on fresh logs. The binomial
bound takes the validation records as independent; turns of one session are not quite, and `choose_threshold(...,
groups=session_ids)` counts effective records instead (`clustered_counts`, Kish's design effect). Measured on
SIMMC fashion dev (`bench/guarantee.py --simmc-compare`, 1,000 dialog halves, four models): the design effect at
the chosen threshold is 1.00-1.04 and the grouped rule's error rate against the whole pool is within 0.004 of the
plain rule's (0.008-0.019), so the independent-records bound stays the default. With isotonic calibration the
candidates are the calibrated plateaus, whose grouping was fitted on the same labels, so the guarantee is
approximate there; temperature scaling and no calibration keep the ranking, and the rule sees the same candidate
sets as on raw scores.

`confidence == 0` keeps the old point rule (rule "max_recall_at_precision"): the highest recall whose
validation precision reaches the target. Whichever rule: if nothing passes, fall back to the F0.5-maximising
threshold and say so loudly (`reached=False`, a message and a warning) rather than silently shipping a model
below the precision the user asked for.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from irp.metrics import FloatArray, check_binary_scores

Rule = Literal["certified_precision", "max_recall_at_precision", "max_f05_fallback"]
RULES: tuple[str, ...] = ("certified_precision", "max_recall_at_precision", "max_f05_fallback")

# Float slack for comparisons of ratios: 4/5 must count as reaching 0.8 whatever the rounding.
_EPS = 1e-12
# Share of the validation records the certified scan's first step predicts positive (at least n_min).
_START_SHARE = 0.05


class PrecisionTargetWarning(UserWarning):
    """No validation threshold reaches the target precision; the F0.5 fallback was used."""


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen operating point and how it was chosen (precision/recall/F0.5 are on validation).

    `lower_bound` is the one-sided Clopper-Pearson lower bound of precision at the chosen threshold at
    `confidence` (NaN when `confidence == 0`: the point rule certifies nothing). `n`, `positives` and
    `predicted_positive` are the validation records, their positive labels, and those predicted positive.
    `design_effect`: by how much the grouping of the records (sessions) shrank the sample behind the bound at the
    chosen threshold (predicted / effective predicted; NaN when the records were not grouped).
    """

    threshold: float
    rule: Rule
    precision: float
    recall: float
    f05: float
    target_precision: float
    reached: bool
    message: str
    confidence: float = 0.0
    lower_bound: float = math.nan
    n: int = 0
    positives: int = 0
    predicted_positive: int = 0
    design_effect: float = math.nan


@dataclass(frozen=True)
class OperatingPoints:
    """Precision, recall and F0.5 at every candidate threshold, thresholds descending: each (G,)."""

    thresholds: FloatArray
    precision: FloatArray
    recall: FloatArray
    f05: FloatArray
    tp: FloatArray  # true positives at each threshold
    predicted: FloatArray  # records predicted positive (score >= threshold)
    # What the certified bound counts: tp and predicted, or their effective sizes when records come in groups
    # (`clustered_counts`); not integers then.
    tp_eff: FloatArray
    predicted_eff: FloatArray
    grouped: bool = False

    @property
    def design_effect(self) -> FloatArray:
        """(G,) predicted / predicted_eff: 1 where records are independent (or not grouped)."""
        return self.predicted / self.predicted_eff


def operating_points(
    y_true: npt.ArrayLike, scores: npt.ArrayLike, groups: npt.ArrayLike | None = None
) -> OperatingPoints:
    """Metrics when predicting `score >= t` for every distinct score t (descending).

    Every candidate predicts at least one example positive, so precision is always defined. `groups` (n,): a key
    per record (its session) when records of one key are correlated; the certified bound then counts effective
    records (`clustered_counts`).

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
    tp = tp.astype(np.float64)
    tp_eff, predicted_eff = tp, predicted
    if groups is not None:
        keys = np.asarray(groups)
        if keys.shape != y.shape:
            raise ValueError(f"groups must hold one key per record: {keys.shape} keys for {y.size} records")
        tp_eff, predicted_eff = clustered_counts(y_sorted, keys[order], end)
    return OperatingPoints(
        s_sorted[end], precision, recall, f05, tp, predicted, tp_eff, predicted_eff, grouped=groups is not None
    )



# ---- the certified bound -------------------------------------------------------------------------------------


def _check_confidence(confidence: float) -> float:
    """`confidence` as a float in [0, 1) (numpy scalars welcome); a ValueError that names the range otherwise."""
    try:
        value = float(confidence)
    except (TypeError, ValueError):
        raise ValueError(f"confidence must be a number in [0, 1), got {confidence!r}") from None
    if not 0.0 <= value < 1.0:  # NaN fails too
        raise ValueError(f"confidence must be in [0, 1) (0 = the uncertified point rule), got {confidence}")
    return value


def precision_lower_bounds(tp: npt.ArrayLike, predicted: npt.ArrayLike, confidence: float) -> FloatArray:
    """One-sided Clopper-Pearson lower bounds of precision, elementwise: (G,) -> (G,).

    lower = the Beta(tp, predicted - tp + 1) quantile at 1 - confidence; 0 where tp == 0. `confidence` must be
    in (0, 1) (at 0 nothing is certified: the point rule of `choose_threshold` needs no bound).

    >>> precision_lower_bounds([0, 10, 9], [5, 10, 10], 0.9).round(4).tolist()
    [0.0, 0.7943, 0.6632]
    """
    from scipy.stats import beta

    if not 0.0 < confidence < 1.0:
        raise ValueError(f"a lower confidence bound needs confidence in (0, 1), got {confidence}")
    k = np.asarray(tp, dtype=np.float64)
    m = np.asarray(predicted, dtype=np.float64)
    if np.any(k < 0) or np.any(k > m):
        raise ValueError("need 0 <= tp <= predicted")
    out = np.zeros(np.broadcast(k, m).shape)
    ok = k > 0
    out[ok] = beta.ppf(1.0 - confidence, k[ok], (m - k + 1)[ok])
    return out


def clustered_counts(
    y_sorted: npt.ArrayLike, groups_sorted: npt.ArrayLike, end: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Effective (true positives, predicted positives) at each cut, for records that come in correlated groups.

    `y_sorted` (n,) labels and `groups_sorted` (n,) group keys (a session, a dialog) in descending score order;
    `end` (G,) the last index of each candidate's predicted set. Turns of one dialog share a user, a topic and
    the products on screen, so their hits are not independent and a binomial bound on n of them claims more than
    the data holds. Kish's design effect of the precision (a ratio estimator over clusters) measures by how much:
    deff = V_cluster / V_binomial with V_cluster = C/(C-1) * sum_c (tp_c - p m_c)^2 / m^2 over the C groups in the
    predicted set (m_c records, tp_c hits, p = tp / m) and V_binomial = p (1 - p) / (m - 1), both with the same
    small-sample correction, so that groups of one record give deff = 1 exactly. The effective sample is
    m / deff records at the same precision (Korn & Graubard 1998, Survey Methodology 24(2)); deff is floored at 1
    so that grouping never tightens the bound. Returns (tp_eff, predicted_eff), each (G,), not integers.

    >>> tp, m = clustered_counts([1, 1, 0, 0, 1, 0], ["a", "a", "b", "b", "c", "d"], [1, 3, 5])
    >>> tp.round(3).tolist(), m.round(3).tolist()  # 2 of 2 (p = 1: deff 1); 2 of 4 in 2 dialogs; 3 of 6 in 4
    ([2.0, 0.667, 1.62], [2.0, 1.333, 3.24])
    >>> tp, m = clustered_counts([1, 1, 1, 0, 0, 0], ["a", "a", "a", "b", "b", "b"], [5])
    >>> m.round(3).tolist()  # two dialogs, all hits or none: the six turns weigh like about one record
    [1.2]
    """
    y = np.asarray(y_sorted, dtype=np.float64)
    _, codes = np.unique(np.asarray(groups_sorted), return_inverse=True)  # (n,) group index
    cut = np.asarray(end, dtype=np.int64)
    # Earlier records of the same group, for each record: its group's counts just before it joins the set.
    by_group = np.argsort(codes, kind="stable")  # (n,) positions grouped, score order kept within a group
    run_start = np.flatnonzero(np.r_[True, codes[by_group][1:] != codes[by_group][:-1]])
    run_of = np.repeat(run_start, np.diff(np.r_[run_start, y.size]))  # (n,) first slot of each slot's group
    cum_y = np.cumsum(y[by_group])
    prior_m, prior_t = np.empty(y.size), np.empty(y.size)
    prior_m[by_group] = np.arange(y.size) - run_of
    prior_t[by_group] = cum_y - y[by_group] - np.where(run_of > 0, cum_y[run_of - 1], 0.0)
    # Running sums over groups of m_c^2, tp_c m_c, tp_c^2 and the group count, as each record joins: (n,) each.
    sum_mm = np.cumsum(2 * prior_m + 1)[cut]
    sum_tm = np.cumsum(prior_t + y * prior_m + y)[cut]
    sum_tt = np.cumsum(2 * prior_t * y + y)[cut]
    clusters = np.cumsum(prior_m == 0)[cut].astype(np.float64)
    m = (cut + 1).astype(np.float64)
    tp = np.cumsum(y)[cut]
    p = tp / m
    spread = np.maximum(sum_tt - 2 * p * sum_tm + p * p * sum_mm, 0.0)  # sum_c (tp_c - p m_c)^2
    v_cluster = np.where(clusters > 1, clusters / np.maximum(clusters - 1, 1) * spread, 0.0) / (m * m)
    v_binomial = p * (1 - p) / np.maximum(m - 1, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        deff = np.where(v_binomial > 0, np.maximum(v_cluster / v_binomial, 1.0), 1.0)
    return tp / deff, m / deff


def precision_lower_bound(tp: int, predicted: int, confidence: float) -> float:
    """One-sided exact (Clopper-Pearson) lower confidence bound of precision from `tp` of `predicted`.

    With probability >= `confidence` the true precision is at least this. All 10 of 10 correct certify 0.794 at
    90 %; 22 of 22 are needed to certify 0.9 at 90 %.

    >>> round(precision_lower_bound(10, 10, 0.9), 4), round(precision_lower_bound(0, 4, 0.9), 4)
    (0.7943, 0.0)
    >>> precision_lower_bound(22, 22, 0.9) >= 0.9 > precision_lower_bound(21, 21, 0.9)
    True
    """
    return float(precision_lower_bounds([tp], [predicted], confidence)[0])


def min_certifiable(target_precision: float, confidence: float) -> int:
    """n_min: the fewest predicted positives that can certify `target_precision` (all of them correct).

    All-positive sets bound precision by delta^(1/n) (delta = 1 - confidence), so n_min = ceil(log delta / log target).

    >>> min_certifiable(0.8, 0.9), min_certifiable(0.9, 0.9), min_certifiable(0.8, 0.95)
    (11, 22, 14)
    """
    delta = 1.0 - confidence
    n = math.ceil(math.log(delta) / math.log(target_precision) - 1e-9)
    # guard against float rounding at the boundary: the bound must really reach the target
    while precision_lower_bound(n, n, confidence) < target_precision:
        n += 1
    return max(n, 1)


def default_min_predicted(n: int, target_precision: float, confidence: float) -> int:
    """Where the certified scan starts: max(n_min, ceil(5 % of n)) predicted positives (label-free).

    >>> default_min_predicted(3500, 0.8, 0.9), default_min_predicted(100, 0.8, 0.9)
    (175, 11)
    """
    return max(min_certifiable(target_precision, confidence), math.ceil(_START_SHARE * n))


def records_needed(precision: float, target_precision: float, confidence: float, limit: int = 10**8) -> int | None:
    """Predicted positives needed at validation precision `precision` for its bound to reach the target.

    None when `precision <= target` (no amount of data certifies it) or more than `limit` would be needed.

    >>> records_needed(0.9, 0.8, 0.9), records_needed(0.8, 0.8, 0.9)
    (38, None)
    """
    if precision <= target_precision:
        return None

    def ok(m: int) -> bool:
        return precision_lower_bound(int(math.floor(precision * m + 1e-9)), m, confidence) >= target_precision

    hi = 1
    while not ok(hi):
        hi *= 2
        if hi > limit:
            return None
    lo = hi // 2
    while hi - lo > 1:  # ok(hi), not ok(lo) (the bound grows with m up to rounding; close enough for a hint)
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def guarantee_sentence(choice: ThresholdChoice) -> str:
    """The one honest sentence on what the operating point promises (config.json, MODEL_CARD.md, GET /v1/model).

    >>> c = choose_threshold([1] * 30 + [0] * 70, [1.0] * 30 + [0.0] * 70, 0.8, 0.9)
    >>> guarantee_sentence(c).startswith("With probability at least 90 %, the precision of this threshold")
    True
    """
    if choice.rule == "certified_precision":
        return (
            f"With probability at least {choice.confidence * 100:g} %, the precision of this threshold on new "
            f"records drawn from the same distribution as the validation file is at least "
            f"{choice.target_precision:g} (certified lower bound {choice.lower_bound:.3f} from "
            f"{choice.predicted_positive} validation records predicted positive). It says nothing about drift: "
            f"re-check with `irp threshold` on fresh logs."
        )
    if choice.rule == "max_recall_at_precision":
        return (
            f"No guarantee: the threshold reaches precision {choice.target_precision:g} on the validation file "
            f"itself (point rule, confidence 0); new records may fall below it. Use --confidence to certify it."
        )
    return (
        f"No guarantee: the target precision {choice.target_precision:g} could not be "
        + ("certified" if choice.confidence > 0 else "reached")
        + " on the validation file; this is the F0.5-best threshold, and its precision on new records may be lower."
    )


# ---- the rule ----------------------------------------------------------------------------------------------


def choose_threshold(
    y_true: npt.ArrayLike,
    scores: npt.ArrayLike,
    target_precision: float = 0.8,
    confidence: float = 0.9,
    *,
    min_predicted: int | None = None,
    groups: npt.ArrayLike | None = None,
) -> ThresholdChoice:
    """The operating point: certified (`confidence > 0`) or the point rule (`confidence == 0`).

    `confidence > 0`: fixed-sequence testing with Clopper-Pearson lower bounds from the highest threshold that
    predicts at least `min_predicted` records positive (default `default_min_predicted`) downward; the last
    threshold before the first whose bound is below the target (module docstring). `confidence == 0`: the
    highest-recall threshold with validation precision >= target (ties: the higher threshold). Nothing passes:
    the F0.5-maximising threshold (ties: the higher one), `reached=False` and a `PrecisionTargetWarning`.
    `groups` (one key per record, e.g. its session): the bounds count effective records (`clustered_counts`),
    which certifies less when the hits of one group go together.

    >>> y = [1] * 40 + [0] * 10 + [1] * 10 + [0] * 40
    >>> s = np.linspace(1, 0, 100)
    >>> c = choose_threshold(y, s, target_precision=0.75, confidence=0.9)
    >>> c.rule, c.predicted_positive, round(c.lower_bound, 3), c.reached
    ('certified_precision', 47, 0.762, True)
    >>> c = choose_threshold([0, 1, 1, 0, 1], [0.1, 0.9, 0.8, 0.7, 0.3], target_precision=0.75, confidence=0)
    >>> c.threshold, c.rule, c.precision, c.recall, c.reached
    (0.3, 'max_recall_at_precision', 0.75, 1.0, True)
    """
    confidence = _check_confidence(confidence)
    if not 0.0 < target_precision <= 1.0:  # 1 is allowed: the point rule may reach it, certification falls back
        raise ValueError(f"target precision must be in (0, 1], got {target_precision}")
    if min_predicted is not None and min_predicted < 1:
        raise ValueError(f"min_predicted must be >= 1, got {min_predicted}")
    op = operating_points(y_true, scores, groups)
    n, positives = int(op.predicted[-1]), int(op.tp[-1])
    if confidence == 0:
        i, rule, message, bound = _point_rule(op, target_precision)
    else:
        i, rule, message, bound = _certified_rule(op, target_precision, confidence, min_predicted)
    if rule == "max_f05_fallback":
        warnings.warn(message, PrecisionTargetWarning, stacklevel=2)
    return ThresholdChoice(
        threshold=float(op.thresholds[i]),
        rule=rule,
        precision=float(op.precision[i]),
        recall=float(op.recall[i]),
        f05=float(op.f05[i]),
        target_precision=float(target_precision),
        reached=rule != "max_f05_fallback",
        message=message,
        confidence=confidence,
        lower_bound=bound,
        n=n,
        positives=positives,
        predicted_positive=int(op.predicted[i]),
        design_effect=float(op.design_effect[i]) if op.grouped else math.nan,
    )


def _f05_best(op: OperatingPoints) -> int:
    """First (= highest) threshold whose F0.5 ties the best, up to float noise in the ratio."""
    return int(np.flatnonzero(op.f05 >= op.f05.max() - _EPS)[0])


def _point_rule(op: OperatingPoints, target: float) -> tuple[int, Rule, str, float]:
    ok = op.precision >= target - _EPS
    if ok.any():
        # Recall never decreases as the threshold drops, so the max over feasible points is the
        # lowest feasible threshold; argmax returns the first (= highest) threshold at that recall.
        candidates = np.flatnonzero(ok)
        i = int(candidates[np.argmax(op.recall[candidates])])
        message = (
            f"threshold {op.thresholds[i]:.6g} reaches precision {op.precision[i]:.3f} >= {target:g} "
            f"on validation with recall {op.recall[i]:.3f}"
        )
        return i, "max_recall_at_precision", message, math.nan
    i = _f05_best(op)
    message = (
        f"TARGET PRECISION NOT REACHED: no threshold reaches precision >= {target:g} on "
        f"validation (best is {op.precision.max():.3f}); fell back to the F0.5-maximising threshold "
        f"{op.thresholds[i]:.6g} (precision {op.precision[i]:.3f}, recall {op.recall[i]:.3f})"
    )
    return i, "max_f05_fallback", message, math.nan


def _certified_fallback(op: OperatingPoints, confidence: float) -> tuple[int, float, str]:
    """The F0.5-best candidate, its precision lower bound, and the message's 'fell back to ...' clause."""
    i = _f05_best(op)
    bound = float(precision_lower_bounds([op.tp_eff[i]], [op.predicted_eff[i]], confidence)[0])
    clause = (
        f"fell back to the F0.5-maximising threshold {op.thresholds[i]:.6g} (precision {op.precision[i]:.3f}, "
        f"recall {op.recall[i]:.3f}, lower bound {bound:.3f})"
    )
    return i, bound, clause


def _certified_rule(
    op: OperatingPoints, target: float, confidence: float, min_predicted: int | None
) -> tuple[int, Rule, str, float]:
    n = int(op.predicted[-1])
    if target >= 1.0:  # every Clopper-Pearson bound is < 1: nothing is testable, fall back at once
        i, bound, fallback = _certified_fallback(op, confidence)
        message = (
            f"TARGET PRECISION NOT CERTIFIED: precision 1 can never be certified from a finite validation sample "
            f"(ask for a target below 1); {fallback}"
        )
        return i, "max_f05_fallback", message, bound
    start_count = default_min_predicted(n, target, confidence) if min_predicted is None else min_predicted
    # (G,) candidates descending; the first one predicting >= start_count records (the last one predicts all n)
    start = min(int(np.searchsorted(op.predicted, start_count, side="left")), op.predicted.size - 1)
    bounds = precision_lower_bounds(op.tp_eff[start:], op.predicted_eff[start:], confidence)  # (G - start,)
    failed = np.flatnonzero(bounds < target)
    passed = failed[0] if failed.size else bounds.size  # candidates start .. start + passed - 1 passed
    if passed > 0:
        i = start + int(passed) - 1
        message = (
            f"threshold {op.thresholds[i]:.6g} certifies precision >= {target:g} at {confidence * 100:g} % "
            f"confidence (lower bound {bounds[i - start]:.3f}; validation precision {op.precision[i]:.3f}, "
            f"recall {op.recall[i]:.3f}, {int(op.predicted[i])} of {n} records predicted positive"
            f"{_grouping_clause(op, i)})"
        )
        return i, "certified_precision", message, float(bounds[i - start])
    # Nothing passed, so the very first step (the start) failed: later steps are never tested once one fails.
    best = int(np.argmax(bounds))
    j = start + best
    hint = _data_hint(op, start, j, target, confidence, grows=min_predicted is None)
    i, fallback_bound, fallback = _certified_fallback(op, confidence)
    message = (
        f"TARGET PRECISION NOT CERTIFIED: no threshold certifies precision >= {target:g} at "
        f"{confidence * 100:g} % confidence (the scan starts at {int(op.predicted[start])} predicted positives, "
        f"validation precision {op.precision[start]:.3f}, lower bound {bounds[0]:.3f}, and stops there; the best "
        f"bound reached is {bounds[best]:.3f} at threshold {op.thresholds[j]:.6g}, validation precision "
        f"{op.precision[j]:.3f}); {hint}; {fallback}"
    )
    return i, "max_f05_fallback", message, fallback_bound


def _grouping_clause(op: OperatingPoints, i: int) -> str:
    """', worth N independent records (design effect D over sessions)' when the records were grouped."""
    if not op.grouped:
        return ""
    deff = float(op.design_effect[i])
    return f", worth {op.predicted_eff[i]:.0f} independent records: design effect {deff:.2f} over sessions"


def _data_hint(op: OperatingPoints, start: int, j: int, target: float, confidence: float, grows: bool) -> str:
    """Roughly how many validation positives would certify the target, from the precision at candidate j (the
    best bound): the first step must certify, and by default (`grows`) it holds max(n_min, 5 % of n) records, so a
    file of the same distribution with n' = needed / 5 % records gives it enough at that precision."""
    precision = float(op.precision[j])
    needed = records_needed(precision, target, confidence)
    if needed is not None and op.grouped:  # grouped records: each counts 1 / deff, so deff times as many
        needed = math.ceil(needed * float(op.design_effect[j]))
    if needed is None:
        return (
            f"validation precision {precision:.3f} there is not above the target, so more validation data would "
            f"not help: the model (or the target) has to change"
        )
    first = float(op.predicted[start])
    positives = int(op.tp[-1])
    if needed <= first:  # the first step is large enough at that precision: its own precision is the problem
        return (
            f"at precision {precision:.3f} the first step's {int(first)} records would suffice ({needed} needed), but "
            f"its own validation precision is {op.precision[start]:.3f}: the top-scored records are less precise "
            f"than those below them, which more validation data does not fix (check the model's ranking)"
        )
    if not grows:
        return (
            f"at precision {precision:.3f} the first step needs about {needed} predicted positives, but "
            f"min_predicted fixes it at {int(first)}: raise min_predicted"
        )
    scale = needed / (_START_SHARE * float(op.predicted[-1]))  # n' / n: the first step is 5 % of n'
    return (
        f"at precision {precision:.3f} the first step needs about {needed} predicted positives (it holds "
        f"{int(first)}), i.e. a validation file about {scale:.1f}x as large: roughly "
        f"{math.ceil(positives * scale):,} validation positives (this file has {positives:,})"
    )
