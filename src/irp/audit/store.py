"""An audit folder on disk: the blind sample, its sealed design, and each annotator's verdicts.

    DIR/sample.jsonl              blind records in queue order (what people see)
    DIR/design.json               strata, population counts, the stratum and score of every sampled id, the model's
                                  promise; sealed: `seal` is a sha256 over the rest of the design, which includes
                                  the sha256 of sample.jsonl, so an edit of either is detected on open
    DIR/verdicts/NAME.jsonl       one annotator's verdicts, one line each: {"id", "annotator", "verdict", "seq", "at"}

Every write of a verdict file is a whole new file renamed over the old one (fsynced first), under a
lock, so a crash, a killed server or a closed tab leaves the previous complete file, never half of
one. A verdict given again for the same record replaces the earlier one; undo removes the one given
last. Verdicts made elsewhere (a spreadsheet, another tool) come in through `import_verdicts`: a CSV
or JSONL file with `id`, `annotator` and `verdict`, checked in full before anything is written.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import math
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irp.fileio import atomic_path

FORMAT = "irp-audit-sample"
FORMAT_VERSION = 1
VERDICTS = ("yes", "no", "cant_tell")
# Spellings accepted from files made elsewhere; the page sends the canonical ones.
VERDICT_ALIASES = {
    "yes": "yes", "y": "yes", "1": "yes", "true": "yes", "visual": "yes",
    "no": "no", "n": "no", "0": "no", "false": "no",
    "cant_tell": "cant_tell", "can't tell": "cant_tell", "cant tell": "cant_tell", "c": "cant_tell",
    "unsure": "cant_tell", "?": "cant_tell",
}
ANNOTATOR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


class AuditError(ValueError):
    """Bad input for an audit folder; `field` names what was wrong (a flag, a JSON field, a file)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Verdict:
    id: str
    annotator: str
    verdict: str
    seq: int  # order in which this annotator gave it (undo removes the highest)
    at: float  # unix time

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "annotator": self.annotator, "verdict": self.verdict, "seq": self.seq, "at": self.at}


@dataclass(frozen=True)
class ImportSummary:
    rows: int
    added: int
    replaced: int
    unchanged: int
    annotators: tuple[str, ...]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def seal_of(design: dict[str, Any]) -> str:
    """sha256 over the canonical JSON of the design without its `seal`."""
    body = {k: v for k, v in design.items() if k != "seal"}
    return sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode())


def check_annotator(name: Any) -> str:
    """A safe annotator name (it becomes a file name), or AuditError naming the field `annotator`."""
    if not isinstance(name, str) or not ANNOTATOR_RE.match(name):
        raise AuditError("annotator", f"annotator must be 1-64 letters, digits, '_', '.' or '-' (starting with a "
                                      f"letter or digit), got {name!r}")
    return name


def normalize_verdict(value: Any) -> str:
    """The canonical verdict (yes / no / cant_tell) of a spelling, or AuditError naming the field `verdict`.

    >>> normalize_verdict(" Can't tell "), normalize_verdict("Y"), normalize_verdict(1)
    ('cant_tell', 'yes', 'yes')
    """
    key = str(value).strip().lower() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if key is None or key not in VERDICT_ALIASES:
        raise AuditError("verdict", f"verdict must be yes, no or cant_tell, got {value!r}")
    return VERDICT_ALIASES[key]


def _write_lines_atomic(path: Path, lines: list[str]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)
            f.flush()
            os.fsync(f.fileno())


