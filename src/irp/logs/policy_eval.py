"""`irp policy-eval`: what a candidate model would have done on logged traffic (off-policy, docs/loop.md).

The candidate offers on a logged record iff the record was eligible IN THE LOG (screen not false, session
not in cooldown under the logging policy) and its probability >= its threshold. Eligibility is taken from
the log because the cooldown depends on the offers actually made: under the candidate the cooldown state
would differ, which the log cannot replay. With `irp serve --cooldown 0` the assumption is exact.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

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


def _record_columns(records: Sequence[dict[str, Any]], first: int = 0) -> LoggedArrays:
    for i, r in enumerate(records, first):
        missing = [k for k in REQUIRED if r.get(k) is None]
        if missing:
            raise ValueError(f"record {i + 1} (id {r.get('id')!r}) lacks {', '.join(missing)}: "
                             "policy-eval reads the output of `irp logs join`")
    return LoggedArrays(
        np.array([bool(r["offered"]) for r in records], dtype=bool),
        np.array([float(r["propensity"]) for r in records], dtype=np.float64),
        np.array([bool(r["eligible"]) for r in records], dtype=bool),
        np.array([float(r["tap"] if r.get("tap") is not None else r["label"]) for r in records], dtype=np.float64),
        np.array([np.nan if r.get("accepted") is None else float(r["accepted"]) for r in records], dtype=np.float64),
    )


def _checked(logs: LoggedArrays) -> LoggedArrays:
    if np.any((logs.propensity < 0) | (logs.propensity > 1)):
        raise ValueError("propensity must be in [0, 1]")
    if logs.offered.all() and np.any(logs.propensity < 1):
        raise PolicyEvalError("every record was offered: this looks like a `--label accept` join, which drops "
                              "the decisions without an offer; policy-eval needs `irp logs join --label tap`")
    return logs


def logged_arrays(records: list[dict[str, Any]]) -> LoggedArrays:
    """The columns of a `irp logs join --label tap` file as arrays; ValueError names what is missing."""
    return _checked(_record_columns(records))


TYPED = ("offered", "propensity", "eligible", "label", "tap", "accepted", "session_id", "id")
STREAM_ROWS = 50_000


@dataclass
class StreamedLog:
    """A joined log read in batches: the arrays policy-eval needs, the candidate's probabilities, sessions."""

    logs: LoggedArrays
    probabilities: np.ndarray  # (n,) float64
    sessions: np.ndarray | None  # (n,) int64 codes, None when some record has no session_id
    n: int


def _concat(parts: list[LoggedArrays]) -> LoggedArrays:
    return LoggedArrays(*(np.concatenate([getattr(p, f) for p in parts]) if parts else np.zeros(0)
                          for f in ("offered", "propensity", "eligible", "tap", "accepted")))


def _typed_batches(path: Path) -> Any:
    """Batches of the typed log columns of a Parquet written by `irp logs join` (DuckDB engine), or None when
    the file keeps them elsewhere (JSONL, or Parquet with the columns in its extras)."""
    if not str(path).lower().endswith(".parquet"):
        return None
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowException, OSError):
        return None
    if not set(TYPED) <= set(names):
        return None
    return pq.ParquetFile(path).iter_batches(STREAM_ROWS, columns=list(TYPED))


def _batch_columns(batch: pa.RecordBatch, first: int) -> LoggedArrays:
    for name in ("offered", "propensity", "eligible", "label"):
        column = batch.column(name)
        if column.null_count:
            row = first + pc.index(pc.is_null(column), True).as_py()
            raise ValueError(f"record {row + 1} (id {batch.column('id')[row - first].as_py()!r}) lacks {name}: "
                             "policy-eval reads the output of `irp logs join`")
    label = batch.column("label").cast(pa.float64())
    tap = pc.coalesce(batch.column("tap").cast(pa.float64()), label)
    return LoggedArrays(
        batch.column("offered").to_numpy(zero_copy_only=False).astype(bool),
        batch.column("propensity").cast(pa.float64()).to_numpy(zero_copy_only=False),
        batch.column("eligible").to_numpy(zero_copy_only=False).astype(bool),
        tap.to_numpy(zero_copy_only=False),
        batch.column("accepted").cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False),
    )


