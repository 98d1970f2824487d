"""`irp policy-eval`: what a candidate model would have done on logged traffic (off-policy, docs/loop.md).

The candidate offers on a logged record iff the record was eligible IN THE LOG (screen not false, session
not in cooldown under the logging policy) and its probability >= its threshold. Eligibility is taken from
the log because the cooldown depends on the offers actually made: under the candidate the cooldown state
would differ, which the log cannot replay. With `irp serve --cooldown 0` the assumption is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from irp.offpolicy import policy_estimates, unsupported

REQUIRED = ("offered", "propensity", "eligible", "label")


class PolicyEvalError(ValueError):
    """The log cannot back an estimate (no support, wrong kind of join); the CLI exits 1."""


@dataclass(frozen=True)
class LoggedArrays:
    offered: np.ndarray  # (n,) bool, logged suggest_switch
    propensity: np.ndarray  # (n,) float
    eligible: np.ndarray  # (n,) bool
    tap: np.ndarray  # (n,) float 0/1, the precision label
    accepted: np.ndarray  # (n,) float 0/1, nan where not offered


def logged_arrays(records: list[dict[str, Any]]) -> LoggedArrays:
    """The columns of a `irp logs join --label tap` file as arrays; ValueError names what is missing."""
    for i, r in enumerate(records):
        missing = [k for k in REQUIRED if r.get(k) is None]
        if missing:
            raise ValueError(f"record {i + 1} (id {r.get('id')!r}) lacks {', '.join(missing)}: "
                             "policy-eval reads the output of `irp logs join`")
    offered = np.array([bool(r["offered"]) for r in records])
    propensity = np.array([float(r["propensity"]) for r in records])
    if np.any((propensity < 0) | (propensity > 1)):
        raise ValueError("propensity must be in [0, 1]")
    if offered.all() and np.any(propensity < 1):
        raise PolicyEvalError("every record was offered: this looks like a `--label accept` join, which drops "
                              "the decisions without an offer; policy-eval needs `irp logs join --label tap`")
    tap = np.array([float(r["tap"] if r.get("tap") is not None else r["label"]) for r in records])
    accepted = np.array([np.nan if r.get("accepted") is None else float(r["accepted"]) for r in records])
    return LoggedArrays(offered, propensity, np.array([bool(r["eligible"]) for r in records]), tap, accepted)


def session_clusters(records: list[dict[str, Any]]) -> list[str] | None:
    """The records' `session_id`s when every record has one (the bootstrap's resampling unit), else None.

    >>> session_clusters([{"session_id": "s1"}, {"session_id": "s2"}]), session_clusters([{"session_id": "s1"}, {}])
    (['s1', 's2'], None)
    """
    keys = [r.get("session_id") for r in records]
    return None if any(k is None or k == "" for k in keys) else [str(k) for k in keys]


def evaluate_candidate(records: list[dict[str, Any]], probabilities: np.ndarray, threshold: float,
                       n_boot: int = 1000, level: float = 0.95, seed: int = 0,
                       resample: str = "session") -> dict[str, Any]:
    """The off-policy report of a candidate scoring `probabilities` (n,) with `threshold` on `records`.

    `resample`: "session" (default) bootstraps whole sessions when every record has a `session_id` (records
    of a session share a user and are correlated), falling back to records otherwise; "record" always
    resamples records. The report's `resampled` names the unit used. Raises PolicyEvalError when some
    candidate decision lacks support in the log.
    """
    if resample not in ("session", "record"):
        raise ValueError(f"resample must be 'session' or 'record', got {resample!r}")
    logs = logged_arrays(records)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    candidate = logs.eligible & (probabilities >= threshold)
    lacking = unsupported(candidate, logs.propensity)
    support = {
        "unsupported": int(lacking.sum()),
        "unsupported_share": float(lacking.mean()),
        "unsupported_offers": int((lacking & candidate).sum()),  # would offer where the log never did
        "unsupported_holds": int((lacking & ~candidate).sum()),  # would hold where the log always offered
        "candidate_offers": int(candidate.sum()),
    }
    if support["unsupported"]:
        share_of_offers = support["unsupported_offers"] / max(support["candidate_offers"], 1)
        raise PolicyEvalError(
            f"{support['unsupported']:,} of {len(records):,} candidate decisions ({support['unsupported_share']:.1%}) "
            f"have no support in the log: {support['unsupported_offers']:,} offers "
            f"({share_of_offers:.1%} of the candidate's offers) on records whose logged propensity was 0, and "
            f"{support['unsupported_holds']:,} holds where it was 1. No reweighting can estimate those; "
            "log with exploration (`irp serve --explore-rate E`, E > 0) to evaluate a different policy"
        )
    clusters = session_clusters(records) if resample == "session" else None
    report = policy_estimates(candidate, logs.offered, logs.propensity, logs.tap, logs.accepted,
                              n_boot=n_boot, level=level, seed=seed, clusters=clusters, cluster_name="session_id")
    if resample == "session" and clusters is None:
        report["resampled_note"] = "some records lack a session_id: resampled records (intervals may be too narrow)"
    report["threshold"] = float(threshold)
    report["support"] = support
    report["eligible_share"] = float(logs.eligible.mean())
    report["assumption"] = ("eligibility (screen available, session not in cooldown) is taken from the log; "
                            "exact when the logging server ran with --cooldown 0")
    return report
