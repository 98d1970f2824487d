"""Calibrated probabilities: a monotone map from the network's logits to P(image-seeking), fitted on validation.

A model trained with a precision loss is over-confident (the soft-precision term pushes scores to 0 and 1), so its
sigmoid is not a probability a product team can read. The fitted map is stored as a JSON-able dict in config.json
under "calibration" and applied in Python after the network (or the ONNX graph), so exported graphs stay valid
when `irp threshold` re-fits it:

    {"method": "temperature", "temperature": T}       p = sigmoid(logit / T), T > 0 fitted by NLL
    {"method": "isotonic", "x": [...], "y": [...]}    p = interp(sigmoid(logit), x, y), clipped at the ends
    {"method": "none"}  (or no "calibration" key)     p = sigmoid(logit)  (artifacts from before calibration)

Both maps are monotone non-decreasing, so ranking, AP and ROC AUC are unchanged; the operating point is chosen
on the calibrated scale. Calibration quality is measured by `expected_calibration_error` (equal-width bins) and
`brier_score`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

CalibrationMethod = Literal["temperature", "isotonic", "none"]
METHODS: tuple[str, ...] = ("temperature", "isotonic", "none")

# log T is searched in [-_LOG_T_MAX, _LOG_T_MAX]: T from 0.0067 to 148, far beyond any sane network.
_LOG_T_MAX = 5.0


def sigmoid(logits: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Numerically stable logistic function in float64: (n,) -> (n,).

    >>> sigmoid([-1000.0, 0.0, 1000.0]).tolist()
    [0.0, 0.5, 1.0]
    """
    z = np.asarray(logits, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])  # z < 0: exp cannot overflow
    out[~pos] = ez / (1.0 + ez)
    return out


