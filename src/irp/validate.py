"""`irp validate`: check a record file, split it into clean records and a quarantine, count reasons.

The invariant is records in = records accepted + records quarantined: every input record (every
non-blank JSONL line, every Parquet row) ends up in exactly one of the two outputs.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irp.data.io import (
    DataFileError,
    PathLike,
    RecordWriter,
    WRITE_ROWS,
    RejectedRecord,
    check_readable,
    file_format,
    gc_paused,
    parse_chunk,
    progress_bar,
    progress_total,
    read_chunks,
)

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
    check_readable(path)
    if quarantine is not None and file_format(quarantine) not in QUARANTINE_FORMATS:
        raise DataFileError(f"{quarantine}: the quarantine file must be {' or '.join(QUARANTINE_FORMATS)}")
    if out is not None:
        file_format(out)
    outputs = [Path(p).resolve() for p in (quarantine, out) if p is not None]
    if Path(path).resolve() in outputs or len(set(outputs)) < len(outputs):
        raise DataFileError("input, --quarantine and --out must be three different files")


def validate_file(
    path: PathLike,
    quarantine: PathLike | None = None,
    out: PathLike | None = None,
    on_reject: Callable[[RejectedRecord], None] | None = None,
    progress: bool = False,
) -> ValidationReport:
    """Validate every record of `path`; write rejects to `quarantine` and valid records to `out`.

    `on_reject` sees each rejection, in input order (the CLI prints it). The outputs that were asked
    for are written atomically, and always (empty when nothing goes there). The quarantine is JSONL
    of RejectedRecord.quarantine_entry() objects, in input order.
    """
    check_paths(path, quarantine, out)
    path = Path(path)
    report = ValidationReport(path=str(path))
    start = time.perf_counter()
    total = progress_total(path) if progress else None
    with contextlib.ExitStack() as stack:
        q_writer = stack.enter_context(RecordWriter(quarantine)) if quarantine is not None else None
        writer = stack.enter_context(RecordWriter(out)) if out is not None else None
        update = stack.enter_context(progress_bar(f"validating {path.name}", total, progress))
        for chunk in read_chunks(path, update):
            accepted: list[dict[str, Any]] = []
            rejected: list[RejectedRecord] = []
            with gc_paused():
                for item in parse_chunk(str(path), chunk):
                    if type(item) is not dict:
                        rejected.append(item)  # type: ignore[arg-type]
                        continue
                    report.n_accepted += 1
                    if writer is not None:
                        accepted.append(item)
                        if len(accepted) == WRITE_ROWS:
                            writer.write(accepted)
                            accepted = []
                if writer is not None and accepted:
                    writer.write(accepted)
            for r in rejected:
                report.n_rejected += 1
                report.reasons[(field_pattern(r.field), r.kind)] += 1
                if on_reject is not None:
                    on_reject(r)
            if q_writer is not None and rejected:
                q_writer.write([r.quarantine_entry() for r in rejected])
    report.n_in = report.n_accepted + report.n_rejected
    report.seconds = time.perf_counter() - start
    return report
