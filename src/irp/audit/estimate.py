"""Design-based estimates from an audit: how often a tap is visual intent, and the reverse, with honest intervals.

Notation: stratum h has N_h records in the log and n_h reviewed ones with a decided verdict; y_i in [0, 1] is
a record's share of "yes" among its yes/no verdicts (0 or 1 with one annotator; 0.5 when two disagree);
m_h is the mean of y over the stratum's reviewed records. Strata are by label (tap / no tap, plus the
model's score band), so every stratum is all taps or all no-taps.

- proxy precision P(visual | tap) = sum_{h tap} N_h m_h / sum_{h tap} N_h: a stratified mean (the
  denominator is known from the log);
- proxy recall P(tap | visual) = sum_{h tap} N_h m_h / sum_h N_h m_h: a ratio of two estimated totals.

Variances by linearisation (Taylor): Var(m_h) = (1 - n_h/N_h) s_h^2 / n_h (SRSWOR within the stratum), and
an estimator g(m) gets Var = sum_h (dg/dm_h)^2 Var(m_h). s_h^2 is the sample variance of y, floored at
p~(1 - p~) with p~ = (sum y + 1) / (n_h + 2): a stratum where every reviewer said yes still has
uncertainty (without the floor its variance would be 0 and the interval would shrink to a point).
The 95 % interval is built on the logit scale (it stays inside [0, 1] and is not symmetric near the
bounds, where Wald intervals under-cover) and mapped back; at an estimate of exactly 0 or 1 it is the
exact binomial interval of the reviewed records.

'Can't tell' is reported per stratum, never silently dropped. The main estimate treats it as missing
at random within the stratum (such records leave the stratum's mean); the report adds the two
extreme readings (every 'can't tell' a yes / a no) so a reader sees how much it could matter.

Agreement where a record was seen by several people: Krippendorff's alpha (nominal, yes/no; 'can't
tell' counts as no value) over all annotators, and Cohen's kappa for each pair.

The promise: an artifact certifies tap precision pi >= L at confidence C above its threshold t. Among
the records at or above t, precision of visual intent = pi * a + (1 - pi) * b with a = P(visual | tap,
score >= t) and b = P(visual | no tap, score >= t), both estimated from the strata above t. The report
gives (1) that translation at pi = L with a delta-method interval; (2) a certified lower bound:
min(L a_lo + (1 - L) b_lo, a_lo) holds with confidence >= C - 0.05 (union bound: pi >= L with C, and
a >= a_lo, b >= b_lo jointly with 0.95 from one-sided 97.5 % bounds); (3) the direct estimate of
P(visual | score >= t) on the audited log with its interval. It assumes the audited log comes from the
distribution the threshold was certified on.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

from irp.audit.store import AuditFolder, Verdict

CantTell = Literal["exclude", "yes", "no"]
Z95 = NormalDist().inv_cdf(0.975)


@dataclass(frozen=True)
class StratumData:
    """One stratum's design sizes and reviewed values (y per decided record)."""

    name: str
    label: int
    above_threshold: bool | None
    population: int
    sampled: int
    y: np.ndarray  # (n_decided,) share of yes per decided record
    cant_tell: int  # records whose verdicts were all "can't tell"
    unreviewed: int  # sampled records with no verdict yet

    @property
    def n(self) -> int:
        return int(self.y.size)

    @property
    def mean(self) -> float:
        return float(self.y.mean()) if self.y.size else math.nan

    @property
    def var_mean(self) -> float:
        """Var(m_h) under SRSWOR, with the floored stratum variance (module docstring)."""
        n = self.y.size
        if n == 0:
            return math.nan
        p_tilde = (self.y.sum() + 1.0) / (n + 2.0)
        s2 = max(float(self.y.var(ddof=1)) if n > 1 else 0.0, p_tilde * (1.0 - p_tilde))
        return (1.0 - n / self.population) * s2 / n


