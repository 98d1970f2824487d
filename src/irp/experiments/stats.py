"""Statistics of one ablation cell: the operating point chosen on validation, test metrics per seed, mean ± std
over seeds, and the paired bootstrap of a row against its table's reference row.

The comparison is between *cell values*: a row's value is the mean over its seeds of a test metric, each seed at
its own validation threshold; the bootstrap resamples the test examples once per replicate and recomputes that
seed mean for the row and for the reference on the same resample. The interval therefore covers test-set
sampling (the noise of the examples), not the variation between seeds, which the ± shows.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

# The resampling of irp.metrics (blocks of per-record draw counts), so that a row and its reference see exactly
# the resamples `irp.metrics.paired_bootstrap` would draw.
from irp.metrics import _bootstrap_weights, bootstrap_difference
from irp.threshold import PrecisionTargetWarning, choose_threshold, operating_points

METRICS: tuple[str, ...] = ("precision", "recall", "f05", "ap")
OperatingPoint = Literal["f05", "target"]
Scored = tuple[npt.NDArray[np.floating], float]  # (test scores [n], threshold) of one seed


def pick_threshold(
    y_valid: npt.ArrayLike, s_valid: npt.ArrayLike, rule: OperatingPoint = "f05", target_precision: float = 0.8
) -> tuple[float, bool]:
    """(threshold, fell_back) chosen on validation.

    `f05`: the threshold that maximises F0.5 (ties: the higher one), so precision and recall both move between
    ablation rows. `target`: the product rule, `irp.threshold.choose_threshold` as `irp train` applies it (the
    highest recall at `target_precision`, certified at its default confidence); `fell_back` is True when no
    threshold reached it and the F0.5 one was used.

    >>> pick_threshold([0, 1, 1, 0, 1], [0.1, 0.9, 0.8, 0.7, 0.3])
    (0.8, False)
    >>> y, s = [1] * 40 + [0] * 10 + [1] * 10 + [0] * 40, np.linspace(1, 0, 100)
    >>> t, fell_back = pick_threshold(y, s, "target", 0.75)
    >>> round(t, 4), fell_back, pick_threshold(y, s, "target", 0.95)[1]
    (0.5354, False, True)
    """
    if rule == "target":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrecisionTargetWarning)
            choice = choose_threshold(y_valid, s_valid, target_precision)
        return choice.threshold, not choice.reached
    if rule != "f05":
        raise ValueError(f"operating point must be f05 or target, got {rule!r}")
    op = operating_points(y_valid, s_valid)
    best = int(np.flatnonzero(op.f05 >= op.f05.max() - 1e-12)[0])
    return float(op.thresholds[best]), False


def point_metrics(y: npt.ArrayLike, scores: npt.ArrayLike, threshold: float) -> dict[str, float]:
    """Precision, recall, F0.5 at `threshold` and AP; NaN where undefined (e.g. nothing predicted positive).

    >>> point_metrics([0, 1, 1, 0], [0.2, 0.9, 0.4, 0.6], 0.5)
    {'precision': 0.5, 'recall': 0.5, 'f05': 0.5, 'ap': 0.8333333333333333}
    """
    yy = np.asarray(y, dtype=np.float64)
    return resample_seed_means(yy, [(np.asarray(scores, dtype=np.float64), threshold)], n_boot=0).point


@dataclass(frozen=True)
class MeanStd:
    """Mean and sample standard deviation of one metric over seeds (NaN seeds left out)."""

    mean: float
    std: float
    n: int

    def format(self, digits: int = 3) -> str:
        """'0.812 ± 0.010'; one seed shows the value alone; no defined value shows 'n/a'.

        >>> MeanStd(0.8123, 0.0101, 3).format(), MeanStd(0.5, 0.0, 1).format(), MeanStd(math.nan, math.nan, 0).format()
        ('0.812 ± 0.010', '0.500', 'n/a')
        """
        if self.n == 0 or math.isnan(self.mean):
            return "n/a"
        return f"{self.mean:.{digits}f}" + (f" ± {self.std:.{digits}f}" if self.n > 1 else "")


def mean_std(values: Sequence[float]) -> MeanStd:
    """Mean and sample standard deviation (ddof 1; 0 for a single value) of the defined values.

    >>> mean_std([0.7, 0.8, 0.9])
    MeanStd(mean=0.8, std=0.1, n=3)
    >>> mean_std([0.5, float("nan")]), mean_std([]).n
    (MeanStd(mean=0.5, std=0.0, n=1), 0)
    """
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return MeanStd(math.nan, math.nan, 0)
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return MeanStd(round(float(v.mean()), 12), round(std, 12), int(v.size))


def format_diff(d: dict[str, float] | None, digits: int = 3) -> str:
    """A bootstrap comparison as '+0.012 [-0.003, +0.027] p=0.12'; '' for none (the reference row).

    >>> format_diff({"diff": 0.0123, "lo": -0.003, "hi": 0.027, "p_value": 0.1234})
    '+0.012 [-0.003, +0.027] p=0.12'
    >>> format_diff({"diff": -0.05, "lo": -0.08, "hi": -0.02, "p_value": 0.0009})
    '-0.050 [-0.080, -0.020] p<0.001'
    """
    if not d or d.get("diff") is None or math.isnan(d["diff"]):
        return "" if not d else "n/a"
    lo, hi, p = d.get("lo"), d.get("hi"), d.get("p_value")
    ci = "" if lo is None or hi is None or math.isnan(lo) else f" [{lo:+.{digits}f}, {hi:+.{digits}f}]"
    p_text = "" if p is None or math.isnan(p) else (" p<0.001" if p < 0.001 else f" p={p:.2g}")
    return f"{d['diff']:+.{digits}f}{ci}{p_text}"


class SeedCurve:
    """One seed's test scores, sorted once, for metrics on many bootstrap resamples at a time.

    A resample is a row of weights (how often each test record was drawn). Thresholded metrics are weighted
    sums (matrix-vector products); AP needs the cumulative weights in score order, evaluated at the end of
    each positive's run of tied scores (so ties count as in `irp.metrics.average_precision`).
    """

    def __init__(self, y: np.ndarray, scores: np.ndarray, threshold: float) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        self.order = np.argsort(-scores, kind="stable")  # (n,)
        s, ys = scores[self.order], y[self.order]
        run_end = np.append(np.flatnonzero(s[1:] != s[:-1]), s.size - 1)  # last index of each tie run
        end_of = np.repeat(run_end, np.diff(np.append(-1, run_end)))  # (n,) end of the run of each position
        self.ys = ys.astype(np.float32)
        self.positives = np.flatnonzero(ys == 1)  # sorted positions of positive records
        self.positive_end = end_of[self.positives]
        pred = scores >= threshold
        self.pred = pred.astype(np.float32)  # (n,) original order
        self.true_pred = (pred & (y == 1)).astype(np.float32)

    def metrics(self, w: np.ndarray, pos: np.ndarray) -> dict[str, np.ndarray]:
        """Precision, recall, F0.5 and AP on each resample row of `w` (b, n); pos = w @ y. Each (b,).

        Resamples use float32 weights (counts are exact, half the memory traffic of float64)."""
        tp, predicted = w @ self.true_pred, w @ self.pred
        fp, fn = predicted - tp, pos - tp
        out = {
            "precision": _div(tp, predicted),
            "recall": _div(tp, pos),
            "f05": _div(1.25 * tp, 1.25 * tp + 0.25 * fn + fp),
        }
        ws = w[:, self.order]  # (b, n) in score order
        drawn = np.cumsum(ws, axis=1)[:, self.positive_end]  # (b, P) records at or above each positive's score
        hits = np.cumsum(ws * self.ys, axis=1)[:, self.positive_end]  # (b, P) positives among them
        precision_at = np.nan_to_num(_div(hits, drawn), nan=0.0)  # 0 only where the positive has weight 0
        out["ap"] = _div((ws[:, self.positives] * precision_at).sum(axis=1), pos)
        return out


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


@dataclass(frozen=True)
class Resampled:
    """A row's seed-mean metrics on the test set (`point`) and on each bootstrap resample (`boot`, (n_boot,))."""

    point: dict[str, float]
    boot: dict[str, np.ndarray]


