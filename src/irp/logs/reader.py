"""Read a decision-log folder written by `irp serve --log-dir DIR` (format: docs/loop.md).

The folder holds complete files `decisions-<ts>-<replica>-<pid>-<seq>.jsonl` and `feedback-<...>.jsonl` (from
any number of replicas sharing the folder; older logs have no `<replica>-`)
and, while the server runs, the file being written as `.<name>.tmp`. Readers must never trip over what
they find there, so every oddity is counted and skipped:

- dot-files (files being written) are skipped and counted as `in_progress_files`;
- files whose names do not follow the pattern, and folders, are `foreign_files`;
- a line that is not JSON (a torn write, a truncated copy) is a `torn_lines`; a JSON line that is not a
  schema-1 object of the file's kind with the contract's fields is an `invalid_lines` (first reasons kept
  as examples);
- a file that cannot be read or decoded at all is an `unreadable_files`.

Files are read in name order, which is time order per process (the names start with a UTC timestamp).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FEEDBACK_EVENTS = ("offer_accepted", "offer_declined", "carousel_tap", "no_tap")
FILE_PATTERN = re.compile(r"^(decisions|feedback)-\d{8}T\d{6}\d*Z-(?:[A-Za-z0-9][A-Za-z0-9_.-]*-)?\d+-\d{6}\.jsonl$")
MAX_EXAMPLES = 10


@dataclass
class LogScan:
    """Counts of everything a scan of a log folder saw (and skipped)."""

    decision_files: int = 0
    feedback_files: int = 0
    in_progress_files: int = 0
    foreign_files: int = 0
    unreadable_files: int = 0
    decision_lines: int = 0
    feedback_lines: int = 0
    torn_lines: int = 0
    invalid_lines: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # "file:line: reason", the first MAX_EXAMPLES

    def reject(self, where: str, reason: str, torn: bool = False) -> None:
        if torn:
            self.torn_lines += 1
        else:
            self.invalid_lines += 1
        self.reasons[reason.split(":")[0]] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{where}: {reason}")

    def to_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if isinstance(v, Counter) else v) for k, v in self.__dict__.items()}


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def check_decision(obj: dict[str, Any]) -> str | None:
    """Why a decision line breaks the contract, or None when it is usable.

    >>> ok = {"schema": 1, "kind": "decision", "id": "a", "ts": 1.0, "record": {"utterance": "x"},
    ...       "probability": 0.4, "threshold": 0.5, "suggest_switch": False, "eligible": True,
    ...       "explored": False, "propensity": 0.1, "model_version": "v1"}
    >>> check_decision(ok) is None, check_decision({**ok, "propensity": 1.5})
    (True, 'propensity: must be a number in [0, 1]')
    """
    if type(obj.get("id")) is not str or not obj["id"]:
        return "id: must be a non-empty string"
    if not _number(obj.get("ts")):
        return "ts: must be a number"
    if type(obj.get("record")) is not dict:
        return "record: must be an object"
    for key in ("probability", "threshold", "propensity"):
        value = obj.get(key)
        if not _number(value) or not 0.0 <= value <= 1.0:
            return f"{key}: must be a number in [0, 1]"
    for key in ("suggest_switch", "eligible", "explored"):
        if type(obj.get(key)) is not bool:
            return f"{key}: must be true or false"
    if type(obj.get("model_version")) is not str:
        return "model_version: must be a string"
    if obj["suggest_switch"] and obj["propensity"] == 0.0:
        return "propensity: 0 for a decision that offered"
    if not obj["suggest_switch"] and obj["propensity"] == 1.0:
        return "propensity: 1 for a decision that did not offer"
    return None


def check_feedback(obj: dict[str, Any]) -> str | None:
    """Why a feedback line breaks the contract, or None.

    >>> check_feedback({"schema": 1, "kind": "feedback", "id": "a", "event": "no_tap", "ts": 2.0}) is None
    True
    >>> check_feedback({"schema": 1, "kind": "feedback", "id": "a", "event": "tap", "ts": 2.0})
    "event: must be one of offer_accepted, offer_declined, carousel_tap, no_tap, got 'tap'"
    """
    if type(obj.get("id")) is not str or not obj["id"]:
        return "id: must be a non-empty string"
    if obj.get("event") not in FEEDBACK_EVENTS:
        return f"event: must be one of {', '.join(FEEDBACK_EVENTS)}, got {obj.get('event')!r}"
    if not _number(obj.get("ts")):
        return "ts: must be a number"
    return None


def _lines(path: Path, kind: str, scan: LogScan) -> Iterator[dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        scan.unreadable_files += 1
        scan.reasons["unreadable file"] += 1
        if len(scan.examples) < MAX_EXAMPLES:
            scan.examples.append(f"{path.name}: cannot read: {e}")
        return
    check = check_decision if kind == "decision" else check_feedback
    for line_no, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        where = f"{path.name}:{line_no}"
        try:
            obj = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            scan.reject(where, "torn line: not valid JSON", torn=True)
            continue
        if type(obj) is not dict:
            scan.reject(where, "not a JSON object")
            continue
        if obj.get("schema") != 1:
            scan.reject(where, f"schema: unsupported version {obj.get('schema')!r} (this reader knows 1)")
            continue
        if obj.get("kind") != kind:
            scan.reject(where, f"kind: {obj.get('kind')!r} in a {kind} file")
            continue
        reason = check(obj)
        if reason is not None:
            scan.reject(where, reason)
            continue
        if kind == "decision":
            scan.decision_lines += 1
        else:
            scan.feedback_lines += 1
        yield obj


def scan_log_dir(log_dir: str | Path, scan: LogScan | None = None) -> tuple[list[dict], list[dict], LogScan]:
    """All usable decision and feedback lines of `log_dir` (in file-name, then line order) and the counts.

    Raises FileNotFoundError / NotADirectoryError for a missing folder; never for what is inside it.
    """
    log_dir = Path(log_dir)
    if not log_dir.exists():
        raise FileNotFoundError(f"{log_dir}: no such folder")
    if not log_dir.is_dir():
        raise NotADirectoryError(f"{log_dir}: not a folder")
    scan = scan if scan is not None else LogScan()
    decisions: list[dict] = []
    feedback: list[dict] = []
    for path in sorted(log_dir.iterdir(), key=lambda p: p.name):
        if path.name.startswith("."):
            scan.in_progress_files += 1
            continue
        match = FILE_PATTERN.match(path.name)
        if match is None or not path.is_file():
            scan.foreign_files += 1
            continue
        if match.group(1) == "decisions":
            scan.decision_files += 1
            decisions.extend(_lines(path, "decision", scan))
        else:
            scan.feedback_files += 1
            feedback.extend(_lines(path, "feedback", scan))
    return decisions, feedback, scan
