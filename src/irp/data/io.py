"""Read and write interaction records as JSONL, gzipped JSONL or Parquet, chosen by file suffix.

Everything streams: JSONL line by line, Parquet in chunks of CHUNK_ROWS records (row groups of
ROW_GROUP_ROWS), so a million records never sit in memory as Python objects at once.

Parquet encoding (lossless with JSONL, see docs/data.md): one column per known field, `context` as
list<string>, `products` as a JSON string (products carry arbitrary attributes, so no fixed Arrow
struct fits), and unknown keys together as one JSON object in the `__extra_json__` column. Reading
also accepts Parquet written by other tools: `products` may then be a list<struct> column and unknown
columns become extra keys. A Parquet row's line number is its row index + 1.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import io
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from irp.schema import FIELDS, INVALID_JSON, INVALID_UTF8, KNOWN_FIELDS, RecordError, validate_record

PathLike = str | os.PathLike[str]

FORMATS = (".jsonl", ".jsonl.gz", ".parquet")
ROW_GROUP_ROWS = 50_000  # Parquet row group size written
CHUNK_ROWS = 10_000  # records held as Python objects at once when reading or writing (~100 MB at 10 products)
EXTRA_COLUMN = "__extra_json__"
_UTF8_BOM = b"\xef\xbb\xbf"
_PROGRESS_EVERY = 8192  # JSONL lines between progress updates

PARQUET_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("utterance", pa.string()),
        ("intent", pa.string()),
        ("context", pa.list_(pa.string())),
        ("products", pa.string()),  # JSON array of product objects
        ("label", pa.int8()),
        ("screen_available", pa.bool_()),
        ("session_id", pa.string()),
        ("true_intent", pa.int8()),
        (EXTRA_COLUMN, pa.string()),  # JSON object of unknown keys, null when there are none
    ],
    metadata={"irp.encoding": "products and __extra_json__ are JSON strings; see docs/data.md"},
)
assert tuple(PARQUET_SCHEMA.names[:-1]) == FIELDS

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


class DataFileError(ValueError):
    """The file as a whole is unusable: unsupported suffix, or not readable as its format."""


@dataclass(frozen=True)
class RejectedRecord:
    """One input record that broke the contract; `raw` is the input line verbatim (no newline).

    For Parquet input `raw` is the row as one JSON object (products decoded, extras merged).
    """

    path: str
    line_no: int
    field: str
    reason: str
    raw: bytes
    kind: str = "invalid_value"

    def __str__(self) -> str:
        return f"{self.path}:{self.line_no}: {self.field}: {self.reason}"

    def quarantine_entry(self) -> dict[str, Any]:
        """The quarantine JSON object: raw text when it is UTF-8, else its bytes as base64 `raw_b64`.

        >>> RejectedRecord("a.jsonl", 3, "record", "bad", b"\\xff{").quarantine_entry()["raw_b64"]
        '/3s='
        """
        entry: dict[str, Any] = {
            "file": self.path,
            "line": self.line_no,
            "field": self.field,
            "kind": self.kind,
            "reason": self.reason,
        }
        try:
            entry["raw"] = self.raw.decode("utf-8")
        except UnicodeDecodeError:
            entry["raw_b64"] = base64.b64encode(self.raw).decode("ascii")
        return entry


class InvalidRecordError(RecordError):
    """Raised by `iter_records` without `on_error`: names the file and line of the bad record."""

    def __init__(self, rejected: RejectedRecord) -> None:
        super().__init__(rejected.field, rejected.reason, rejected.kind)
        self.rejected = rejected

    def __str__(self) -> str:
        return str(self.rejected)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.rejected,))


def file_format(path: PathLike) -> str:
    """The format of `path` from its suffix: one of FORMATS (case-insensitive).

    >>> file_format("logs/day1.JSONL.gz"), file_format("x.parquet")
    ('.jsonl.gz', '.parquet')
    """
    name = os.fspath(path).lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    raise DataFileError(f"{os.fspath(path)}: unsupported file type (use one of {', '.join(FORMATS)})")


# ---- reading ------------------------------------------------------------------------------------

# A source yields (line_no, parsed object or the RecordError of an unparseable line, raw bytes or None).
_Item = tuple[int, Any, bytes | None]
_Update = Callable[[int], None]


def _jsonl_items(path: Path, gz: bool, update: _Update | None) -> Iterator[_Item]:
    loads = json.loads
    with open(path, "rb") as raw_file:
        stream: io.BufferedIOBase = (
            io.BufferedReader(gzip.GzipFile(fileobj=raw_file, mode="rb"), 1 << 20) if gz else raw_file  # type: ignore[arg-type]
        )
        try:
            for line_no, line in enumerate(stream, 1):
                if line_no == 1 and line.startswith(_UTF8_BOM):
                    line = line[3:]
                line = line.rstrip(b"\r\n")
                if update is not None and line_no % _PROGRESS_EVERY == 0:
                    update(raw_file.tell())
                if not line or line.isspace():
                    continue  # blank lines are not records
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield line_no, RecordError("record", f"invalid UTF-8 at byte {e.start + 1} of the line", INVALID_UTF8), line
                    continue
                try:
                    obj = loads(text)
                except json.JSONDecodeError as e:
                    yield line_no, RecordError("record", f"invalid JSON: {e.msg} (column {e.colno})", INVALID_JSON), line
                except RecursionError:
                    yield line_no, RecordError("record", "invalid JSON: nested too deeply", INVALID_JSON), line
                else:
                    # Strict UTF-8 decoding cannot produce surrogates, but a JSON escape can (\ud800);
                    # such a string cannot be written back as UTF-8, so reject the line here.
                    if ("\\ud" in text or "\\uD" in text) and not _encodable(obj):
                        yield line_no, RecordError("record", "invalid Unicode: unpaired surrogate escape", INVALID_UTF8), line
                    else:
                        yield line_no, obj, line
        except (OSError, EOFError) as e:  # mostly a corrupt or truncated gzip stream
            raise DataFileError(f"{path}: cannot read{' as gzip' if gz else ''}: {e}") from e
    if update is not None:
        update(os.path.getsize(path))


def _encodable(obj: Any) -> bool:
    """Whether every string in a parsed JSON value is valid Unicode (no lone surrogates)."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _decode_json_cell(row: dict[str, Any], column: str) -> RecordError | None:
    """Decode a JSON-string cell of `row` in place; a RecordError when it is not valid JSON."""
    value = row.get(column)
    if type(value) is not str:
        return None
    try:
        row[column] = json.loads(value)
    except (json.JSONDecodeError, RecursionError) as e:
        return RecordError(column, f"invalid JSON in the Parquet {column} column: {e}", INVALID_JSON)
    return None


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataFileError(f"{path}: cannot read as Parquet: {e}") from e


