"""Read and write interaction records as JSONL, gzipped JSONL or Parquet, chosen by file suffix.

Everything streams in chunks of at most CHUNK_ROWS records (JSONL lines or Parquet rows), so a
million records never sit in memory as Python objects at once. Reading is two steps, raw chunks
(`read_chunks`) and their parsed, validated records (`parse_chunk`), which `irp validate` reuses.

Parquet encoding (lossless with JSONL, see docs/data.md): one column per known field, `context` as
list<string>, `products` as a nested list<struct> column (irp.data.nested: title, price and the attributes
as maps, so DuckDB and Spark query them in place), and unknown keys together as one JSON object in the
`__extra_json__` column. Reading also accepts Parquet written by older irp versions (`products` as a JSON
string) and by other tools (`products` a list<struct> of their own fields; unknown columns become extra
keys). A Parquet row's line number is its row index + 1.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import gzip
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from irp.data.nested import PRODUCTS_TYPE, decode_products, encode_products, is_irp_products
from irp.fileio import atomic_path  # also re-exported: other modules import it from here
from irp.schema import FIELDS, INVALID_JSON, INVALID_UTF8, KNOWN_FIELDS, RecordError, validate_record

PathLike = str | os.PathLike[str]

FORMATS = (".jsonl", ".jsonl.gz", ".parquet")
ROW_GROUP_ROWS = 50_000  # Parquet row group size written
CHUNK_ROWS = 10_000  # records held as Python objects at once (~100 MB at 10 products a record)
CHUNK_BYTES = 32 << 20  # a JSONL chunk also ends at this many bytes (very long lines)
WRITE_ROWS = 1000  # records encoded at once when writing: small batches stay in CPU cache (faster than 10K)
EXTRA_COLUMN = "__extra_json__"
_UTF8_BOM = b"\xef\xbb\xbf"

PARQUET_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("utterance", pa.string()),
        ("intent", pa.string()),
        ("context", pa.list_(pa.string())),
        ("products", PRODUCTS_TYPE),  # nested: irp.data.nested
        ("label", pa.int8()),
        ("screen_available", pa.bool_()),
        ("session_id", pa.string()),
        ("true_intent", pa.int8()),
        (EXTRA_COLUMN, pa.string()),  # JSON object of unknown keys, null when there are none
    ],
    metadata={"irp.encoding": "products nested (irp.data.nested), __extra_json__ a JSON string; see docs/data.md"},
)

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode

# A chunk: (line number of its first line or row, the raw JSONL lines or the Parquet rows).
Chunk = tuple[int, "list[bytes] | pa.RecordBatch"]
# Progress callback: how far the reader got (bytes of the file for JSONL, rows for Parquet).
Update = Callable[[int], None]


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


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataFileError(f"{path}: cannot read as Parquet: {e}") from e


def _read_parquet(path: Path, update: Update | None) -> Iterator[Chunk]:
    first = 1
    batches = _parquet_file(path).iter_batches(batch_size=CHUNK_ROWS)
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as e:
            raise DataFileError(f"{path}: cannot read as Parquet: {e}") from e
        if batch is None:
            return
        yield first, batch
        first += batch.num_rows
        if update is not None:
            update(first - 1)


def _read_jsonl(path: Path, gz: bool, update: Update | None) -> Iterator[Chunk]:
    with open(path, "rb") as raw_file:
        stream = io.BufferedReader(gzip.GzipFile(fileobj=raw_file, mode="rb"), 1 << 20) if gz else raw_file
        first, lines, size = 1, [], 0
        try:
            for line in stream:
                lines.append(line)
                size += len(line)
                if len(lines) == CHUNK_ROWS or size >= CHUNK_BYTES:
                    yield first, lines
                    first, lines, size = first + len(lines), [], 0
                    if update is not None:
                        update(raw_file.tell())
        except (OSError, EOFError) as e:  # mostly a corrupt or truncated gzip stream
            raise DataFileError(f"{path}: cannot read{' as gzip' if gz else ''}: {e}") from e
        if lines:
            yield first, lines
    if update is not None:
        update(os.path.getsize(path))


def read_chunks(path: PathLike, update: Update | None = None) -> Iterator[Chunk]:
    """The raw chunks of a record file, in order; `update` hears the progress after each chunk."""
    path = Path(path)
    if file_format(path) == ".parquet":
        return _read_parquet(path, update)
    return _read_jsonl(path, file_format(path) == ".jsonl.gz", update)


def progress_total(path: PathLike) -> int:
    """The total that `read_chunks` reports progress against: rows for Parquet, file bytes for JSONL."""
    if file_format(path) == ".parquet":
        return _parquet_file(Path(path)).metadata.num_rows
    return os.path.getsize(path)


# Parsing yields (line_no, parsed object or the RecordError of an unparseable line, raw bytes or None).
_Item = tuple[int, Any, "bytes | None"]


def _jsonl_items(first: int, lines: list[bytes]) -> Iterator[_Item]:
    loads = json.loads
    for line_no, line in enumerate(lines, first):
        if line_no == 1 and line.startswith(_UTF8_BOM):
            line = line[3:]
        line = line.rstrip(b"\r\n")
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
            continue
        except RecursionError:
            yield line_no, RecordError("record", "invalid JSON: nested too deeply", INVALID_JSON), line
            continue
        # Strict UTF-8 decoding cannot produce surrogates, but a JSON escape can (\ud800);
        # such a string cannot be written back as UTF-8, so reject the line here.
        if ("\\ud" in text or "\\uD" in text) and not _encodable(obj):
            yield line_no, RecordError("record", "invalid Unicode: unpaired surrogate escape", INVALID_UTF8), line
            continue
        yield line_no, obj, line


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


def _parquet_items(first: int, batch: pa.RecordBatch) -> Iterator[_Item]:
    names = batch.schema.names
    columns = [column.to_pylist() for column in batch.columns]
    if "products" in names and is_irp_products(batch.schema.field("products").type):
        index = names.index("products")
        columns[index] = [decode_products(cell) for cell in columns[index]]
    for line_no, values in enumerate(zip(*columns), first):
        row = dict(zip(names, values))
        error = _decode_json_cell(row, "products")
        extra = row.pop(EXTRA_COLUMN, None)
        if extra is not None:
            try:
                row.update(json.loads(extra))
            except (json.JSONDecodeError, RecursionError, TypeError, ValueError) as e:
                error = error or RecordError(EXTRA_COLUMN, f"not a JSON object: {e}", INVALID_JSON)
        yield (line_no, error, _dumps(row).encode()) if error else (line_no, row, None)


def parse_chunk(name: str, chunk: Chunk) -> Iterator[dict[str, Any] | RejectedRecord]:
    """Parse and validate one chunk of file `name`, streaming: a normalized record or a
    RejectedRecord per input record, in input order (blank JSONL lines give nothing).

    Streaming matters: building a whole chunk of records first measured ~2x slower (cold memory).
    """
    first, payload = chunk
    items = _parquet_items(first, payload) if isinstance(payload, pa.RecordBatch) else _jsonl_items(first, payload)
    for line_no, value, raw in items:
        if type(value) is RecordError:
            error = value
        else:
            try:
                yield validate_record(value, line_no)
                continue
            except RecordError as e:
                error = e
        yield RejectedRecord(name, line_no, error.field, error.reason, raw or _dumps(value).encode(), error.kind)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector (for code that builds many records and keeps some).

    Parsed JSON has no reference cycles, so refcounting frees everything; but while thousands of
    records are alive the collector re-scans them again and again (measured: up to ~40 % of the CPU
    time of `irp validate`).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def progress_bar(description: str, total: int | None, enabled: bool = True) -> Iterator[Update | None]:
    """A rich progress bar on stderr, as an `Update` callback (absolute progress); None when disabled.

    The bar is silent when stderr is not a terminal (pipes, tests).
    """
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    bar = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn() if total else MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
        transient=True,
    )
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)


def check_readable(path: PathLike) -> Path:
    path = Path(path)
    file_format(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if not path.is_file():
        raise DataFileError(f"{path}: not a regular file")
    return path


def iter_records(
    path: PathLike,
    on_error: Callable[[RejectedRecord], None] | None = None,
    *,
    progress: bool = False,
) -> Iterator[dict[str, Any]]:
    """Stream the normalized valid records of a .jsonl / .jsonl.gz / .parquet file.

    Each invalid record goes to `on_error` (as a RejectedRecord) and is skipped; without `on_error`
    the first one raises InvalidRecordError. Blank JSONL lines are skipped and are not records.
    Raises at once DataFileError for an unsupported suffix or a directory and FileNotFoundError for
    a missing file; DataFileError while iterating if the content is unreadable (corrupt gzip/Parquet).
    """
    path = check_readable(path)
    return _iter_records(path, on_error, progress)


def _iter_records(
    path: Path, on_error: Callable[[RejectedRecord], None] | None, progress: bool
) -> Iterator[dict[str, Any]]:
    name = str(path)
    with progress_bar(f"reading {path.name}", progress_total(path) if progress else None, progress) as update:
        for chunk in read_chunks(path, update):
            for item in parse_chunk(name, chunk):
                if type(item) is dict:
                    yield item
                elif on_error is None:
                    raise InvalidRecordError(item)
                else:
                    on_error(item)


def load_records(path: PathLike) -> list[dict[str, Any]]:
    """All records of a file as a list; raises InvalidRecordError on the first invalid one."""
    return list(iter_records(path))


# ---- writing ------------------------------------------------------------------------------------


def _extra_json(record: dict[str, Any]) -> str | None:
    if KNOWN_FIELDS.issuperset(record):
        return None
    return _dumps({k: v for k, v in record.items() if k not in KNOWN_FIELDS})


def _record_batch(records: list[dict[str, Any]]) -> pa.RecordBatch:
    """Records -> one Arrow record batch in PARQUET_SCHEMA."""
    columns: list[list[Any]] = [[r.get(name) for r in records] for name in FIELDS]
    columns.append([_extra_json(r) for r in records])
    arrays = [encode_products(values) if field.name == "products" else pa.array(values, type=field.type)
              for values, field in zip(columns, PARQUET_SCHEMA)]
    return pa.RecordBatch.from_arrays(arrays, schema=PARQUET_SCHEMA)


def _encode(fmt: str, records: list[dict[str, Any]]) -> bytes | pa.RecordBatch:
    """Records encoded for a file of format `fmt` (one of FORMATS): UTF-8 JSONL bytes or an Arrow batch."""
    if fmt == ".parquet":
        return _record_batch(records)
    return "".join([_dumps(r) + "\n" for r in records]).encode()


class RecordWriter:
    """Streams records to one .jsonl / .jsonl.gz / .parquet file, atomically on success.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "r.parquet"
    >>> with RecordWriter(path) as writer:
    ...     writer.write([{"utterance": "red dress"}])
    >>> [r["utterance"] for r in load_records(path)]
    ['red dress']
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self.fmt = file_format(path)
        self._stack = contextlib.ExitStack()
        self._pending: list[pa.RecordBatch] = []  # Parquet batches of the next row group
        self._parquet: pq.ParquetWriter | None = None
        self._file: Any = None

    def __enter__(self) -> RecordWriter:
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(self.path))
            if self.fmt == ".parquet":
                self._parquet = stack.enter_context(pq.ParquetWriter(tmp, PARQUET_SCHEMA, compression="zstd"))
            else:
                self._file = stack.enter_context(open(tmp, "wb"))
                if self.fmt == ".jsonl.gz":  # no name or mtime in the header: same records, same bytes
                    self._file = stack.enter_context(gzip.GzipFile(filename="", mode="wb", fileobj=self._file, mtime=0))
            self._stack = stack.pop_all()
        return self

    def write(self, records: list[dict[str, Any]]) -> None:
        """Encode and write records (~WRITE_ROWS at a time is fastest and keeps memory flat)."""
        encoded = _encode(self.fmt, records)
        if self._parquet is None:
            self._file.write(encoded)
            return
        self._pending.append(encoded)
        if sum(b.num_rows for b in self._pending) >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending and self._parquet is not None:
            self._parquet.write_table(pa.Table.from_batches(self._pending), row_group_size=ROW_GROUP_ROWS)
            self._pending = []

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:  # close and discard the temporary file; the target stays as it was
            self._stack.__exit__(exc_type, exc, tb)
            return
        with self._stack:  # closes the file, then renames it into place (unless the flush fails)
            self._flush()


def batched(records: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
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

    Records are written as given (call validate_record first for untrusted input). Values that are
    not JSON types (e.g. a timestamp from a foreign Parquet column) are written as strings.
    """
    n = 0
    with RecordWriter(path) as writer, progress_bar(f"writing {Path(path).name}", total, progress) as update:
        for batch in batched(records, WRITE_ROWS):
            writer.write(batch)
            n += len(batch)
            if update is not None:
                update(n)
    return n
