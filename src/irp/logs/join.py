"""`irp logs join`: decisions joined with their feedback by `id` into interaction records.

Each joined record is the decision's request (DESIGN section 2: id, utterance, intent, context, products,
screen_available, session_id) plus a `label` and the columns off-policy evaluation needs (kept by
`irp validate` and ignored by `irp train` as extra keys):

| column | meaning |
| --- | --- |
| `label` | `--label tap`: 1 if the user tapped the carousel; `--label accept`: 1 if the offer was accepted |
| `tap` | 1 if a `carousel_tap` was logged, else 0 |
| `accepted` | offered: 1 if `offer_accepted`, else 0; not offered: null |
| `offered` | the logged decision `suggest_switch` |
| `propensity` | P(the logging policy offers), exactly as logged |
| `eligible`, `explored` | screen not false and session not in cooldown; the offer was randomised |
| `logged_probability`, `logged_threshold`, `model_version` | the logging model's score and operating point |
| `ts` | decision time (unix seconds) |

Rules (docs/loop.md):
- no feedback counts as nothing happened: no tap = 0, an offer without an answer = not accepted (0);
  `--require-feedback` drops the records that have no event for the chosen label instead;
- `--label accept` keeps only offered decisions (an unoffered one says nothing about accepting);
- an id's repeated (id, event) is a duplicate, used once; contradicting events resolve to the positive one
  (a tap that happened, an accept that happened) and are counted as conflicts;
- accept/decline feedback for a decision that did not offer is counted and ignored;
- feedback whose id has no decision is counted (`unknown_feedback`); a decision id logged twice keeps
  the first decision (`duplicate_decisions`); a decision whose request is not a valid record is counted;
- output order: decision time, then file order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from irp.logs.reader import MAX_EXAMPLES, LogScan, scan_log_dir
from irp.schema import RecordError, validate_record

Label = Literal["tap", "accept"]
LABELS = ("tap", "accept")
LOG_COLUMNS = ("tap", "accepted", "offered", "propensity", "eligible", "explored", "logged_probability",
               "logged_threshold", "model_version", "ts")


@dataclass
class JoinReport:
    """What a join saw, kept and dropped."""

    scan: LogScan
    label: str = "tap"
    decisions: int = 0  # usable decision lines
    feedback: int = 0  # usable feedback lines
    records: int = 0  # joined records written
    positives: int = 0
    offered: int = 0  # among the written records
    explored: int = 0
    with_feedback: int = 0  # written records that had an event for the label
    without_feedback: int = 0  # written records labelled by the no-feedback rule
    dropped: Counter[str] = field(default_factory=Counter)  # reason -> decisions not written
    duplicate_decisions: int = 0
    duplicate_feedback: int = 0
    unknown_feedback: int = 0
    conflicting_feedback: int = 0
    feedback_without_offer: int = 0
    late_feedback: int = 0  # feedback later than the window after its decision: counted, not joined
    feedback_window_s: float | None = None  # None: no window
    engine: str = "python"
    examples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "scan"}
        out["dropped"] = dict(self.dropped)
        out["scan"] = self.scan.to_dict()
        return out


def _request(decision: dict[str, Any]) -> dict[str, Any]:
    """The decision's request as a normalized interaction record (raises RecordError)."""
    record = dict(decision["record"])
    record.pop("label", None)  # a request never carries a label; the join sets it
    record["id"] = decision["id"]
    record["session_id"] = decision.get("session_id")
    clean = validate_record(record)
    clean.pop("true_intent", None)  # latent: only the simulator knows it, never from a request
    return clean


