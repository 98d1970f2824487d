"""`irp validate`: check a record file, split it into clean records and a quarantine, count reasons.

The invariant is records in = records accepted + records quarantined: every input record (every
non-blank JSONL line, every Parquet row) ends up in exactly one of the two outputs.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from irp.data.io import DataFileError, PathLike, RejectedRecord, atomic_path, file_format, iter_records, write_records

QUARANTINE_FORMATS = (".jsonl", ".jsonl.gz")
_INDEX = re.compile(r"\[\d+\]")


def field_pattern(field_name: str) -> str:
    """The field with list indices dropped, so rejections group by place.

    >>> field_pattern("products[12].color[0]")
    'products[].color[]'
    """
    return _INDEX.sub("[]", field_name)


@dataclass
class ValidationReport:
    """What one validation run saw. `reasons` counts rejections per (field pattern, kind)."""

    path: str
    n_in: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    reasons: Counter[tuple[str, str]] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when there was at least one record and none was rejected."""
        return self.n_in > 0 and self.n_rejected == 0


def check_paths(path: PathLike, quarantine: PathLike | None = None, out: PathLike | None = None) -> None:
    """Raise FileNotFoundError / DataFileError for arguments that cannot work, before reading anything."""
    path = Path(path)
    file_format(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise DataFileError(f"{path}: not a regular file")
    if quarantine is not None and file_format(quarantine) not in QUARANTINE_FORMATS:
        raise DataFileError(f"{quarantine}: the quarantine file must be {' or '.join(QUARANTINE_FORMATS)}")
    if out is not None:
        file_format(out)
    outputs = [Path(p).resolve() for p in (quarantine, out) if p is not None]
    if path.resolve() in outputs or len(set(outputs)) < len(outputs):
        raise DataFileError("input, --quarantine and --out must be three different files")


def _open_text(path: Path, gz: bool) -> IO[str]:
    if gz:
        return gzip.open(path, "wt", encoding="utf-8")
    return open(path, "w", encoding="utf-8")


def validate_file(
    path: PathLike,
    quarantine: PathLike | None = None,
    out: PathLike | None = None,
    on_reject: Callable[[RejectedRecord], None] | None = None,
    progress: bool = False,
) -> ValidationReport:
    """Validate every record of `path`; write rejects to `quarantine` and valid records to `out`.

    `on_reject` sees each rejection as it happens (the CLI prints it). The outputs that were asked
    for are written atomically, and always (empty when nothing goes there). The quarantine is JSONL
    of RejectedRecord.quarantine_entry() objects, in input order.
    """
    check_paths(path, quarantine, out)
    report = ValidationReport(path=str(path))
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        q_file: IO[str] | None = None
        if quarantine is not None:
            q_tmp = stack.enter_context(atomic_path(quarantine))
            q_file = stack.enter_context(_open_text(q_tmp, gz=file_format(quarantine) == ".jsonl.gz"))

        def reject(rejected: RejectedRecord) -> None:
            report.n_rejected += 1
            report.reasons[(field_pattern(rejected.field), rejected.kind)] += 1
            if q_file is not None:
                q_file.write(json.dumps(rejected.quarantine_entry(), ensure_ascii=False) + "\n")
            if on_reject is not None:
                on_reject(rejected)

        records = iter_records(path, reject, progress=progress)
        if out is not None:
            report.n_accepted = write_records(out, records)
        else:
            report.n_accepted = sum(1 for _ in records)
    report.n_in = report.n_accepted + report.n_rejected
    report.seconds = time.perf_counter() - start
    return report