def logit_interval(p: float, se: float, n: int, z: float = Z95) -> tuple[float, float]:
    """A (1 - 2 Phi(-z)) interval for a proportion p with standard error se, built on the logit scale.

    At p = 0 or 1 the logit has no slope to linearise (and se comes only from the variance floor), so the
    interval is the exact binomial (Clopper-Pearson) one of n reviewed records: [(Phi(-z))^(1/n), 1] at p = 1.

    >>> [round(x, 4) for x in logit_interval(0.8, 0.04, 100)]
    [0.7102, 0.8672]
    >>> [round(x, 4) for x in logit_interval(1.0, 0.01, 100)], [round(x, 4) for x in logit_interval(0.0, 0.01, 100)]
    ([0.9638, 1.0], [0.0, 0.0362])
    """
    if math.isnan(p) or math.isnan(se) or n <= 0:
        return (math.nan, math.nan)
    tail = NormalDist().cdf(-z)
    if p >= 1.0:
        return (tail ** (1.0 / n), 1.0)
    if p <= 0.0:
        return (0.0, 1.0 - tail ** (1.0 / n))
    centre, half = math.log(p / (1 - p)), z * se / (p * (1 - p))
    return (1 / (1 + math.exp(-(centre - half))), 1 / (1 + math.exp(-(centre + half))))


def _estimate(value: float, var: float, n: int) -> dict[str, Any]:
    se = math.sqrt(var) if var >= 0 else math.nan
    lo, hi = logit_interval(value, se, n)
    return {"estimate": value, "se": se, "ci95": [lo, hi], "n_reviewed": n}


def stratified_mean(strata: list[StratumData]) -> dict[str, Any]:
    """sum N_h m_h / sum N_h over `strata` (the domain's size is known), with its Taylor interval."""
    total = sum(s.population for s in strata)
    if not strata or any(s.n == 0 for s in strata):
        return _undefined(strata, "a stratum of this domain has no decided verdict yet")
    value = sum(s.population * s.mean for s in strata) / total
    var = sum((s.population / total) ** 2 * s.var_mean for s in strata)
    return _estimate(value, var, sum(s.n for s in strata))


def stratified_ratio(numerator: list[StratumData], denominator: list[StratumData]) -> dict[str, Any]:
    """sum_{A} N_h m_h / sum_{B} N_h m_h for A within B, with its linearised (Taylor) interval."""
    if not denominator or any(s.n == 0 for s in denominator):
        return _undefined(denominator, "a stratum has no decided verdict yet")
    in_a = {s.name for s in numerator}
    total_b = sum(s.population * s.mean for s in denominator)
    if total_b <= 0:
        return _undefined(denominator, "no reviewed record was judged visual: the ratio is undefined")
    ratio = sum(s.population * s.mean for s in numerator) / total_b
    # dR/dm_h = N_h (1[h in A] - R) / total_B
    var = sum((s.population * ((s.name in in_a) - ratio) / total_b) ** 2 * s.var_mean for s in denominator)
    return _estimate(ratio, var, sum(s.n for s in denominator))


def _undefined(strata: list[StratumData], why: str) -> dict[str, Any]:
    return {"estimate": math.nan, "se": math.nan, "ci95": [math.nan, math.nan],
            "n_reviewed": sum(s.n for s in strata), "note": why}


def record_values(verdicts: list[Verdict], cant_tell: CantTell = "exclude") -> dict[str, float | None]:
    """Per record id: share of yes among its yes/no verdicts; None when all its verdicts are 'can't tell'
    (or, with cant_tell="yes"/"no", that reading of them).

    >>> v = [Verdict("a", "x", "yes", 1, 0), Verdict("a", "y", "no", 1, 0), Verdict("b", "x", "cant_tell", 2, 0)]
    >>> record_values(v), record_values(v, "yes")
    ({'a': 0.5, 'b': None}, {'a': 0.5, 'b': 1.0})
    """
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # yes, no, cant_tell
    for v in verdicts:
        counts[v.id][("yes", "no", "cant_tell").index(v.verdict)] += 1
    out: dict[str, float | None] = {}
    for record_id, (yes, no, unsure) in counts.items():
        if cant_tell == "yes":
            yes += unsure
        elif cant_tell == "no":
            no += unsure
        out[record_id] = yes / (yes + no) if yes + no else None
    return out


def strata_data(folder: AuditFolder, cant_tell: CantTell = "exclude") -> list[StratumData]:
    values = record_values(folder.all_verdicts(), cant_tell)
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for record_id, entry in folder.design["records"].items():
        by_stratum[entry["stratum"]].append(record_id)
    out = []
    for s in folder.design["strata"]:
        ids = by_stratum[s["name"]]
        decided = [values[i] for i in ids if values.get(i) is not None]
        out.append(StratumData(
            s["name"], s["label"], s.get("above_threshold"), s["population"], s["sampled"],
            np.asarray(decided, dtype=np.float64),
            cant_tell=sum(1 for i in ids if i in values and values[i] is None),
            unreviewed=sum(1 for i in ids if i not in values),
        ))
    return out