def _parquet_items(path: Path, update: _Update | None) -> Iterator[_Item]:
    line_no = 0
    try:
        batches = _parquet_file(path).iter_batches(batch_size=CHUNK_ROWS)
        batch = next(batches, None)
    except (pa.ArrowException, OSError) as e:
        raise DataFileError(f"{path}: cannot read as Parquet: {e}") from e
    while batch is not None:
        names = batch.schema.names
        columns = [column.to_pylist() for column in batch.columns]
        for values in zip(*columns):
            line_no += 1
            row = dict(zip(names, values))
            error = _decode_json_cell(row, "products")
            if EXTRA_COLUMN in row:
                extra = row.pop(EXTRA_COLUMN)
                if extra is not None:
                    try:
                        row.update(json.loads(extra))
                    except (json.JSONDecodeError, RecursionError, TypeError, ValueError) as e:
                        error = error or RecordError(EXTRA_COLUMN, f"not a JSON object: {e}", INVALID_JSON)
            yield (line_no, error, _dumps(row).encode()) if error else (line_no, row, None)
        if update is not None:
            update(line_no)
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as e:
            raise DataFileError(f"{path}: cannot read as Parquet: {e}") from e


def _progress_bar(known_total: bool) -> Any:
    """A rich progress bar on stderr; silent when stderr is not a terminal (pipes, tests)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn() if known_total else MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=True,
    )


def iter_records(
    path: PathLike,
    on_error: Callable[[RejectedRecord], None] | None = None,
    *,
    progress: bool = False,
) -> Iterator[dict[str, Any]]:
    """Stream the normalized valid records of a .jsonl / .jsonl.gz / .parquet file.

    Each invalid record goes to `on_error` (as a RejectedRecord) and is skipped; without `on_error`
    the first one raises InvalidRecordError. Blank JSONL lines are skipped and are not records.
    Raises (at once, not on first iteration) DataFileError for an unsupported suffix and
    FileNotFoundError for a missing file; DataFileError later if the content is unreadable.
    """
    path = Path(path)
    fmt = file_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return _iter_records(path, fmt, on_error, progress)


def _iter_records(
    path: Path, fmt: str, on_error: Callable[[RejectedRecord], None] | None, progress: bool
) -> Iterator[dict[str, Any]]:
    with contextlib.ExitStack() as stack:
        update: _Update | None = None
        if progress:
            bar = stack.enter_context(_progress_bar(known_total=True))
            if fmt == ".parquet":
                total = _parquet_file(path).metadata.num_rows  # progress in rows
            else:
                total = os.path.getsize(path)  # progress in (compressed) bytes
            task = bar.add_task(f"validating {path.name}", total=total)
            update = lambda done: bar.update(task, completed=done)  # noqa: E731
        items = _parquet_items(path, update) if fmt == ".parquet" else _jsonl_items(path, fmt == ".jsonl.gz", update)
        name = str(path)
        for line_no, value, raw in items:
            if type(value) is RecordError:
                error = value
            else:
                try:
                    yield validate_record(value, line_no)
                    continue
                except RecordError as e:
                    error = e
            rejected = RejectedRecord(name, line_no, error.field, error.reason, raw or _dumps(value).encode(), error.kind)
            if on_error is None:
                raise InvalidRecordError(rejected)
            on_error(rejected)


def load_records(path: PathLike) -> list[dict[str, Any]]:
    """All records of a file as a list; raises InvalidRecordError on the first invalid one."""
    return list(iter_records(path))


# ---- writing ------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` that replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _extra_json(record: dict[str, Any]) -> str | None:
    if KNOWN_FIELDS.issuperset(record):
        return None
    return _dumps({k: v for k, v in record.items() if k not in KNOWN_FIELDS})


def _record_batch(rows: list[dict[str, Any]]) -> pa.RecordBatch:
    """Rows (normalized records) -> one Arrow record batch in PARQUET_SCHEMA."""
    columns: list[list[Any]] = [[row.get(name) for row in rows] for name in FIELDS]
    products = columns[FIELDS.index("products")]
    columns[FIELDS.index("products")] = [None if p is None else _dumps(p) for p in products]
    columns.append([_extra_json(row) for row in rows])
    return pa.RecordBatch.from_arrays(
        [pa.array(values, type=field.type) for values, field in zip(columns, PARQUET_SCHEMA)], schema=PARQUET_SCHEMA
    )


def _batches(records: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_records(
    path: PathLike, records: Iterable[dict[str, Any]], total: int | None = None, progress: bool = False
) -> int:
    """Stream records to a .jsonl / .jsonl.gz / .parquet file atomically; returns how many were written.

    Records are written as given (call validate_record first for untrusted input). JSON values that
    are not JSON types (e.g. a timestamp from a foreign Parquet column) are written as strings.
    """
    fmt = file_format(path)
    n = 0
    with contextlib.ExitStack() as stack:
        advance: Callable[[int], None] = lambda k: None  # noqa: E731
        if progress:
            bar = stack.enter_context(_progress_bar(known_total=total is not None))
            task = bar.add_task(f"writing {Path(path).name}", total=total)
            advance = lambda k: bar.advance(task, k)  # noqa: E731
        tmp = stack.enter_context(atomic_path(path))
        if fmt == ".parquet":
            with pq.ParquetWriter(tmp, PARQUET_SCHEMA, compression="zstd") as writer:
                # Encode CHUNK_ROWS records at a time to Arrow; flush a row group every ROW_GROUP_ROWS.
                pending: list[pa.RecordBatch] = []
                for batch in _batches(records, CHUNK_ROWS):
                    pending.append(_record_batch(batch))
                    n += len(batch)
                    advance(len(batch))
                    if sum(b.num_rows for b in pending) >= ROW_GROUP_ROWS:
                        writer.write_table(pa.Table.from_batches(pending), row_group_size=ROW_GROUP_ROWS)
                        pending = []
                if pending:
                    writer.write_table(pa.Table.from_batches(pending), row_group_size=ROW_GROUP_ROWS)
        else:
            with open(tmp, "wb") as raw_file:
                out = gzip.GzipFile(filename="", mode="wb", fileobj=raw_file, mtime=0) if fmt == ".jsonl.gz" else raw_file
                with out:
                    for batch in _batches(records, CHUNK_ROWS):
                        out.write(("\n".join([_dumps(r) for r in batch]) + "\n").encode())
                        n += len(batch)
                        advance(len(batch))
    return n