class _Scores:
    """The candidate's probabilities from a file of `irp predict` (id, probability), matched row by row."""

    def __init__(self, path: Path) -> None:
        from irp.data.io import iter_records

        if str(path).lower().endswith(".parquet"):
            table = pq.read_table(path, columns=["id", "probability"])
            self.ids, self.probs = table.column("id").combine_chunks(), table.column("probability")
        else:
            rows = [(r["id"], r.get("probability")) for r in iter_records(path)]
            self.ids = pa.array([r[0] for r in rows], pa.string())
            self.probs = pa.chunked_array([pa.array([r[1] for r in rows], pa.float64())])
        if self.probs.null_count:
            raise ValueError(f"{path}: some rows have no probability")
        self.path = path

    def take(self, ids: pa.Array, first: int) -> np.ndarray:
        n = len(ids)
        if first + n > len(self.ids):
            raise ValueError(f"{self.path} has {len(self.ids):,} rows, fewer than the log")
        mine = self.ids.slice(first, n)
        if not pc.all(pc.equal(mine, ids.cast(pa.string()))).as_py():
            row = first + pc.index(pc.not_equal(mine, ids.cast(pa.string())), True).as_py()
            raise ValueError(f"{self.path} does not match the log row by row: row {row + 1} is id "
                             f"{self.ids[row].as_py()!r} there and {ids[row - first].as_py()!r} in the log "
                             "(score the joined file itself with `irp predict`)")
        return self.probs.slice(first, n).to_numpy().astype(np.float64)

    def check_consumed(self, n: int) -> None:
        if n != len(self.ids):
            raise ValueError(f"{self.path} has {len(self.ids):,} rows, the log {n:,}")


def stream_log(path: str | Path, score: Callable[[list[dict[str, Any]]], np.ndarray] | None = None,
               scores: str | Path | None = None, progress: Callable[[int], None] | None = None) -> StreamedLog:
    """Read a joined log in batches (bounded memory: only the arrays are kept, ~50 bytes a record) with the
    candidate's probabilities: scored batch by batch by `score(records)`, or read from `scores` (the output of
    `irp predict` on this file: `id`, `probability`, same row order). Exactly one of them."""
    from irp.data.io import iter_records

    if (score is None) == (scores is None):
        raise ValueError("give exactly one of score and scores")
    path = Path(path)
    file_scores = _Scores(Path(scores)) if scores is not None else None
    parts: list[LoggedArrays] = []
    probs: list[np.ndarray] = []
    sessions: list[pa.Array] = []
    n = 0
    batches = _typed_batches(path) if score is None else None
    if batches is not None:
        for batch in batches:
            parts.append(_batch_columns(batch, n))
            sessions.append(batch.column("session_id"))
            probs.append(file_scores.take(batch.column("id"), n))  # type: ignore[union-attr]
            n += batch.num_rows
            if progress is not None:
                progress(n)
    else:
        chunk: list[dict[str, Any]] = []

        def flush() -> None:
            nonlocal n, chunk
            parts.append(_record_columns(chunk, n))
            sessions.append(pa.array([None if r.get("session_id") in (None, "") else str(r["session_id"])
                                      for r in chunk], pa.string()))
            if score is not None:
                probs.append(np.asarray(score(chunk), dtype=np.float64))
            else:
                probs.append(file_scores.take(pa.array([r["id"] for r in chunk], pa.string()), n))  # type: ignore[union-attr]
            n += len(chunk)
            chunk = []
            if progress is not None:
                progress(n)

        for record in iter_records(path):
            chunk.append(record)
            if len(chunk) == 4096:
                flush()
        if chunk:
            flush()
    if file_scores is not None:
        file_scores.check_consumed(n)
    column = pa.chunked_array(sessions, pa.string()) if sessions else pa.chunked_array([], pa.string())
    codes = None
    if n and column.null_count == 0 and not pc.any(pc.equal(column, "")).as_py():
        encoded = column.dictionary_encode().combine_chunks()
        # Codes in sorted key order, as irp.offpolicy.cluster_codes numbers them: the same bootstrap draws.
        rank = np.empty(len(encoded.dictionary), dtype=np.int64)
        rank[pc.sort_indices(encoded.dictionary).to_numpy()] = np.arange(len(encoded.dictionary))
        codes = rank[encoded.indices.to_numpy()]
    logs = _checked(_concat(parts))
    return StreamedLog(logs, np.concatenate(probs) if probs else np.zeros(0), codes, n)


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
    clusters = session_clusters(records) if resample == "session" else None
    return evaluate_arrays(logged_arrays(records), probabilities, threshold, clusters, n_boot=n_boot, level=level,
                           seed=seed, resample=resample)


def evaluate_arrays(logs: LoggedArrays, probabilities: np.ndarray, threshold: float,
                    clusters: Sequence[str] | np.ndarray | None, n_boot: int = 1000, level: float = 0.95,
                    seed: int = 0, resample: str = "session") -> dict[str, Any]:
    """`evaluate_candidate` on arrays (a streamed log): `clusters` the per-record session keys or codes, None
    when some record has none (or `resample` is "record")."""
    if resample not in ("session", "record"):
        raise ValueError(f"resample must be 'session' or 'record', got {resample!r}")
    if resample == "record":
        clusters = None
    n = len(logs.offered)
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
            f"{support['unsupported']:,} of {n:,} candidate decisions ({support['unsupported_share']:.1%}) "
            f"have no support in the log: {support['unsupported_offers']:,} offers "
            f"({share_of_offers:.1%} of the candidate's offers) on records whose logged propensity was 0, and "
            f"{support['unsupported_holds']:,} holds where it was 1. No reweighting can estimate those; "
            "log with exploration (`irp serve --explore-rate E`, E > 0) to evaluate a different policy"
        )
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