def proxy_quality(strata: list[StratumData]) -> dict[str, dict[str, Any]]:
    """Proxy precision P(visual | tap), recall P(tap | visual) and the visual-intent rate P(visual)."""
    taps = [s for s in strata if s.label == 1]
    return {
        "precision": stratified_mean(taps),
        "recall": stratified_ratio(taps, strata),
        "visual_rate": stratified_mean(strata),
    }


# ---- agreement ---------------------------------------------------------------------------------------------


def krippendorff_alpha(units: list[list[str]]) -> float:
    """Krippendorff's alpha for nominal values; units with fewer than two values are not pairable.

    >>> krippendorff_alpha([["yes", "yes"], ["no", "no"], ["yes", "no"], ["no", "no"]])
    0.5333333333333333
    """
    pairable = [u for u in units if len(u) >= 2]
    values = sorted({v for u in pairable for v in u})
    if len(values) < 2:
        return math.nan
    k = {v: i for i, v in enumerate(values)}
    coincidence = np.zeros((len(values), len(values)))
    for u in pairable:
        for a, b in ((a, b) for i, a in enumerate(u) for j, b in enumerate(u) if i != j):
            coincidence[k[a], k[b]] += 1.0 / (len(u) - 1)
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    observed = coincidence.sum() - np.trace(coincidence)
    expected = (n * n - (n_c**2).sum()) / (n - 1)
    return float(1.0 - observed / expected) if expected > 0 else math.nan


def cohen_kappa(a: list[str], b: list[str]) -> float:
    """Cohen's kappa of two raters over the same items.

    >>> cohen_kappa(["yes", "yes", "no", "no"], ["yes", "no", "no", "no"])
    0.5
    """
    values = sorted(set(a) | set(b))
    n = len(a)
    if n == 0:
        return math.nan
    observed = sum(x == y for x, y in zip(a, b)) / n
    expected = sum((a.count(v) / n) * (b.count(v) / n) for v in values)
    return (observed - expected) / (1 - expected) if expected < 1 else math.nan


def agreement(verdicts: list[Verdict]) -> dict[str, Any]:
    """Agreement on records seen by two or more annotators (yes/no; 'can't tell' is no value)."""
    by_record: dict[str, dict[str, str]] = defaultdict(dict)
    for v in verdicts:
        by_record[v.id][v.annotator] = v.verdict
    shared = {i: seen for i, seen in by_record.items() if len(seen) >= 2}
    decided_units = [[x for x in seen.values() if x != "cant_tell"] for seen in shared.values()]
    pairs = []
    names = sorted({v.annotator for v in verdicts})
    for first, second in combinations(names, 2):
        both = [(s[first], s[second]) for s in shared.values() if first in s and second in s]
        decided = [(x, y) for x, y in both if "cant_tell" not in (x, y)]
        pairs.append({
            "annotators": [first, second],
            "records_both": len(both),
            "records_both_decided": len(decided),
            "raw_agreement": (sum(x == y for x, y in decided) / len(decided)) if decided else math.nan,
            "cohen_kappa": cohen_kappa([x for x, _ in decided], [y for _, y in decided]),
        })
    return {
        "records_seen_twice_or_more": len(shared),
        "pairable_records": sum(1 for u in decided_units if len(u) >= 2),
        "krippendorff_alpha": krippendorff_alpha(decided_units),
        "pairs": pairs,
    }


# ---- the promise -------------------------------------------------------------------------------------------


def translate_promise(strata: list[StratumData], promise: dict[str, Any]) -> dict[str, Any]:
    """The artifact's certified tap precision above its threshold as precision of visual intent (module doc)."""
    above = [s for s in strata if s.above_threshold]
    if not above:
        return {"available": False, "note": "no stratum lies at or above the threshold"}
    tap_above = [s for s in above if s.label == 1]
    no_tap_above = [s for s in above if s.label == 0]
    a = stratified_mean(tap_above) if tap_above else _undefined([], "no tap at or above the threshold")
    b = stratified_mean(no_tap_above) if no_tap_above else {"estimate": 0.0, "se": 0.0, "ci95": [0.0, 0.0],
                                                             "n_reviewed": 0, "note": "no no-tap record above t"}
    certified = promise.get("lower_bound") is not None and (promise.get("confidence") or 0) > 0
    pi = float(promise["lower_bound"]) if certified else float(promise.get("target_precision") or math.nan)
    population_above = sum(s.population for s in above)
    out: dict[str, Any] = {
        "available": True,
        "threshold": promise.get("threshold"),
        "certified": certified,
        "tap_precision_promised": pi,
        "confidence": promise.get("confidence"),
        "visual_given_tap_above": a,
        "visual_given_no_tap_above": b,
        "tap_precision_in_audited_log": sum(s.population for s in tap_above) / population_above,
        "records_above_in_log": population_above,
        "visual_precision_in_audited_log": stratified_mean(above),
    }
    if math.isnan(a["estimate"]) or math.isnan(pi):
        out["translated"] = _undefined(above, a.get("note", "no promise to translate"))
        return out
    value = pi * a["estimate"] + (1 - pi) * b["estimate"]
    var = pi**2 * a["se"] ** 2 + (1 - pi) ** 2 * b["se"] ** 2
    out["translated"] = _estimate(value, var, a["n_reviewed"] + b["n_reviewed"])
    if certified:
        a_lo, b_lo = a["ci95"][0], b["ci95"][0]
        out["certified_visual_precision_lower_bound"] = min(pi * a_lo + (1 - pi) * b_lo, a_lo)
        out["certified_visual_confidence"] = max(0.0, float(promise["confidence"]) - 0.05)
    return out


