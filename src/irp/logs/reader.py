"""Read decision-log folders written by `irp serve --log-dir DIR` (format: docs/loop.md).

Two layouts, both read (a folder may hold both, e.g. a server upgraded in place):
- Parquet (schema 2, irp.logs.parquet_log): `DIR/kind=decision|feedback/date=YYYY-MM-DD/hour=HH/<replica>-<uuid>.parquet`;
- JSON Lines (schema 1, older servers): `DIR/decisions-<ts>-[<replica>-]<pid>-<seq>.jsonl`, `DIR/feedback-<...>.jsonl`.

While a server runs, the files being written have dot-names. Readers must never trip over what they find,
so every oddity is counted and skipped:

- dot-files (files being written, journals) are skipped and counted as `in_progress_files`;
- files whose names do not follow a pattern, and stray folders, are `foreign_files`;
- a line that is not JSON (a torn write, a truncated copy) is a `torn_lines`; a JSON line or Parquet row
  that is not an object of the file's kind and schema version with the contract's fields is an
  `invalid_lines` (first reasons kept as examples);
- a file that cannot be read or decoded at all (a truncated or corrupt Parquet file) is an `unreadable_files`.

File order (which decides the first of a repeated decision id, and ties of decision time): the inputs in
the order given; within a folder, its JSONL files in name order (time order per process), then its Parquet
files in path order (partition, then name).
"""

from __future__ import annotations

import glob
import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from irp.logs.parquet_log import KIND_DIRS, LOG_SCHEMA_VERSION, PARQUET_NAME, SCHEMAS, table_to_events

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


def _admit(scan: LogScan, where: str, kind: str, obj: dict[str, Any]) -> bool:
    """Whether a parsed event of `kind` passes its check; counts it, or records why not."""
    reason = (check_decision if kind == "decision" else check_feedback)(obj)
    if reason is not None:
        scan.reject(where, reason)
        return False
    if kind == "decision":
        scan.decision_lines += 1
    else:
        scan.feedback_lines += 1
    return True


def _lines(path: Path, kind: str, scan: LogScan) -> Iterator[dict[str, Any]]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        unreadable(scan, path, e)
        return
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
        if _admit(scan, where, kind, obj):
            yield obj


@dataclass(frozen=True)
class LogFile:
    """One complete log file: its kind and format."""

    path: Path
    kind: str  # decision | feedback
    fmt: str  # jsonl | parquet


def _kind_of_parquet(path: Path) -> str | None:
    for kind, part in KIND_DIRS.items():
        if part in path.parts:
            return kind
    return None


def _classify(path: Path, scan: LogScan) -> LogFile | None:
    """A file given directly (from a glob): a log file, or counted as in progress / foreign."""
    if path.name.startswith("."):
        scan.in_progress_files += 1
        return None
    match = FILE_PATTERN.match(path.name)
    if match is not None and path.is_file():
        return LogFile(path, "decision" if match.group(1) == "decisions" else "feedback", "jsonl")
    kind = _kind_of_parquet(path)
    if kind is not None and PARQUET_NAME.match(path.name) and path.is_file():
        return LogFile(path, kind, "parquet")
    scan.foreign_files += 1
    return None


def _folder_files(folder: Path, scan: LogScan) -> list[LogFile]:
    out: list[LogFile] = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        if path.name in KIND_DIRS.values() and path.is_dir():
            continue  # the Parquet tree, below
        if path.name.startswith("."):
            scan.in_progress_files += 1
            continue
        match = FILE_PATTERN.match(path.name)
        if match is None or not path.is_file():
            scan.foreign_files += 1
            continue
        out.append(LogFile(path, "decision" if match.group(1) == "decisions" else "feedback", "jsonl"))
    for kind, part in KIND_DIRS.items():
        root = folder / part
        if not root.is_dir():
            continue
        for path in sorted(root.rglob("*"), key=lambda p: p.as_posix()):
            if path.is_dir():
                continue
            relative = path.relative_to(root).parts
            if any(name.startswith(".") for name in relative):
                scan.in_progress_files += 1
            elif (len(relative) == 3 and relative[0].startswith("date=") and relative[1].startswith("hour=")
                  and PARQUET_NAME.match(path.name)):
                out.append(LogFile(path, kind, "parquet"))
            else:
                scan.foreign_files += 1
    return out


def log_files(inputs: str | Path | Sequence[str | Path], scan: LogScan) -> list[LogFile]:
    """The log files of `inputs` in file order (module doc): each a log folder, or a glob of folders and/or
    log files. Raises FileNotFoundError / NotADirectoryError for an input that names nothing usable."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    out: list[LogFile] = []
    for item in inputs:
        text = str(item)
        if glob.has_magic(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise FileNotFoundError(f"{text}: the pattern matches nothing")
            for match in map(Path, matches):
                if match.is_dir():
                    out.extend(_folder_files(match, scan))
                else:
                    file = _classify(match, scan)
                    if file is not None:
                        out.append(file)
            continue
        folder = Path(item)
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: no such folder")
        if not folder.is_dir():
            raise NotADirectoryError(f"{folder}: not a folder")
        out.extend(_folder_files(folder, scan))
    for file in out:
        if file.kind == "decision":
            scan.decision_files += 1
        else:
            scan.feedback_files += 1
    return out


def unreadable(scan: LogScan, path: Path, error: Exception | str) -> None:
    """Count a file that cannot be read at all."""
    scan.unreadable_files += 1
    scan.reasons["unreadable file"] += 1
    if len(scan.examples) < MAX_EXAMPLES:
        scan.examples.append(f"{path.name}: cannot read: {error}")


def _parquet_rows(path: Path, kind: str, scan: LogScan) -> Iterator[dict[str, Any]]:
    """The usable rows of one Parquet log file; a file that is not whole Parquet of the kind's schema
    counts as unreadable (read completely before anything is yielded: all of it or none)."""
    try:
        table = pq.read_table(path)
        if not table.schema.equals(SCHEMAS[kind], check_metadata=False):
            table = table.select(SCHEMAS[kind].names).cast(SCHEMAS[kind])
    except (pa.ArrowException, OSError, KeyError, ValueError) as e:
        unreadable(scan, path, str(e).splitlines()[0] if str(e) else type(e).__name__)
        return
    for row_no, obj in enumerate(table_to_events(kind, table), 1):
        where = f"{path.name}:row {row_no}"
        if obj.get("schema") != LOG_SCHEMA_VERSION:
            scan.reject(where, f"schema: unsupported version {obj.get('schema')!r} (Parquet logs are {LOG_SCHEMA_VERSION})")
            continue
        if _admit(scan, where, kind, obj):
            yield obj


def scan_log_dir(log_dir: str | Path | Sequence[str | Path], scan: LogScan | None = None
                 ) -> tuple[list[dict], list[dict], LogScan]:
    """All usable decision and feedback events of `log_dir` (a folder, a glob, or a list of them; both
    layouts) in file order, then line / row order, and the counts.

    Raises FileNotFoundError / NotADirectoryError for a missing folder; never for what is inside it.
    """
    scan = scan if scan is not None else LogScan()
    decisions: list[dict] = []
    feedback: list[dict] = []
    for file in log_files(log_dir, scan):
        rows = _lines(file.path, file.kind, scan) if file.fmt == "jsonl" else _parquet_rows(file.path, file.kind, scan)
        (decisions if file.kind == "decision" else feedback).extend(rows)
    return decisions, feedback, scan
