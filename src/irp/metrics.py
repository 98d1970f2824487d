"""Evaluation metrics: pure, typed numpy functions (torchmetrics-functional style).

Conventions used everywhere in this module:
- `y_true` is a 1-D array of 0/1 labels, `scores` a 1-D array of finite real scores of the same
  length (probabilities or logits), and a prediction is positive when `score >= threshold`.
- A metric that is undefined on the given data returns NaN and emits an `UndefinedMetricWarning`
  that says why (precision with no predicted positive, recall / AP with no positive label, ROC AUC
  with a single class) instead of raising: a report on a tiny or skewed slice must still come out.

Every metric is computed by one vectorised kernel, `_curve_metrics`, over a matrix of per-example
*weights* of shape (B, n): row b holds how often each example was drawn in bootstrap resample b (a
row of ones is the plain point estimate). Scores are sorted once, so a bootstrap needs no per-resample
sort: 1000 resamples of 10K scores take well under a second.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

Metric = Literal["precision", "recall", "f05", "ap", "roc_auc"]
METRICS: tuple[Metric, ...] = ("precision", "recall", "f05", "ap", "roc_auc")

# Bootstrap resamples are processed in blocks of about this many (resample, example) cells, which
# bounds memory (a few (block, n) float64 arrays) whatever n_boot and n are.
_BLOCK_CELLS = 2_000_000


class UndefinedMetricWarning(RuntimeWarning):
    """A metric is undefined on the given data (it is reported as NaN); the message says why."""


# ---- input checks ---------------------------------------------------------------------------------


def check_binary_scores(y_true: ArrayLike, scores: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Validated (labels, scores) as float64 arrays of shape (n,)."""
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"y_true and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if y.shape != s.shape:
        raise ValueError(f"y_true and scores differ in length: {y.shape[0]} != {s.shape[0]}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must contain only 0 and 1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite (no NaN or inf)")
    return y.astype(np.float64), s


def _warn_undefined(name: str, value: float, reason: str) -> float:
    if math.isnan(value):
        warnings.warn(f"{name} is undefined ({reason}); reported as NaN", UndefinedMetricWarning, stacklevel=3)
    return value


# ---- the kernel -----------------------------------------------------------------------------------


class _Sorted:
    """One model's scores sorted once (descending), split into positives and negatives.

    The kernel never touches the full (B, n) weight matrix in sorted order: it cumsums the weights
    of the positives (in score order) and of the negatives separately, and reads curve points at the
    ends of runs of tied scores (ties share one threshold) through the index arrays built here.
    """

    def __init__(self, y: FloatArray, s: FloatArray) -> None:
        order = np.argsort(-s, kind="stable")  # (n,)
        self.s = s[order]  # (n,) descending
        self.y = y[order]  # (n,)
        self.pos_order = order[self.y == 1]  # (P,) original indices of the positives, best score first
        self.neg_order = order[self.y == 0]  # (N,)
        # pos_upto[k] = positives among the top-k sorted examples: (n + 1,)
        self.pos_upto = np.concatenate([[0], np.cumsum(self.y, dtype=np.int64)])
        end = np.append(np.flatnonzero(self.s[1:] != self.s[:-1]), self.s.size - 1) + 1  # (G,) exclusive
        self.group_end = end - 1  # (G,) last sorted index of each run of tied scores
        start = np.concatenate([[0], end[:-1]])  # (G,)
        p_start, p_end = self.pos_upto[start], self.pos_upto[end]  # (G,) positives before / through the run
        n_start, n_end = start - p_start, end - p_end  # (G,) negatives before / through the run
        has_pos, has_neg = p_end > p_start, n_end > n_start
        # AP only changes at runs holding a positive; AUC only accrues at runs holding a negative.
        self.ap_idx = (p_start[has_pos], p_end[has_pos], n_end[has_pos])
        self.auc_idx = (p_start[has_neg], p_end[has_neg], n_start[has_neg], n_end[has_neg])

    def n_at_or_above(self, threshold: float) -> int:
        """How many sorted examples are predicted positive (`score >= threshold`)."""
        return int(np.searchsorted(-self.s, -threshold, side="right"))