def audit_report(folder: AuditFolder, promise: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything `irp audit report` prints and writes: counts, per-stratum table, estimates, agreement, promise.

    `promise` (`irp.artifact.promise(meta)`) defaults to the one recorded in the design at sampling time.
    """
    verdicts = folder.all_verdicts()
    strata = strata_data(folder)
    per_annotator = {name: len(folder.verdicts(name)) for name in folder.annotators()}
    by_value = {v: sum(1 for x in verdicts if x.verdict == v) for v in ("yes", "no", "cant_tell")}
    report: dict[str, Any] = {
        "sample": {
            "records": len(folder.records),
            "population": sum(s.population for s in strata),
            "reviewed_records": len({v.id for v in verdicts}),
            "verdicts": len(verdicts),
            "verdicts_by_value": by_value,
            "annotators": per_annotator,
            "data": folder.design.get("data"),
            "model": (folder.design.get("model") or {}).get("path"),
        },
        "strata": [
            {"name": s.name, "label": s.label, "above_threshold": s.above_threshold, "population": s.population,
             "sampled": s.sampled, "decided": s.n, "cant_tell": s.cant_tell, "unreviewed": s.unreviewed,
             "visual_share": s.mean, "ci95": list(logit_interval(s.mean, math.sqrt(s.var_mean), s.n))
             if s.n else [math.nan, math.nan]}
            for s in strata
        ],
        **proxy_quality(strata),
        "cant_tell_sensitivity": {
            f"as_{reading}": {k: v["estimate"] for k, v in proxy_quality(strata_data(folder, reading)).items()}
            for reading in ("yes", "no")
        },
        "cant_tell_policy": "excluded (missing at random within its stratum); as_yes / as_no show the extremes",
        "agreement": agreement(verdicts),
        "method": "stratified SRSWOR; Taylor linearisation; 95 % logit intervals",
    }
    promise = promise or (folder.design.get("model") or {}).get("promise")
    if promise and folder.design.get("model"):
        report["promise"] = translate_promise(strata, promise)
    return report


def plan_half_widths(
    n: int, tap_rate: float, precision: float, visual_rate_no_tap: float, population: int | None = None
) -> dict[str, float]:
    """Expected 95 % half-widths of proxy precision and recall for `n` records split equally between taps and
    no-taps (label strata, `irp audit sample` without --model), from guesses of the tap rate, P(visual | tap) and
    P(visual | no tap); `population` adds the finite-population correction. For planning, before any verdict.

    >>> {k: round(v, 3) for k, v in plan_half_widths(400, 0.21, 0.5, 0.043).items()}
    {'precision': 0.069, 'recall': 0.123}
    """
    half = n / 2
    fpc_tap = 1.0 if population is None else max(0.0, 1 - half / (tap_rate * population))
    fpc_no_tap = 1.0 if population is None else max(0.0, 1 - half / ((1 - tap_rate) * population))
    v_tap = fpc_tap * precision * (1 - precision) / half
    v_no_tap = fpc_no_tap * visual_rate_no_tap * (1 - visual_rate_no_tap) / half
    visual = tap_rate * precision + (1 - tap_rate) * visual_rate_no_tap
    recall = tap_rate * precision / visual
    var_recall = (tap_rate * (1 - recall) / visual) ** 2 * v_tap + ((1 - tap_rate) * recall / visual) ** 2 * v_no_tap
    return {"precision": Z95 * math.sqrt(v_tap), "recall": Z95 * math.sqrt(var_recall)}