def _check(labels: npt.ArrayLike, values: npt.ArrayLike, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated (labels, values) as float64 arrays of shape (n,), n >= 1."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if y.shape != v.shape:
        raise ValueError(f"labels and {name} differ in length: {y.size} != {v.size}")
    if y.size == 0:
        raise ValueError(f"no examples: cannot use empty labels and {name}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must contain only 0 and 1")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return y, v


def temperature_nll(log_t: float, logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary NLL of sigmoid(logits / exp(log_t)): softplus(z) - y z, stable for large |z|.

    >>> round(temperature_nll(0.0, np.array([0.0]), np.array([1.0])), 6) == round(math.log(2), 6)
    True
    """
    z = logits / math.exp(log_t)
    return float(np.mean(np.logaddexp(0.0, z) - labels * z))


def fit_temperature(logits: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """The temperature T > 0 minimising the NLL of sigmoid(logit / T) (bounded 1-D search on log T).

    Over-confident logits (here the true ones scaled x5) get T near 5:

    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(0, 2, 20000)
    >>> y = (rng.random(20000) < sigmoid(z)).astype(float)
    >>> round(fit_temperature(5 * z, y))
    5
    """
    from scipy.optimize import minimize_scalar

    y, z = _check(labels, logits, "logits")
    if y.min() == y.max():
        raise ValueError("temperature scaling needs both classes in the labels (the NLL optimum is T -> 0 or inf)")
    res = minimize_scalar(
        temperature_nll, bounds=(-_LOG_T_MAX, _LOG_T_MAX), args=(z, y), method="bounded", options={"xatol": 1e-6}
    )
    return float(math.exp(res.x))


def fit_calibration(method: CalibrationMethod, logits: npt.ArrayLike, labels: npt.ArrayLike) -> dict[str, Any]:
    """Fit the calibration map on validation logits (n,) and 0/1 labels (n,); a JSON-able dict for config.json.

    >>> fit_calibration("none", [0.0, 1.0], [0, 1])
    {'method': 'none'}
    >>> cal = fit_calibration("isotonic", [-2.0, -1.0, 1.0, 2.0], [0, 1, 0, 1])
    >>> cal["method"], [round(v, 3) for v in cal["x"]], cal["y"]  # the middle pair pooled to 0.5; plateaus guarded
    ('isotonic', [0.119, 0.119, 0.269, 0.731, 0.881, 0.881], [0.0, 0.0, 0.5, 0.5, 1.0, 1.0])
    """
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}")
    y, z = _check(labels, logits, "logits")
    if method == "none":
        return {"method": "none"}
    if y.min() == y.max():
        raise ValueError(f"{method} calibration needs both classes in the validation labels")
    if method == "temperature":
        return {"method": "temperature", "temperature": fit_temperature(z, y)}
    from sklearn.isotonic import IsotonicRegression

    # Fitted on the raw probability scale (bounded, so the knots stay readable); sklearn keeps only the knots
    # needed for exact linear interpolation, which np.interp reproduces.
    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(sigmoid(z), y)
    x, y_knots = guard_plateaus(iso.X_thresholds_, iso.y_thresholds_)
    return {"method": "isotonic", "x": [float(v) for v in x], "y": [float(v) for v in y_knots]}


# Each plateau is widened by this much on both sides, in logit space: 100x the float32 noise between runtimes.
_KNOT_GUARD = 1e-4


def guard_plateaus(x: npt.ArrayLike, y: npt.ArrayLike, guard: float = _KNOT_GUARD) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic knots (k,) with every plateau (a run of equal y) widened by `guard` on each side in logit space,
    never past the midpoint to the next plateau; returns new (x, y).

    Isotonic knots sit at validation scores, and the segment between two plateaus is as steep as the gap between
    two adjacent scores. A record scoring exactly at a plateau's end (a repeated query) would sit on a cliff edge:
    the float noise between torch and ONNX (~1e-6 in logit) could move it off the plateau and across a threshold
    set at the plateau's value. Widened, the plateau keeps it in every runtime; the validation scores themselves
    keep exactly the values isotonic regression gave them (so does the threshold chosen on them).

    >>> gx, gy = guard_plateaus([0.2, 0.5, 0.7], [0.1, 0.6, 0.6])
    >>> gx.round(6).tolist(), gy.tolist()  # the single-point plateau at 0.2 gets a right edge too
    ([0.2, 0.200016, 0.499975, 0.7], [0.1, 0.1, 0.6, 0.6])
    """
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.size < 2:
        return xs.copy(), ys.copy()
    with np.errstate(divide="ignore"):
        logit = np.log(xs) - np.log1p(-xs)  # (k,); -inf / +inf at 0 / 1
    cut = np.flatnonzero(np.diff(ys) != 0) + 1
    blocks = np.split(np.arange(xs.size), cut)  # runs of equal y, in order
    out_x: list[float] = []
    out_y: list[float] = []
    for b, idx in enumerate(blocks):
        lo, hi = logit[idx[0]], logit[idx[-1]]
        if b > 0 and np.isfinite(lo):  # widen left, at most halfway to the previous plateau
            lo = max(lo - guard, (logit[blocks[b - 1][-1]] + lo) / 2)
        if b < len(blocks) - 1 and np.isfinite(hi):  # widen right, at most halfway to the next one
            hi = min(hi + guard, (hi + logit[blocks[b + 1][0]]) / 2)
        edges = [lo] if lo == hi else [lo, hi]
        out_x += [float(v) for v in sigmoid(edges)]
        out_y += [float(ys[idx[0]])] * len(edges)
    return np.asarray(out_x), np.asarray(out_y)


def calibration_of(meta_or_calibration: dict[str, Any] | None) -> dict[str, Any]:
    """The calibration dict of an artifact's config.json meta, or the calibration dict itself; {"method": "none"}
    when absent (artifacts written before calibration existed).

    >>> calibration_of({"threshold": {"value": 0.5}})
    {'method': 'none'}
    >>> calibration_of({"calibration": {"method": "temperature", "temperature": 2.0}})["temperature"]
    2.0
    """
    if not meta_or_calibration:
        return {"method": "none"}
    if "method" in meta_or_calibration:
        return meta_or_calibration
    return meta_or_calibration.get("calibration") or {"method": "none"}


def calibrate_logits(meta_or_calibration: dict[str, Any] | None, logits: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Calibrated probabilities (n,) float32 from logits (n,), with a config.json meta or a calibration dict.

    >>> [round(float(v), 4) for v in calibrate_logits({"method": "temperature", "temperature": 2.0}, [0.0, 2.0])]
    [0.5, 0.7311]
    >>> calibrate_logits({}, [0.0]).tolist()  # no calibration: plain sigmoid
    [0.5]
    >>> p = calibrate_logits({"method": "isotonic", "x": [0.2, 0.8], "y": [0.1, 0.9]}, [-9.0, 0.0, 9.0])
    >>> p.dtype, [round(float(v), 4) for v in p]  # clipped to the end knots' values
    (dtype('float32'), [0.1, 0.5, 0.9])
    """
    cal = calibration_of(meta_or_calibration)
    z = np.asarray(logits, dtype=np.float64)
    method = cal.get("method", "none")
    if method in (None, "none"):
        p = sigmoid(z)
    elif method == "temperature":
        t = float(cal["temperature"])
        if not (math.isfinite(t) and t > 0):
            raise ValueError(f"calibration temperature must be a positive finite number, got {t}")
        p = sigmoid(z / t)
    elif method == "isotonic":
        x, y = np.asarray(cal["x"], dtype=np.float64), np.asarray(cal["y"], dtype=np.float64)
        if x.size == 0 or x.shape != y.shape:
            raise ValueError("isotonic calibration needs non-empty knots x and y of equal length")
        p = np.interp(sigmoid(z), x, y)  # constant beyond the end knots: out_of_bounds="clip"
    else:
        raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")
    return p.astype(np.float32)


def amplification(meta_or_calibration: dict[str, Any] | None) -> float:
    """How much the calibration map can magnify a difference in raw probability sigmoid(logit), at least 1: the
    tolerance of ONNX parity on calibrated probabilities scales with it (irp.export).

    Temperature: 1 / T when T < 1 (the slope of sigmoid(z / T) at z = 0, its steepest point, against the raw
    sigmoid's); T >= 1 flattens the centre, where the raw differences are largest, so 1. Isotonic: the steepest
    segment between knots (possibly large: two adjacent validation scores with different pooled rates).

    >>> [amplification({"method": "temperature", "temperature": t}) for t in (0.5, 2.0)]
    [2.0, 1.0]
    >>> amplification({"method": "isotonic", "x": [0.2, 0.3, 0.8], "y": [0.1, 0.1, 0.9]})
    1.6
    >>> amplification(None)
    1.0
    """
    cal = calibration_of(meta_or_calibration)
    method = cal.get("method", "none")
    if method == "temperature":
        return max(1.0, 1.0 / float(cal["temperature"]))
    if method == "isotonic":
        x, y = np.asarray(cal["x"], dtype=np.float64), np.asarray(cal["y"], dtype=np.float64)
        dx = np.diff(x)
        slopes = np.diff(y)[dx > 0] / dx[dx > 0]
        return float(max(1.0, slopes.max(initial=0.0)))
    return 1.0


# ---- calibration quality ----------------------------------------------------------------------------------


def reliability_bins(labels: npt.ArrayLike, probs: npt.ArrayLike, bins: int = 15) -> dict[str, np.ndarray]:
    """Equal-width bins on [0, 1]: per bin (bins,) the count, mean predicted probability and positive rate
    (NaN for empty bins). A probability of exactly 1 falls in the last bin.

    >>> b = reliability_bins([0, 1, 1, 1], [0.1, 0.2, 0.9, 1.0], bins=2)
    >>> b["count"].tolist(), b["mean_prob"].tolist(), b["frac_pos"].tolist()
    ([2, 2], [0.15000000000000002, 0.95], [0.5, 1.0])
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    y, p = _check(labels, probs, "probabilities")
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("probabilities must lie in [0, 1]")
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)  # (n,) bin of each example
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(idx, weights=p, minlength=bins) / count
        frac_pos = np.bincount(idx, weights=y, minlength=bins) / count
    return {"edges": np.linspace(0.0, 1.0, bins + 1), "count": count, "mean_prob": mean_prob, "frac_pos": frac_pos}


def expected_calibration_error(labels: npt.ArrayLike, probs: npt.ArrayLike, bins: int = 15) -> float:
    """ECE: sum over equal-width bins of (share of examples) x |positive rate - mean probability|.

    >>> round(expected_calibration_error([0, 1, 1, 1], [0.1, 0.2, 0.9, 1.0], bins=2), 6)  # .5*.35 + .5*.05
    0.2
    >>> expected_calibration_error([0, 1], [0.5, 0.5])
    0.0
    """
    b = reliability_bins(labels, probs, bins)
    filled = b["count"] > 0
    weights = b["count"][filled] / b["count"].sum()
    return float(np.sum(weights * np.abs(b["frac_pos"][filled] - b["mean_prob"][filled])))


def brier_score(labels: npt.ArrayLike, probs: npt.ArrayLike) -> float:
    """Mean squared error of the probabilities against the 0/1 labels (lower is better; 0.25 for a coin).

    >>> brier_score([0, 1, 1], [0.0, 0.5, 1.0])
    0.08333333333333333
    """
    y, p = _check(labels, probs, "probabilities")
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("probabilities must lie in [0, 1]")
    return float(np.mean((p - y) ** 2))