class AuditFolder:
    """An opened, verified audit folder (use `AuditFolder.open` or `AuditFolder.create`)."""

    def __init__(self, root: Path, design: dict[str, Any], records: list[dict[str, Any]]) -> None:
        self.root = root
        self.design = design
        self.records = records  # queue order
        self.index = {r["id"]: i for i, r in enumerate(records)}

    # ---- creating and opening -----------------------------------------------------------------------------

    @classmethod
    def create(cls, root: str | Path, records: list[dict[str, Any]], design: dict[str, Any]) -> AuditFolder:
        """Write a new audit folder; refuses a folder that already holds files (verdicts are never overwritten)."""
        root = Path(root)
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise AuditError("--out", f"{root} exists and is not empty: choose a new folder (an existing audit's "
                                      "verdicts are never overwritten)")
        root.mkdir(parents=True, exist_ok=True)
        sample_bytes = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
        with atomic_path(root / "sample.jsonl") as tmp:
            tmp.write_bytes(sample_bytes)
        design = {"format": FORMAT, "version": FORMAT_VERSION, **design, "sample_sha256": sha256_bytes(sample_bytes)}
        design["seal"] = seal_of(design)
        with atomic_path(root / "design.json") as tmp:
            tmp.write_text(json.dumps(design, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        (root / "verdicts").mkdir(exist_ok=True)
        return cls.open(root)

    @classmethod
    def open(cls, root: str | Path) -> AuditFolder:
        """Open and verify a folder written by `irp audit sample`; AuditError says what is wrong."""
        root = Path(root)
        design_path, sample_path = root / "design.json", root / "sample.jsonl"
        if not root.is_dir():
            raise AuditError("DIR", f"{root} is not a folder (expected one written by `irp audit sample`)")
        if not design_path.is_file() or not sample_path.is_file():
            raise AuditError("DIR", f"{root} is not an audit sample: design.json and sample.jsonl are expected "
                                    "(write one with `irp audit sample`)")
        try:
            design = json.loads(design_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise AuditError("design.json", f"{design_path} is not valid JSON ({e}): the design was damaged") from None
        if not isinstance(design, dict) or design.get("format") != FORMAT:
            raise AuditError("design.json", f"{design_path} is not an irp audit design (format != {FORMAT!r})")
        if design.get("version") != FORMAT_VERSION:
            raise AuditError("design.json", f"{design_path}: unsupported version {design.get('version')!r}")
        if design.get("seal") != seal_of(design):
            raise AuditError("design.json", f"{design_path} was modified after sampling (its seal does not match): "
                                            "estimates from an edited design would be wrong; restore it or draw "
                                            "a new sample")
        sample_bytes = sample_path.read_bytes()
        if sha256_bytes(sample_bytes) != design.get("sample_sha256"):
            raise AuditError("sample.jsonl", f"{sample_path} was modified after sampling (sha256 differs from the "
                                             "design): restore it or draw a new sample")
        records = [json.loads(line) for line in sample_bytes.decode("utf-8").splitlines() if line.strip()]
        return cls(root, design, records)

    # ---- verdicts -----------------------------------------------------------------------------------------

    def _path(self, annotator: str) -> Path:
        return self.root / "verdicts" / f"{check_annotator(annotator)}.jsonl"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time: a thread lock (server threads) and an flock (other processes)."""
        key = str(self.root.resolve())
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(key, threading.Lock())
        with lock:
            (self.root / "verdicts").mkdir(exist_ok=True)
            with open(self.root / "verdicts" / ".lock", "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)

    def annotators(self) -> list[str]:
        folder = self.root / "verdicts"
        return sorted(p.stem for p in folder.glob("*.jsonl")) if folder.is_dir() else []

    def verdicts(self, annotator: str) -> list[Verdict]:
        """This annotator's verdicts in the order given (by seq)."""
        path = self._path(annotator)
        if not path.exists():
            return []
        out = []
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                    out.append(Verdict(row["id"], row["annotator"], row["verdict"], int(row["seq"]), float(row["at"])))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                    raise AuditError(f"verdicts/{path.name}", f"{path} line {line_no} is damaged ({e}): it was "
                                                             "edited by hand; fix or remove that line") from None
        return sorted(out, key=lambda v: v.seq)

    def all_verdicts(self) -> list[Verdict]:
        return [v for name in self.annotators() for v in self.verdicts(name)]

    def _save(self, annotator: str, verdicts: list[Verdict]) -> None:
        lines = [json.dumps(v.as_dict(), ensure_ascii=False) for v in sorted(verdicts, key=lambda v: v.seq)]
        _write_lines_atomic(self._path(annotator), lines)

    def check_id(self, record_id: Any) -> str:
        if not isinstance(record_id, str) or record_id not in self.index:
            raise AuditError("id", f"unknown record id {record_id!r}: not in this sample")
        return record_id

    def record_verdict(self, annotator: str, record_id: Any, verdict: Any) -> Verdict:
        """Store one verdict (replacing this annotator's earlier one for the record); returns it."""
        check_annotator(annotator)
        record_id = self.check_id(record_id)
        value = normalize_verdict(verdict)
        with self._locked():
            current = [v for v in self.verdicts(annotator) if v.id != record_id]
            seq = max((v.seq for v in self.verdicts(annotator)), default=0) + 1
            new = Verdict(record_id, annotator, value, seq, time.time())
            self._save(annotator, [*current, new])
        return new

    def undo(self, annotator: str) -> Verdict | None:
        """Remove the verdict this annotator gave last; returns it (None when there is none)."""
        check_annotator(annotator)
        with self._locked():
            verdicts = self.verdicts(annotator)
            if not verdicts:
                return None
            self._save(annotator, verdicts[:-1])
        return verdicts[-1]

    def progress(self, annotator: str, overlap: float | None = None) -> dict[str, Any]:
        """The annotator's queue: how many answered, the next record (0-based `position` in the sample's order).

        Without `overlap` every annotator gets every record (agreement on all). With `overlap` in [0, 1] the work
        is split: the first `ceil(overlap * total)` records of the queue go to everyone (agreement on a random
        part, as the order is random), and after them each annotator gets the first record nobody has answered.
        """
        verdicts = self.verdicts(annotator)
        mine = {v.id for v in verdicts}
        total = len(self.records)
        shared = total if overlap is None else math.ceil(overlap * total)
        anyone = mine if overlap is None else {v.id for v in self.all_verdicts()}
        open_ = [i for i, r in enumerate(self.records) if r["id"] not in mine and (i < shared or r["id"] not in anyone)]
        position = open_[0] if open_ else None
        return {
            "annotator": annotator,
            "total": total,
            "answered": len(mine),
            "queue_size": len(mine) + len(open_),  # what this annotator answers in all, as things stand
            "position": position,  # None when this annotator's queue is done
            "record": None if position is None else self.records[position],
            "last": verdicts[-1].as_dict() if verdicts else None,
        }

    # ---- verdicts made elsewhere ----------------------------------------------------------------------------

    def import_verdicts(self, path: str | Path, annotator: str | None = None, replace: bool = False) -> ImportSummary:
        """Load verdicts from a CSV (header: id, annotator, verdict) or JSONL file (objects with those keys).

        `annotator` fills rows without one. Every row is checked first (known id, valid verdict and annotator, no
        id twice for one annotator); on any problem an AuditError names the line and field and nothing is written.
        A verdict that differs from one already stored for the same annotator and record is refused unless
        `replace`.
        """
        rows = list(_read_verdict_rows(Path(path)))
        if not rows:
            raise AuditError("--verdicts", f"{path} holds no verdicts")
        parsed: dict[str, dict[str, str]] = {}
        for line_no, row in rows:
            try:
                name = row.get("annotator") or annotator
                if not name:
                    raise AuditError("annotator", "no annotator column and no --annotator given")
                name = check_annotator(str(name).strip())
                record_id = self.check_id(str(row.get("id", "")).strip() or None)
                value = normalize_verdict(row.get("verdict"))
            except AuditError as e:
                raise AuditError(e.field, f"{path} line {line_no}: {e}") from None
            per = parsed.setdefault(name, {})
            if record_id in per and per[record_id] != value:
                raise AuditError("id", f"{path} line {line_no}: record {record_id!r} has two different verdicts "
                                       f"from {name!r}")
            per[record_id] = value
        added = replaced = unchanged = 0
        with self._locked():
            updates: dict[str, list[Verdict]] = {}
            for name, answers in parsed.items():
                stored = {v.id: v for v in self.verdicts(name)}
                conflicts = [i for i, value in answers.items() if i in stored and stored[i].verdict != value]
                if conflicts and not replace:
                    raise AuditError("--verdicts", f"{len(conflicts)} verdicts of {name!r} differ from those "
                                                   f"already stored (first: {conflicts[0]!r}); nothing was "
                                                   "written (use --replace to overwrite them)")
                seq = max((v.seq for v in stored.values()), default=0)
                now = time.time()
                for record_id, value in answers.items():  # queue order is the file order
                    if record_id in stored and stored[record_id].verdict == value:
                        unchanged += 1
                        continue
                    replaced += record_id in stored
                    added += record_id not in stored
                    seq += 1
                    stored[record_id] = Verdict(record_id, name, value, seq, now)
                updates[name] = list(stored.values())
            for name, verdicts in updates.items():
                self._save(name, verdicts)
        return ImportSummary(len(rows), added, replaced, unchanged, tuple(sorted(parsed)))


def _read_verdict_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of a CSV or JSONL verdict file."""
    if not path.is_file():
        raise AuditError("--verdicts", f"{path}: no such file")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson"):
        for line_no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise AuditError("--verdicts", f"{path} line {line_no}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise AuditError("--verdicts", f"{path} line {line_no}: not a JSON object")
            yield line_no, row
        return
    if path.suffix.lower() not in (".csv", ".tsv"):
        raise AuditError("--verdicts", f"{path}: expected a .csv, .tsv or .jsonl file")
    reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
    fields = {f.strip().lower() for f in reader.fieldnames or []}
    if not {"id", "verdict"} <= fields:
        raise AuditError("--verdicts", f"{path}: the header must name the columns id and verdict (and annotator), "
                                       f"got {sorted(fields)}")
    for line_no, row in enumerate(reader, 2):
        yield line_no, {(k or "").strip().lower(): v for k, v in row.items()}