def _safe_div(num: npt.NDArray[Any], den: npt.NDArray[Any]) -> FloatArray:
    """num / den elementwise as float64, NaN where den == 0 (no warning)."""
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _cumsum0(w: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Cumulative sums along axis 1 with a leading 0 column: (B, m) -> (B, m + 1)."""
    out = np.zeros((w.shape[0], w.shape[1] + 1), dtype=w.dtype)
    np.cumsum(w, axis=1, out=out[:, 1:])
    return out


def _curve_metrics(srt: _Sorted, w: npt.NDArray[Any], threshold: float | None) -> dict[str, FloatArray]:
    """All metrics for each row of example weights `w` (B, n), given in original example order.

    Returns a dict of arrays of shape (B,): precision, recall, f05 (at `threshold`, NaN when it is
    None), ap and roc_auc (threshold-free). Undefined values are NaN.
    """
    b = w.shape[0]
    cp = _cumsum0(w[:, srt.pos_order])  # (B, P + 1) weight of the top-j positives
    cn = _cumsum0(w[:, srt.neg_order])  # (B, N + 1) weight of the top-j negatives
    pos, neg = cp[:, -1], cn[:, -1]  # (B,)

    out: dict[str, FloatArray] = {}
    if threshold is None:
        out["precision"] = out["recall"] = out["f05"] = np.full(b, np.nan)
    else:
        k = srt.n_at_or_above(threshold)
        kp = int(srt.pos_upto[k])
        tp, fp = cp[:, kp], cn[:, k - kp]  # (B,)
        fn = pos - tp
        out["precision"] = _safe_div(tp, tp + fp)
        out["recall"] = _safe_div(tp, pos)
        # F-beta (beta = 0.5) from counts: defined whenever there is a positive label or prediction.
        out["f05"] = _safe_div(1.25 * tp, 1.25 * tp + 0.25 * fn + fp)

    # AP = sum over runs of (R_end - R_start) * P_end (sklearn's definition, no interpolation). A run
    # whose examples all drew weight 0 has no recall step, so its undefined precision counts as 0.
    p_start, p_end, n_end = srt.ap_idx
    tps, fps = cp[:, p_end], cn[:, n_end]  # (B, runs with a positive)
    precision = np.nan_to_num(_safe_div(tps, tps + fps), nan=0.0)
    out["ap"] = _safe_div(((tps - cp[:, p_start]) * precision).sum(axis=1), pos)
    # ROC AUC = P(score of a positive > score of a negative) + 1/2 P(tie) (Mann-Whitney U): each
    # negative in a run beats the positives after it, ties with the positives in its own run.
    p_start, p_end, n_start, n_end = srt.auc_idx
    d_neg = cn[:, n_end] - cn[:, n_start]  # (B, runs with a negative)
    above = cp[:, p_start] + (cp[:, p_end] - cp[:, p_start]) / 2  # positives above + half the tied ones
    out["roc_auc"] = _safe_div((d_neg * above).sum(axis=1), pos * neg)
    return out


def _point(y: FloatArray, s: FloatArray, threshold: float | None) -> dict[str, float]:
    """Metrics on the data as given (one row of unit weights)."""
    m = _curve_metrics(_Sorted(y, s), np.ones((1, y.size), dtype=np.int64), threshold)
    return {k: float(v[0]) for k, v in m.items()}


def _bootstrap_weights(n: int, n_boot: int, seed: int) -> Iterator[npt.NDArray[np.int64]]:
    """Blocks of resample counts, each (b, n): row r counts how often example i was drawn."""
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_CELLS // max(n, 1))
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))  # (b, n) drawn example indices
        flat = (idx + np.arange(b)[:, None] * n).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n)  # int64 counts: exact cumulative sums


def _percentile_ci(values: FloatArray, level: float = 0.95) -> list[float]:
    """[lo, hi] percentile interval over the defined (non-NaN) bootstrap values."""
    v = values[~np.isnan(values)]
    if v.size == 0:
        return [math.nan, math.nan]
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(v, [tail, 100 - tail])
    return [float(lo), float(hi)]


# ---- public metrics -------------------------------------------------------------------------------


def confusion_counts(y_true: ArrayLike, scores: ArrayLike, threshold: float) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) when predicting `score >= threshold`.

    >>> confusion_counts([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.1], threshold=0.5)
    (1, 1, 1, 1)
    """
    y, s = check_binary_scores(y_true, scores)
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    return tp, fp, fn, int(y.size - tp - fp - fn)


def precision_recall_f05(y_true: ArrayLike, scores: ArrayLike, threshold: float) -> tuple[float, float, float]:
    """(precision, recall, F0.5) when predicting `score >= threshold`; NaN (with a warning) when undefined.

    >>> precision_recall_f05([1, 0, 1, 1], [0.9, 0.8, 0.7, 0.1], threshold=0.5)
    (0.6666666666666666, 0.6666666666666666, 0.6666666666666666)
    """
    y, s = check_binary_scores(y_true, scores)
    m = _point(y, s, threshold)
    p = _warn_undefined("precision", m["precision"], "no example is predicted positive")
    r = _warn_undefined("recall", m["recall"], "no positive label")
    f = _warn_undefined("f05", m["f05"], "no positive label and no positive prediction")
    return p, r, f


def fbeta(precision: float, recall: float, beta: float = 0.5) -> float:
    """F-beta from precision and recall (beta < 1 weighs precision more); 0 when both are 0.

    >>> round(fbeta(0.8, 0.5), 4)
    0.7143
    """
    b2 = beta * beta
    den = b2 * precision + recall
    return (1 + b2) * precision * recall / den if den > 0 else 0.0


def average_precision(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Average precision, sum_k (R_k - R_{k-1}) P_k over distinct thresholds (= scikit-learn's).

    >>> average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.8333333333333333
    """
    y, s = check_binary_scores(y_true, scores)
    return _warn_undefined("ap", _point(y, s, None)["ap"], "no positive label")


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve (ties count 1/2); NaN with a warning when only one class is present.

    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    y, s = check_binary_scores(y_true, scores)
    return _warn_undefined("roc_auc", _point(y, s, None)["roc_auc"], "needs both a positive and a negative label")


def precision_at_recall(y_true: ArrayLike, scores: ArrayLike, min_recall: float) -> tuple[float, float]:
    """(best precision, its threshold) among thresholds whose recall is >= `min_recall`.

    Compares models at a matched recall (e.g. the paper's 60.4 %). Among thresholds with equal best
    precision the highest is returned. NaN with a warning when there is no positive label.

    >>> precision_at_recall([0, 1, 0, 1, 1], [0.1, 0.9, 0.8, 0.7, 0.2], min_recall=0.6)
    (0.75, 0.2)
    """
    y, s = check_binary_scores(y_true, scores)
    if not 0.0 <= min_recall <= 1.0:
        raise ValueError(f"min_recall must be in [0, 1], got {min_recall}")
    srt = _Sorted(y, s)
    pos = srt.y.sum()
    if pos == 0:
        _warn_undefined("precision_at_recall", math.nan, "no positive label")
        return math.nan, math.nan
    tps = np.cumsum(srt.y)[srt.group_end]  # (G,)
    precision = tps / (srt.group_end + 1)
    ok = tps / pos >= min_recall - 1e-12  # float slack so that recall 3/5 counts as 0.6
    best = int(np.flatnonzero(ok)[np.argmax(precision[ok])])  # first = highest threshold
    return float(precision[best]), float(srt.s[srt.group_end[best]])


def evaluation_report(
    y_true: ArrayLike, scores: ArrayLike, threshold: float, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Precision / recall / F0.5 at `threshold`, AP and ROC AUC, with 95 % percentile bootstrap CIs.

    Keys: precision, recall, f05, ap, roc_auc, threshold, n, positives, ci (metric -> [lo, hi]).
    Undefined metrics are NaN (with an `UndefinedMetricWarning`); bootstrap resamples where a metric
    is undefined are left out of its interval.

    >>> r = evaluation_report([0, 1, 0, 1, 1, 0], [0.2, 0.9, 0.6, 0.7, 0.3, 0.1], 0.5, n_boot=200)
    >>> r["precision"], r["recall"], r["n"], r["positives"]
    (0.6666666666666666, 0.6666666666666666, 6, 3)
    >>> sorted(r["ci"]) == sorted(["precision", "recall", "f05", "ap", "roc_auc"])
    True
    """
    y, s = check_binary_scores(y_true, scores)
    if n_boot < 0:
        raise ValueError(f"n_boot must be >= 0, got {n_boot}")
    point = _point(y, s, threshold)
    _warn_undefined("precision", point["precision"], "no example is predicted positive")
    _warn_undefined("recall", point["recall"], "no positive label")
    _warn_undefined("f05", point["f05"], "no positive label and no positive prediction")
    _warn_undefined("ap", point["ap"], "no positive label")
    _warn_undefined("roc_auc", point["roc_auc"], "needs both a positive and a negative label")

    srt = _Sorted(y, s)
    boot: dict[str, list[FloatArray]] = {m: [] for m in METRICS}
    if y.size:
        for w in _bootstrap_weights(y.size, n_boot, seed):
            for m, v in _curve_metrics(srt, w, threshold).items():
                boot[m].append(v)
    ci = {m: _percentile_ci(np.concatenate(boot[m]) if boot[m] else np.empty(0)) for m in METRICS}
    return {
        **{m: point[m] for m in METRICS},
        "threshold": float(threshold),
        "n": int(y.size),
        "positives": int(y.sum()),
        "ci": ci,
    }


def paired_bootstrap(
    y_true: ArrayLike,
    scores_a: ArrayLike,
    threshold_a: float | None,
    scores_b: ArrayLike,
    threshold_b: float | None,
    metric: Metric = "precision",
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap of `metric(a) - metric(b)` for two models scored on the same examples.

    Both models are evaluated on the same resamples, so the interval reflects the difference
    between the models rather than the sampling noise of the test set twice. Returns `diff` (on the
    full data; positive = a is better), its 95 % percentile interval `lo`, `hi`, and a two-sided
    `p_value` for "no difference": 2 x the smaller share of resampled differences on either side
    of 0, with a +1 correction so that it is never exactly 0. Thresholds may be None for ap/roc_auc.

    >>> y = [0, 1, 0, 1, 1, 0, 1, 0]
    >>> good = [0.1, 0.9, 0.2, 0.8, 0.7, 0.3, 0.6, 0.4]
    >>> bad = [0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4]
    >>> r = paired_bootstrap(y, good, None, bad, None, metric="roc_auc", n_boot=500)
    >>> r["diff"] > 0 and r["lo"] > 0 and r["p_value"] < 0.05
    True
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if metric in ("precision", "recall", "f05") and (threshold_a is None or threshold_b is None):
        raise ValueError(f"{metric} needs both thresholds")
    y, sa = check_binary_scores(y_true, scores_a)
    _, sb = check_binary_scores(y_true, scores_b)
    srt_a, srt_b = _Sorted(y, sa), _Sorted(y, sb)
    diff = _point(y, sa, threshold_a)[metric] - _point(y, sb, threshold_b)[metric]

    diffs: list[FloatArray] = []
    if y.size:
        for w in _bootstrap_weights(y.size, n_boot, seed):
            diffs.append(_curve_metrics(srt_a, w, threshold_a)[metric] - _curve_metrics(srt_b, w, threshold_b)[metric])
    d = np.concatenate(diffs) if diffs else np.empty(0)
    return {"diff": float(diff), **bootstrap_difference(d)}


def bootstrap_difference(diffs: FloatArray) -> dict[str, float]:
    """95 % percentile interval (`lo`, `hi`) of bootstrap differences and a two-sided `p_value` for no
    difference (+1 correction, never exactly 0); NaN resamples are dropped.

    >>> r = bootstrap_difference(np.array([0.1, 0.2, 0.3, np.nan]))
    >>> round(r["p_value"], 2), r["lo"] > 0
    (0.5, True)
    """
    d = diffs[~np.isnan(diffs)]
    lo, hi = _percentile_ci(d)
    if not d.size:
        return {"lo": lo, "hi": hi, "p_value": math.nan}
    below = (np.sum(d <= 0) + 1) / (d.size + 1)
    above = (np.sum(d >= 0) + 1) / (d.size + 1)
    return {"lo": lo, "hi": hi, "p_value": float(min(1.0, 2 * min(below, above)))}


def nan_to_none(obj: Any) -> Any:
    """A copy of nested dicts/lists/tuples with NaN floats replaced by None, for strict JSON.

    >>> nan_to_none({"ap": float("nan"), "ci": {"ap": [float("nan"), 0.5]}})
    {'ap': None, 'ci': {'ap': [None, 0.5]}}
    """
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_none(v) for v in obj]
    return obj


# ---- verdicts -------------------------------------------------------------------------------------

Verdict = Literal["met", "consistent", "missed"]
VERDICT_NOTE = (
    "met: the 95 % interval of the measured precision lies at or above the target; consistent: the interval "
    "holds the target (this test set cannot tell); missed: the whole interval lies below the target."
)


def target_verdict(precision: float | None, interval: ArrayLike | None, target: float) -> dict[str, Any]:
    """Whether a measured precision meets a target, judged on its 95 % interval rather than the point estimate:
    `met` (lower bound >= target), `consistent` (the interval holds the target) or `missed` (upper bound < target,
    or nothing predicted positive: precision undefined). Returns the verdict with the estimate and interval it
    came from (NaN as None).

    >>> target_verdict(0.691, [0.66, 0.73], 0.7)["verdict"]
    'consistent'
    >>> target_verdict(0.75, [0.71, 0.79], 0.7)["verdict"], target_verdict(0.6, [0.55, 0.65], 0.7)["verdict"]
    ('met', 'missed')
    >>> target_verdict(float("nan"), [float("nan"), float("nan")], 0.7)["reason"]
    'nothing was predicted positive: precision is undefined'
    """
    point = None if precision is None or math.isnan(precision) else float(precision)
    bounds = [math.nan, math.nan] if interval is None else [math.nan if v is None else float(v) for v in interval]
    lo, hi = (point, point) if point is not None and any(math.isnan(b) for b in bounds) else bounds
    out: dict[str, Any] = {"verdict": "missed", "target": float(target), "precision": point,
                           "interval": nan_to_none([lo, hi]), "level": 0.95, "reason": None}
    if point is None:
        out["reason"] = "nothing was predicted positive: precision is undefined"
    elif lo >= target:
        out["verdict"] = "met"
    elif hi >= target:
        out["verdict"] = "consistent"
    return out


def verdict_fields(report: dict[str, Any], target: float) -> dict[str, Any]:
    """The keys a test report (`evaluation_report`) gains for a precision target: `target_met` (the verdict:
    met / consistent / missed) and `target_verdict` (verdict, target, precision, interval, level, reason)."""
    verdict = target_verdict(report["precision"], (report.get("ci") or {}).get("precision"), target)
    return {"target_met": verdict["verdict"], "target_verdict": verdict}
