"""Off-policy evaluation of an offer policy on logged traffic: IPS, SNIPS, effective sample size, bootstrap.

The logging policy offered (`a_i` in {0, 1}) with a known propensity `mu_i = P(a_i = 1 | x_i)` (the server
logs it exactly, docs/loop.md). A candidate policy is deterministic: it offers `b_i` in {0, 1}. An outcome
is only observed for the action that was taken, so each record is reweighted by

    w_i = [a_i == b_i] / P_logging(b_i | x_i),   P_logging(1 | x) = mu,  P_logging(0 | x) = 1 - mu

and E[mean(w * r)] is the candidate's mean reward as if it had been deployed (IPS, unbiased when every
candidate action has a logged probability > 0). SNIPS divides by mean(w) instead of 1: slightly biased,
much lower variance. A record where the candidate takes an action the logging policy never takes
(`P_logging(b_i) = 0`) has no support: no reweighting can recover it, and the estimators refuse.

Quantities (`policy_estimates`), with y = the proxy label (carousel tap), acc = offer accepted:
- offer rate          E[b]                 exact (b is known on every record), IPS mean(w b), SNIPS
- precision of offers E[b y] / E[b]        IPS mean(w b y) / mean(b), SNIPS sum(w b y) / sum(w b)
- accepts per 1,000   1000 E[b acc]        IPS 1000 mean(w b acc), SNIPS 1000 sum(w b acc) / sum(w)
- live precision      E[b acc] / E[b]      IPS mean(w b acc) / mean(b), SNIPS sum(w b acc) / sum(w b)
  (accepted / offers: what `irp serve` reports as the live precision of offers, docs/serving.md)

Every function is pure numpy; intervals come from a nonparametric percentile bootstrap, over records or, when
the records come in clusters (sessions: a user's turns share a propensity, so they are not independent), over
whole clusters (`bootstrap_means(..., clusters=)`): resampling records then understates the variance by the
design effect, and the intervals are too narrow.

An estimation interval covers the candidate's value on the population the log was drawn from. A live check
of the deployed candidate measures it again on a finite fresh sample, with its own noise: the interval for
that measurement is `prediction_interval` (estimate +- z sqrt(se_ope^2 + se_live^2), docs/loop.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

ArrayLike = np.ndarray | list
METRICS = ("offer_rate", "precision", "accepts_per_1000", "live_precision")  # the report's quantities


def _bool(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=bool)


def _float(x: ArrayLike) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def logged_action_probability(candidate: ArrayLike, propensity: ArrayLike) -> np.ndarray:
    """P(the logging policy took the candidate's action) per record: mu where b = 1, else 1 - mu.

    >>> logged_action_probability([True, False, True], [0.9, 0.9, 0.0]).round(3).tolist()
    [0.9, 0.1, 0.0]
    """
    mu = _float(propensity)
    return np.where(_bool(candidate), mu, 1.0 - mu)


def unsupported(candidate: ArrayLike, propensity: ArrayLike) -> np.ndarray:
    """Records where the candidate's action had logged probability 0 (bool mask).

    >>> unsupported([True, False, False, True], [0.0, 1.0, 0.0, 0.1]).tolist()
    [True, True, False, False]
    """
    return logged_action_probability(candidate, propensity) <= 0.0


def ips_weights(candidate: ArrayLike, logged: ArrayLike, propensity: ArrayLike) -> np.ndarray:
    """Importance weights w_i = [a_i == b_i] / P_logging(b_i); raises ValueError on unsupported records.

    >>> ips_weights([True, True, False], [True, False, False], [0.5, 0.5, 0.2]).tolist()
    [2.0, 0.0, 1.25]
    """
    b, a = _bool(candidate), _bool(logged)
    p = logged_action_probability(b, propensity)
    if b.shape != a.shape:
        raise ValueError(f"candidate and logged actions differ in shape: {b.shape} vs {a.shape}")
    bad = p <= 0.0
    if bad.any():
        raise ValueError(f"{int(bad.sum())} of {len(b)} candidate decisions have no support in the log")
    if np.any((a != b) & (p >= 1.0)) or np.any((a == b) & (p <= 0.0)):
        raise ValueError("a logged action contradicts its propensity (offered with propensity 0, or held with 1)")
    return np.where(a == b, 1.0 / p, 0.0)


def ips(rewards: ArrayLike, weights: ArrayLike) -> float:
    """Inverse propensity scoring: mean(w * r).

    >>> ips([1.0, 0.0, 1.0], [2.0, 0.0, 1.0])
    1.0
    """
    r, w = _float(rewards), _float(weights)
    return float(np.mean(w * r)) if len(r) else float("nan")


def snips(rewards: ArrayLike, weights: ArrayLike) -> float:
    """Self-normalised IPS: sum(w * r) / sum(w) (nan when every weight is 0).

    >>> snips([1.0, 0.0, 1.0], [2.0, 0.0, 1.0])
    1.0
    >>> snips([1.0, 0.0], [1.0, 3.0])
    0.25
    """
    r, w = _float(rewards), _float(weights)
    total = float(w.sum())
    return float((w * r).sum() / total) if total > 0 else float("nan")


def effective_sample_size(weights: ArrayLike) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2: how many unweighted records the estimate is worth.

    >>> effective_sample_size([1.0, 1.0, 1.0, 1.0]), effective_sample_size([4.0, 0.0, 0.0, 0.0])
    (4.0, 1.0)
    """
    w = _float(weights)
    sq = float((w * w).sum())
    return float(w.sum() ** 2 / sq) if sq > 0 else 0.0


def cluster_codes(keys: ArrayLike) -> np.ndarray:
    """Dense integer codes 0..G-1 for per-record cluster keys (session ids, user ids, any hashable).

    >>> cluster_codes(["s2", "s1", "s2", "s3"]).tolist()
    [1, 0, 1, 2]
    """
    if isinstance(keys, np.ndarray) and keys.dtype.kind in "iu":  # already codes (a streamed log's sessions)
        _, codes = np.unique(keys, return_inverse=True)
    else:
        _, codes = np.unique(np.asarray([str(k) for k in keys]), return_inverse=True)
    return codes.astype(np.int64)


def bootstrap_means(columns: np.ndarray, n_boot: int = 1000, seed: int = 0, chunk: int = 100,
                    clusters: ArrayLike | None = None) -> np.ndarray:
    """Column means of `n_boot` bootstrap resamples of the rows of `columns` (n, k) -> (n_boot, k).

    Resampling rows is a multinomial count per row, so each resample's means are one (counts @ columns) / n.
    With `clusters` (n,) keys (e.g. session ids), the G clusters are resampled whole instead (G draws with
    replacement): each resample's means are (counts @ cluster_sums) / (counts @ cluster_sizes), so records
    of one cluster enter or leave together and the spread includes their correlation.

    >>> x = np.array([[0.0], [1.0]])
    >>> m = bootstrap_means(x, n_boot=400, seed=1)
    >>> m.shape, set(np.unique(m).tolist()) <= {0.0, 0.5, 1.0}, 0.4 < float(m.mean()) < 0.6
    ((400, 1), True, True)
    >>> y = np.array([[0.0], [0.0], [0.0], [1.0]])  # cluster "a" = three zeros, cluster "b" = one 1
    >>> c = bootstrap_means(y, n_boot=400, seed=1, clusters=["a", "a", "a", "b"])
    >>> sorted(set(np.unique(c).tolist()))  # (a, a) -> 0, (a, b) -> 1/4, (b, b) -> 1
    [0.0, 0.25, 1.0]
    """
    columns = _float(columns)
    n = len(columns)
    if n == 0:
        raise ValueError("cannot bootstrap zero records")
    if columns.ndim == 1:
        columns = columns[:, None]
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, columns.shape[1]))
    if clusters is not None:
        codes = cluster_codes(clusters)
        if len(codes) != n:
            raise ValueError(f"clusters has {len(codes)} keys for {n} records")
        g = int(codes.max()) + 1
        sums = np.stack([np.bincount(codes, weights=col, minlength=g) for col in columns.T], axis=1)  # (G, k)
        sizes = np.bincount(codes, minlength=g).astype(np.float64)  # (G,)
    else:
        g, sums, sizes = n, columns, None
    chunk = max(1, min(chunk, 10_000_000 // g))  # resamples drawn at once: ~160 MB of counts, whatever the log size
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        idx = rng.integers(0, g, size=(m, g)) + (np.arange(m) * g)[:, None]
        counts = np.bincount(idx.ravel(), minlength=m * g).reshape(m, g)
        out[start:start + m] = counts @ sums / (n if sizes is None else (counts @ sizes)[:, None])
    return out


def bootstrap_interval(columns: np.ndarray, statistic: Callable[[np.ndarray], np.ndarray], n_boot: int = 1000,
                       level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of `statistic(means)` over bootstrap resamples; `statistic` maps (..., k) column
    means to (...) values (nan resamples are ignored).

    >>> x = np.random.default_rng(0).normal(5.0, 1.0, size=(2000, 1))
    >>> lo, hi = bootstrap_interval(x, lambda m: m[..., 0], n_boot=500)
    >>> lo < 5.0 < hi and hi - lo < 0.2
    True
    """
    values = np.asarray(statistic(bootstrap_means(columns, n_boot, seed)), dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha))


def prediction_interval(estimate: float, se_estimate: float, n_live: float, design_effect: float = 1.0,
                        scale: float = 1.0, level: float = 0.95) -> tuple[float, float]:
    """Interval for a LIVE measurement of a proportion on `n_live` fresh units, given an estimate of it.

    The live value is the population value plus its own sampling noise; the estimate is the population
    value plus the estimator's error; the two are independent, so (normal approximation)

        live - estimate ~ N(0, se_estimate^2 + se_live^2),
        se_live^2 = design_effect * scale^2 * q (1 - q) / n_live,   q = estimate / scale

    (binomial noise of n_live units, inflated by the design effect of clustered units), and the interval is
    estimate +- z_{(1+level)/2} sqrt(se_estimate^2 + se_live^2), clipped to [0, scale] (a small sample can
    stretch the normal approximation past what a proportion can be). `scale` is 1 for a share (precision:
    n_live = offers) and 1000 for a count per 1,000 requests (n_live = requests).

    >>> lo, hi = prediction_interval(0.7, 0.0, 1900)  # no estimation error: the binomial spread alone
    >>> round(hi - 0.7, 4), round(1.959964 * (0.7 * 0.3 / 1900) ** 0.5, 4)
    (0.0206, 0.0206)
    >>> [round(v, 1) for v in prediction_interval(85.0, 4.0, 10_000, scale=1000.0)]
    [75.4, 94.6]
    >>> prediction_interval(0.1, 0.2, 30)[0]
    0.0
    """
    from statistics import NormalDist

    if not n_live > 0:
        raise ValueError(f"n_live must be > 0, got {n_live}")
    q = min(max(estimate / scale, 0.0), 1.0)
    var_live = design_effect * scale * scale * q * (1.0 - q) / n_live
    half = NormalDist().inv_cdf(0.5 + level / 2.0) * float(np.sqrt(se_estimate ** 2 + var_live))
    return float(max(estimate - half, 0.0)), float(min(estimate + half, scale))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def policy_estimates(candidate: ArrayLike, logged: ArrayLike, propensity: ArrayLike, label: ArrayLike,
                     accepted: ArrayLike, n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                     clusters: ArrayLike | None = None, cluster_name: str = "cluster") -> dict[str, Any]:
    """Offer rate, precision of offers (tap), accepts per 1,000 requests and live precision (accepted / offers)
    of a deterministic candidate (IPS and SNIPS, with bootstrap intervals) and of the logging policy
    (measured), from one log.

    `accepted` is read only where the log offered (use 0 or nan elsewhere). Raises ValueError when some
    candidate decision lacks support (see `unsupported`). With `clusters` (per-record keys, e.g. session
    ids) the bootstrap resamples whole clusters (`resampled` = `cluster_name`), and `design_effect` gives,
    per quantity, the clustered bootstrap variance over the record-level one (a second, record-level
    bootstrap with the same seed); without, records are resampled (`resampled` = "record"). Every
    estimate also has its bootstrap standard deviation (`*_se`, `logging.*.se`).

    >>> est = policy_estimates([1, 0, 1, 0], [1, 0, 0, 1], [0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0], [1, 0, 0, 0],
    ...                        n_boot=50)
    >>> est["offer_rate"]["exact"], est["offer_rate"]["ips"], est["precision"]["snips"]
    (0.5, 0.5, 1.0)
    >>> est["logging"]["offer_rate"]["value"], est["logging"]["accepts_per_1000"]["value"]
    (0.5, 250.0)
    """
    b, a = _bool(candidate), _bool(logged)
    y = _float(label)
    acc = np.nan_to_num(_float(accepted), nan=0.0) * a  # an answer exists only where the log offered
    w = ips_weights(b, a, propensity)
    wb = w * b
    # Per-record columns whose bootstrap means feed every estimator (k = 8).
    cols = np.column_stack([w, wb, wb * y, wb * acc, b, a, a * y, a * acc])
    W, WB, WBY, WBA, B, A, AY, AA = range(8)

    def estimators(m: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "offer_rate.exact": m[..., B],
            "offer_rate.ips": m[..., WB],
            "offer_rate.snips": _ratio(m[..., WB], m[..., W]),
            "precision.ips": _ratio(m[..., WBY], m[..., B]),
            "precision.snips": _ratio(m[..., WBY], m[..., WB]),
            "accepts_per_1000.ips": 1000.0 * m[..., WBA],
            "accepts_per_1000.snips": 1000.0 * _ratio(m[..., WBA], m[..., W]),
            "live_precision.ips": _ratio(m[..., WBA], m[..., B]),
            "live_precision.snips": _ratio(m[..., WBA], m[..., WB]),
            "logging.offer_rate": m[..., A],
            "logging.precision": _ratio(m[..., AY], m[..., A]),
            "logging.accepts_per_1000": 1000.0 * m[..., AA],
            "logging.live_precision": _ratio(m[..., AA], m[..., A]),
        }

    point = {k: float(v) for k, v in estimators(cols.mean(axis=0)).items()}
    boot = estimators(bootstrap_means(cols, n_boot, seed, clusters=clusters))
    alpha = (1.0 - level) / 2.0

    def finite(values: np.ndarray) -> np.ndarray:
        return values[np.isfinite(values)]

    def ci(key: str) -> list[float]:
        v = finite(boot[key])
        return [float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))] if len(v) else [float("nan")] * 2

    def se(key: str) -> float:
        v = finite(boot[key])
        return float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")

    out: dict[str, Any] = {"n": int(len(b)), "level": level, "n_boot": n_boot,
                           "resampled": "record" if clusters is None else cluster_name,
                           "n_resampled_units": int(len(b)) if clusters is None else int(len(np.unique(
                               cluster_codes(clusters))))}
    for metric in METRICS:
        out[metric] = {}
        for method in ("exact", "ips", "snips"):
            key = f"{metric}.{method}"
            if key in point:
                out[metric][method] = point[key]
                out[metric][f"{method}_ci"] = ci(key)
                out[metric][f"{method}_se"] = se(key)
    out["logging"] = {m: {"value": point[f"logging.{m}"], "ci": ci(f"logging.{m}"), "se": se(f"logging.{m}")}
                      for m in METRICS}
    if clusters is not None:  # how much the clustering widens each interval (variance ratio)
        flat = estimators(bootstrap_means(cols, n_boot, seed))
        out["design_effect"] = {}
        for key in boot:
            v_rec = finite(flat[key])
            var_rec = float(np.var(v_rec, ddof=1)) if len(v_rec) > 1 else float("nan")
            out["design_effect"][key] = se(key) ** 2 / var_rec if var_rec > 0 else float("nan")
    out["ess"] = effective_sample_size(w)  # all records (offer rate, accepts)
    out["ess_offers"] = effective_sample_size(wb)  # the records that carry the candidate's offers (precision)
    out["candidate_offers"] = int(b.sum())
    out["matched_offers"] = int((b & a).sum())  # logged offers the candidate agrees with: the precision data
    out["max_weight"] = float(w.max()) if len(w) else float("nan")
    return out