def resample_seed_means(y: npt.ArrayLike, runs: Sequence[Scored], n_boot: int = 1000, seed: int = 0) -> Resampled:
    """The mean over seeds of each metric, on the test set and on `n_boot` resamples of its records (the same
    resamples for the same `seed` and size, whatever the scores: that is what pairs two rows)."""
    yy = np.asarray(y, dtype=np.float64)
    if not runs:
        raise ValueError("a row needs at least one scored seed")
    curves = [SeedCurve(yy, np.asarray(s), float(t)) for s, t in runs]
    y32 = yy.astype(np.float32)

    def seed_mean(w: np.ndarray) -> dict[str, np.ndarray]:
        pos = w @ (y32 if w.dtype == np.float32 else yy)
        per_seed = [c.metrics(w, pos) for c in curves]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a mean with a NaN seed stays NaN
            return {m: np.mean([p[m] for p in per_seed], axis=0) for m in METRICS}

    point = {m: float(v[0]) for m, v in seed_mean(np.ones((1, yy.size))).items()}  # float64: exact point values
    blocks = [seed_mean(w.astype(np.float32)) for w in _bootstrap_weights(yy.size, n_boot, seed)] if yy.size else []
    boot = {m: np.concatenate([b[m] for b in blocks]) if blocks else np.empty(0) for m in METRICS}
    return Resampled(point, boot)


def compare(row: Resampled, reference: Resampled) -> dict[str, dict[str, float]]:
    """Per metric: `diff` (row - reference), its 95 % percentile interval `lo`..`hi` over the paired resamples,
    and a two-sided bootstrap `p_value` for no difference (+1 correction, never exactly 0)."""
    out: dict[str, dict[str, float]] = {}
    for m in METRICS:
        out[m] = {"diff": row.point[m] - reference.point[m], **bootstrap_difference(row.boot[m] - reference.boot[m])}
    return out


def paired_seed_bootstrap(
    y: npt.ArrayLike, row: Sequence[Scored], reference: Sequence[Scored], n_boot: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Per metric: `diff` = seed-mean(row) - seed-mean(reference) on the test set, its 95 % percentile interval
    `lo`..`hi` over paired resamples of the test examples, and a two-sided bootstrap `p_value` for no difference.

    With one seed on each side this is `irp.metrics.paired_bootstrap` (same resamples for the same seed).

    >>> y = np.array([0, 1, 0, 1, 1, 0, 1, 0] * 5)
    >>> good = y * 0.6 + np.linspace(0, 0.3, 40)
    >>> bad = np.linspace(0, 1, 40)
    >>> r = paired_seed_bootstrap(y, [(good, 0.5)], [(bad, 0.5)], n_boot=300)
    >>> r["ap"]["diff"] > 0 and r["ap"]["lo"] > 0 and r["ap"]["p_value"] < 0.05
    True
    """
    return compare(resample_seed_means(y, row, n_boot, seed), resample_seed_means(y, reference, n_boot, seed))