def joined_records(
    decisions: list[dict[str, Any]], feedback: list[dict[str, Any]], label: Label = "tap",
    require_feedback: bool = False, report: JoinReport | None = None, window_s: float | None = None,
) -> list[dict[str, Any]]:
    """Join decision lines with feedback lines (both as read by `scan_log_dir`) into labelled records.

    `window_s`: feedback whose `ts` is more than this after its decision's is late: counted, not joined.

    >>> d = {"id": "a", "ts": 1.0, "session_id": None, "record": {"utterance": "red dress"},
    ...      "probability": 0.9, "threshold": 0.5, "suggest_switch": True, "eligible": True,
    ...      "explored": False, "propensity": 0.9, "model_version": "v1"}
    >>> fb = [{"id": "a", "event": "carousel_tap", "ts": 2.0}, {"id": "a", "event": "offer_accepted", "ts": 2.0}]
    >>> r = joined_records([d], fb)[0]
    >>> r["label"], r["accepted"], r["offered"], r["propensity"]
    (1, 1, True, 0.9)
    >>> joined_records([d], [], label="accept")[0]["label"]   # no answer to an offer = not accepted
    0
    """
    if label not in LABELS:
        raise ValueError(f"label must be tap or accept, got {label!r}")
    report = report if report is not None else JoinReport(scan=LogScan(), label=label)
    report.decisions += len(decisions)
    report.feedback += len(feedback)
    first: dict[str, dict[str, Any]] = {}
    for decision in decisions:
        if decision["id"] in first:
            report.duplicate_decisions += 1
            report.dropped["duplicate decision id"] += 1
        else:
            first[decision["id"]] = decision
    events: dict[str, set[str]] = {}
    for item in feedback:
        if item["id"] not in first:
            report.unknown_feedback += 1
            continue
        if window_s is not None and item["ts"] - first[item["id"]]["ts"] > window_s:
            report.late_feedback += 1
            continue
        seen = events.setdefault(item["id"], set())
        if item["event"] in seen:
            report.duplicate_feedback += 1
        seen.add(item["event"])

    out: list[tuple[float, int, dict[str, Any]]] = []
    for order, (record_id, decision) in enumerate(first.items()):
        ev = events.get(record_id, set())
        offered = decision["suggest_switch"]
        report.conflicting_feedback += ({"carousel_tap", "no_tap"} <= ev) + ({"offer_accepted", "offer_declined"} <= ev)
        answer = ev & {"offer_accepted", "offer_declined"}
        if answer and not offered:
            report.feedback_without_offer += 1
            answer = set()
        tap = int("carousel_tap" in ev)
        accepted = int("offer_accepted" in answer) if offered else None
        if label == "accept" and not offered:
            report.dropped["not offered (--label accept)"] += 1
            continue
        has_feedback = bool(answer) if label == "accept" else bool(ev & {"carousel_tap", "no_tap"})
        if require_feedback and not has_feedback:
            report.dropped["no feedback (--require-feedback)"] += 1
            continue
        try:
            record = _request(decision)
        except RecordError as e:
            report.dropped["invalid request record"] += 1
            if len(report.examples) < MAX_EXAMPLES:
                report.examples.append(f"decision {record_id!r}: {e}")
            continue
        record["label"] = tap if label == "tap" else accepted
        record.update(
            tap=tap, accepted=accepted, offered=offered, propensity=float(decision["propensity"]),
            eligible=decision["eligible"], explored=decision["explored"],
            logged_probability=float(decision["probability"]), logged_threshold=float(decision["threshold"]),
            model_version=decision["model_version"], ts=float(decision["ts"]),
        )
        report.with_feedback += has_feedback
        report.without_feedback += not has_feedback
        report.positives += record["label"]
        report.offered += offered
        report.explored += decision["explored"]
        out.append((float(decision["ts"]), order, record))
    out.sort(key=lambda t: (t[0], t[1]))
    report.records = len(out)
    return [r for _, _, r in out]


def join_logs(log_dir: str | Path | Sequence[str | Path], out: str | Path | None, label: Label = "tap",
              require_feedback: bool = False, window_s: float | None = None,
              ) -> tuple[JoinReport, list[dict[str, Any]]]:
    """Read `log_dir` (a folder, a glob or a list of them), join in memory (the reference engine; the
    DuckDB engine, irp.logs.duck, streams), and write the records to `out` (JSONL / Parquet, atomically) when
    given and when at least one record was joined. Returns the report and the records."""
    from irp.data.io import file_format, write_records

    if label not in LABELS:
        raise ValueError(f"label must be tap or accept, got {label!r}")
    if out is not None:
        file_format(out)  # fail on an unsupported suffix before reading
    decisions, feedback, scan = scan_log_dir(log_dir)
    report = JoinReport(scan=scan, label=label, feedback_window_s=window_s)
    records = joined_records(decisions, feedback, label, require_feedback, report, window_s)
    if out is not None and records:
        write_records(out, records)
    return report, records
