"""The decision log: every scored record and every feedback event, written off the request path.

Request threads hand events to `DecisionLog.submit`, which appends them to a bounded in-memory queue and
returns at once; one background thread writes them as zstd Parquet, Hive-partitioned (schema version 2,
irp.logs.parquet_log; the contract read by `irp logs`, docs/loop.md):

    DIR/kind=decision/date=YYYY-MM-DD/hour=HH/<replica_id>-<uuid>.parquet        complete files
    DIR/kind=feedback/date=YYYY-MM-DD/hour=HH/<replica_id>-<uuid>.parquet
    .../.<replica_id>-<uuid>.parquet.tmp                  the file being written (readers skip dot-files)
    .../.<replica_id>-<uuid>.<pid>.journal.jsonl          its write-ahead journal (one event a line)

Guarantees:
- Complete or absent. A Parquet file is written under its temporary dot-name (row groups of
  `row_group_rows`), and closed (footer), fsynced and renamed to its final name when it rotates (by journal
  size: `rotate_bytes`; by age: `rotate_seconds`, checked even when idle) or when the log closes; its journal
  is then removed. Every file without a leading dot is whole. Events of another UTC hour go to that hour's
  partition (its own file).
- Never blocks a request. A full queue drops the events that do not fit and counts them
  (`dropped[kind]`, Prometheus `irp_decision_log_dropped_total`); a write error (disk full) drops the batch
  being written, counts it, and the writer carries on with a fresh file.
- Nothing lost on a clean stop. `close()` (the server calls it on SIGTERM, after the last request was
  answered) drains the queue and finalizes the open files.
- Bounded loss on a crash. A Parquet file without its footer cannot be read, so each batch is also appended
  to the file's journal and written to the OS as soon as the writer wakes (every `flush_interval` s, or
  sooner when the queue is half full): a SIGKILL loses at most the events still in the queue (`max_queue`),
  as with JSON Lines. The next `DecisionLog` on the folder turns every journal of a dead process into its
  Parquet file (torn last line dropped) and deletes the unfinished `.parquet.tmp` (`recovered` in `stats()`).
  Legacy JSONL temporary files (`.decisions-*.jsonl.tmp`) are still recovered as before.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from irp.logs.parquet_log import (
    KIND_DIRS,
    LOG_SCHEMA_VERSION,
    SCHEMAS,
    events_to_table,
    partition,
    sanitize_replica_id,
)

log = logging.getLogger("irp.serve.decision_log")

KINDS = {"decision": "decisions", "feedback": "feedback"}  # event kind -> legacy JSONL file name prefix
SCHEMA_VERSION = 1  # of the event dicts (the JSONL line format); Parquet rows carry LOG_SCHEMA_VERSION
TMP_PATTERN = re.compile(r"^\.((?:decisions|feedback)-\d{8}T\d{6}\d*Z-(\d+)-\d{6}\.jsonl)\.tmp$")
JOURNAL_SUFFIX = ".journal.jsonl"
JOURNAL_PATTERN = re.compile(r"^\.((.+)-[0-9a-f]{32})\.(\d+)\.journal\.jsonl$")  # .<replica>-<id>.<pid>.journal.jsonl


class LogDirError(Exception):
    """The log folder cannot be used (not creatable, not a folder, not writable)."""


@dataclass
class _Stream:
    """The open temporary Parquet file of one (kind, partition) and its journal."""

    kind: str
    folder: Path
    tmp: Path
    final: Path
    journal_path: Path
    journal: IO[bytes]
    writer: pq.ParquetWriter
    opened: float  # monotonic seconds
    size: int = 0  # journal bytes
    rows: int = 0
    pending: list[pa.Table] = field(default_factory=list)  # rows of the next row group
    pending_rows: int = 0

    def flush_row_group(self) -> None:
        if self.pending_rows:
            self.writer.write_table(pa.concat_tables(self.pending), row_group_size=self.pending_rows)
            self.pending, self.pending_rows = [], 0

    def close_quietly(self) -> None:
        for close in (self.writer.close, self.journal.close):
            try:
                close()
            except (OSError, pa.ArrowException):
                pass


def check_log_dir(folder: str | Path) -> Path:
    """Create `folder` if needed and prove it writable (a probe file written, fsynced and removed), or raise
    LogDirError saying why. The server calls it before binding its port."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise LogDirError(f"{folder} exists and is not a folder") from None
    except OSError as e:
        raise LogDirError(f"cannot create {folder}: {e.strerror or e}") from None
    if not folder.is_dir():
        raise LogDirError(f"{folder} is not a folder")
    probe = folder / f".irp-write-probe-{os.getpid()}.tmp"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"probe\n")
            handle.flush()
            os.fsync(handle.fileno())
        probe.unlink()
    except OSError as e:
        raise LogDirError(f"{folder} is not writable: {e.strerror or e}") from None
    return folder


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own pid on a leftover file: a previous process with the same pid (a container's 1)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _abandoned(path: Path, writer_replica: str, pid: int, replica_id: str, stale_after_s: float | None) -> bool:
    """Whether the writer of a journal is gone. Its pid means something only on this host: for this replica, or a
    default id (`<host>-<pid>`) of this host. Another host's file is abandoned once untouched for `stale_after_s`
    (a live writer rotates long before)."""
    if writer_replica == replica_id or writer_replica.startswith(f"{sanitize_replica_id(socket.gethostname())}-"):
        return not _pid_alive(pid)
    try:
        return stale_after_s is not None and time.time() - path.stat().st_mtime >= stale_after_s
    except OSError:  # finished and removed by its writer meanwhile
        return False


def recover_journals(folder: str | Path, replica_id: str = "", stale_after_s: float | None = None) -> dict[str, int]:
    """Turn the journals that a killed writer left under `folder` into their Parquet files (every whole
    line; the torn last one dropped), and delete their unfinished `.parquet.tmp`. Journals of a live writer
    are left alone (`_abandoned`: replicas may share the folder). Returns counts: files, lines, torn_bytes, and
    bad_lines (whole lines that do not fit the schema, dropped)."""
    folder = Path(folder)
    out = {"files": 0, "lines": 0, "torn_bytes": 0, "bad_lines": 0}
    for kind, sub in KIND_DIRS.items():
        for path in sorted((folder / sub).glob(f"date=*/hour=*/.*{JOURNAL_SUFFIX}")):
            match = JOURNAL_PATTERN.match(path.name)
            if match is None:
                continue
            if not _abandoned(path, match.group(2), int(match.group(3)), replica_id, stale_after_s):
                continue
            try:
                if (path.parent / f"{match.group(1)}.parquet").exists():  # killed between rename and unlink
                    path.unlink()
                    continue
                data = path.read_bytes()
                whole = data[: data.rfind(b"\n") + 1]
                out["torn_bytes"] += len(data) - len(whole)
                events = []
                for line in whole.splitlines():
                    try:
                        events.append(json.loads(line))
                    except ValueError:
                        out["bad_lines"] += 1
                table = _table_or_rows(kind, events, out)
                if table.num_rows:
                    final = path.parent / f"{match.group(1)}.parquet"
                    tmp = path.parent / f".{match.group(1)}.parquet.recovering"
                    pq.write_table(table, tmp, compression="zstd")
                    _fsync_file(tmp)
                    os.replace(tmp, final)
                    out["files"] += 1
                    out["lines"] += table.num_rows
                (path.parent / f".{match.group(1)}.parquet.tmp").unlink(missing_ok=True)
                path.unlink()
                _fsync_dir(path.parent)
            except (OSError, pa.ArrowException) as e:
                log.warning("cannot recover %s: %s", path, e)
    if out["files"]:
        log.warning("recovered %d decision-log files (%d events) from the journals of a stopped process",
                    out["files"], out["lines"])
    return out


def _table_or_rows(kind: str, events: list[dict[str, Any]], counts: dict[str, int]) -> pa.Table:
    try:
        return events_to_table(kind, events)
    except (pa.ArrowException, TypeError, ValueError):
        good = []
        for event in events:
            try:
                events_to_table(kind, [event])
                good.append(event)
            except (pa.ArrowException, TypeError, ValueError):
                counts["bad_lines"] += 1
        return events_to_table(kind, good)


def recover_orphans(folder: str | Path, replica_id: str = "", stale_after_s: float | None = None) -> dict[str, int]:
    """Finalize what a killed process left in `folder`: Parquet journals (recover_journals), and legacy JSONL
    temporary files (cut after the last newline, fsynced, renamed to the final name). Files of a live process
    are left alone.

    Returns counts: files, lines, and bytes of torn last lines discarded (and bad_lines of journals).
    """
    folder = Path(folder)
    out = recover_journals(folder, replica_id, stale_after_s)
    for path in sorted(folder.iterdir()):
        match = TMP_PATTERN.match(path.name)
        if match is None or not path.is_file() or _pid_alive(int(match.group(2))):
            continue
        try:
            data = path.read_bytes()
            whole = data[: data.rfind(b"\n") + 1]
            out["torn_bytes"] += len(data) - len(whole)
            if whole:
                final = folder / match.group(1)
                with open(path, "r+b") as handle:
                    handle.truncate(len(whole))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(path, final)
                out["files"] += 1
                out["lines"] += whole.count(b"\n")
            else:
                path.unlink()
        except OSError as e:
            log.warning("cannot recover %s: %s", path, e)
    if out["files"]:
        _fsync_dir(folder)
        log.warning("recovered %d decision-log files (%d lines) left by a stopped process", out["files"],
                    out["lines"])
    return out


class DecisionLog:
    """Bounded queue + one writer thread + rotating, complete-or-absent Parquet files. Thread-safe.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> log = DecisionLog(folder, max_queue=10, replica_id="doc")
    >>> log.submit("feedback", [{"id": str(i), "event": "no_tap", "ts": 1.0, "received_ts": 1.0} for i in range(12)])
    10
    >>> stats = log.close()   # 2 did not fit: dropped, counted
    >>> stats["written"]["feedback"], stats["dropped"]["feedback"]
    (10, 2)
    """

    def __init__(
        self,
        folder: str | Path,
        max_queue: int = 100_000,
        rotate_bytes: int = 64 * 1024 * 1024,
        rotate_seconds: float = 300.0,
        flush_interval: float = 0.1,
        replica_id: str | None = None,
        row_group_rows: int = 10_000,
    ) -> None:
        if max_queue < 1 or rotate_bytes < 1 or rotate_seconds <= 0 or flush_interval <= 0 or row_group_rows < 1:
            raise ValueError("max_queue, rotate_bytes and row_group_rows must be >= 1, rotate_seconds and "
                             "flush_interval > 0")
        self.folder = check_log_dir(folder)
        # Default: host and pid, unique per process; a fleet passes its replica's name (`irp serve --replica-id`).
        self.replica_id = sanitize_replica_id(replica_id or f"{socket.gethostname()}-{os.getpid()}")
        # Replicas may share the folder: another host's journal untouched for twice the rotation age is abandoned.
        self.recovered = recover_orphans(self.folder, self.replica_id, stale_after_s=2 * rotate_seconds)
        self.max_queue, self.rotate_bytes, self.row_group_rows = max_queue, rotate_bytes, row_group_rows
        self.rotate_seconds, self.flush_interval = rotate_seconds, flush_interval
        self._pending: deque[tuple[str, dict[str, Any]]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._wake_at = max(1, max_queue // 2)
        self._streams: dict[tuple[str, str], _Stream] = {}  # (kind, partition) -> open file
        self._seq = 0
        # Per-kind counts; every key exists from the start (other threads read them while they change).
        self.submitted: Counter[str] = Counter(dict.fromkeys(KINDS, 0))  # under _cond
        self.written: Counter[str] = Counter(dict.fromkeys(KINDS, 0))  # writer thread only
        self._queue_dropped: Counter[str] = Counter(dict.fromkeys(KINDS, 0))  # under _cond: queue full / closed
        self._write_dropped: Counter[str] = Counter(dict.fromkeys(KINDS, 0))  # writer thread only: I/O errors
        self.write_errors = 0
        self.files_completed = 0
        self.max_depth = 0
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="irp-decision-log", daemon=True)
        self._thread.start()

    # ---- request side: O(1), never blocks on I/O ----------------------------------------------------------
    def submit(self, kind: str, events: list[dict[str, Any]]) -> int:
        """Queue events of `kind` ("decision" or "feedback"); returns how many were queued (the rest dropped)."""
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        with self._cond:
            room = 0 if self._closed else self.max_queue - len(self._pending)
            taken = events if len(events) <= room else events[: max(room, 0)]
            self._pending.extend((kind, e) for e in taken)
            self.submitted[kind] += len(taken)
            if len(taken) < len(events):
                self._queue_dropped[kind] += len(events) - len(taken)
            depth = len(self._pending)
            if depth > self.max_depth:
                self.max_depth = depth
            if depth >= self._wake_at:
                self._cond.notify()
        return len(taken)

    @property
    def dropped(self) -> dict[str, int]:
        """Events lost, by kind: the queue was full (or the log closed), or their write failed."""
        return {k: self._queue_dropped[k] + self._write_dropped[k] for k in KINDS}

    @property
    def depth(self) -> int:
        """Events queued and not yet written."""
        return len(self._pending)

    def stats(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "format": f"parquet (schema {LOG_SCHEMA_VERSION})",
                "replica_id": self.replica_id, "submitted": dict(self.submitted), "written": dict(self.written),
                "dropped": self.dropped, "queue_depth": self.depth, "max_queue_depth": self.max_depth,
                "max_queue": self.max_queue, "files_completed": self.files_completed,
                "write_errors": self.write_errors, "recovered": self.recovered,
                "rotate_bytes": self.rotate_bytes, "rotate_seconds": self.rotate_seconds}

    def close(self, timeout: float | None = 60.0) -> dict[str, Any]:
        """Stop taking events, write every queued one, finalize the open files; idempotent. Returns stats()."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return self.stats()

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- writer thread ------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._pending and not self._closed:
                    self._cond.wait(self.flush_interval)
                batch, self._pending = self._pending, deque()
                closing = self._closed
            try:
                if batch:
                    self._write(batch)
                self._rotate_aged()
            except Exception:  # never let the writer die: count and go on
                log.exception("decision log writer error")
            if closing:
                with self._cond:
                    if self._pending:  # submitted between the swap and the close flag: once more
                        continue
                for key in list(self._streams):
                    self._finish(key)
                return

    def _write(self, batch: deque[tuple[str, dict[str, Any]]]) -> None:
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for kind, event in batch:
            groups.setdefault((kind, partition(kind, event)), []).append(event)
        for key, events in groups.items():
            table, lines = self._encode(key[0], events)
            start = 0
            while start < len(lines):  # rotate by journal size between events (a group may span two files)
                stream = self._streams.get(key) or self._open(key)
                if stream is None:
                    self._write_dropped[key[0]] += len(lines) - start
                    break
                end, size, room = start, 0, self.rotate_bytes - stream.size
                while end < len(lines) and (size + len(lines[end]) <= room or (end == start and stream.size == 0)):
                    size += len(lines[end])
                    end += 1
                if end == start:  # the open file is full
                    self._finish(key)
                    continue
                try:
                    stream.journal.write(b"".join(lines[start:end]))
                    stream.journal.flush()  # to the OS: survives a SIGKILL of this process
                    stream.pending.append(table.slice(start, end - start))
                    stream.pending_rows += end - start
                    if stream.pending_rows >= self.row_group_rows:
                        stream.flush_row_group()
                except (OSError, pa.ArrowException) as e:
                    self.write_errors += 1
                    self._write_dropped[key[0]] += end - start
                    log.error("decision log: cannot write %s: %s; %d events dropped", stream.tmp, e, end - start)
                    self._abandon(key)
                    start = end
                    continue
                stream.size += size
                stream.rows += end - start
                self.written[key[0]] += end - start
                start = end
                if stream.size >= self.rotate_bytes:
                    self._finish(key)

    def _encode(self, kind: str, events: list[dict[str, Any]]) -> tuple[pa.Table, list[bytes]]:
        """The events as one Arrow table and as journal lines; an event that fits neither (never one of the
        server's own: a bug, not a crash) is dropped and counted."""
        try:
            return events_to_table(kind, events), [_journal_line(e) for e in events]
        except (pa.ArrowException, TypeError, ValueError):
            good, lines = [], []
            for event in events:
                try:
                    line = _journal_line(event)
                    events_to_table(kind, [event])
                except (pa.ArrowException, TypeError, ValueError):
                    self._write_dropped[kind] += 1
                    continue
                good.append(event)
                lines.append(line)
            return events_to_table(kind, good), lines

    def _rotate_aged(self) -> None:
        now = time.monotonic()
        for key, stream in list(self._streams.items()):
            if now - stream.opened >= self.rotate_seconds:
                self._finish(key)

    def _open(self, key: tuple[str, str]) -> _Stream | None:
        kind, part = key
        folder = self.folder / part
        name = f"{self.replica_id}-{self._file_id()}"
        final, tmp = folder / f"{name}.parquet", folder / f".{name}.parquet.tmp"
        journal_path = folder / f".{name}.{self._pid}{JOURNAL_SUFFIX}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            journal = open(journal_path, "xb")
            try:
                writer = pq.ParquetWriter(tmp, SCHEMAS[kind], compression="zstd")
            except (OSError, pa.ArrowException):
                journal.close()
                journal_path.unlink(missing_ok=True)
                raise
        except (OSError, pa.ArrowException) as e:
            self.write_errors += 1
            log.error("decision log: cannot open %s: %s", tmp, e)
            return None
        stream = _Stream(kind, folder, tmp, final, journal_path, journal, writer, time.monotonic())
        self._streams[key] = stream
        return stream

    def _file_id(self) -> str:
        """A unique, time-ordered 128-bit id (32 hex digits): milliseconds, a per-process sequence, 64 random
        bits; so a replica's files sort in the order they were opened (the reader's file order)."""
        self._seq += 1
        return f"{time.time_ns() // 1_000_000:012x}{self._seq & 0xFFFF:04x}{uuid.uuid4().int & (2**64 - 1):016x}"

    def _finish(self, key: tuple[str, str]) -> None:
        """Last row group, footer, fsync, rename: from now on the file is complete; then drop its journal."""
        stream = self._streams.pop(key, None)
        if stream is None:
            return
        try:
            stream.flush_row_group()
            stream.writer.close()
            stream.journal.close()
            if stream.rows:
                _fsync_file(stream.tmp)
                os.replace(stream.tmp, stream.final)
                _fsync_dir(stream.folder)
                self.files_completed += 1
            else:
                stream.tmp.unlink()
            stream.journal_path.unlink()
        except (OSError, pa.ArrowException) as e:
            self.write_errors += 1
            log.error("decision log: cannot finalize %s: %s (its journal stays for recovery)", stream.tmp, e)
            stream.close_quietly()

    def _abandon(self, key: tuple[str, str]) -> None:
        """After a write error: close without renaming; a later recover_orphans rebuilds the file from the
        journal's whole lines."""
        stream = self._streams.pop(key, None)
        if stream is not None:
            stream.close_quietly()


def _journal_line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode() + b"\n"


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def decision_event(record: dict[str, Any], answer: dict[str, Any], decision: Any, policy: dict[str, Any],
                   ts: float) -> dict[str, Any]:
    """One decision line (docs/loop.md): the request as received, the score and what the policy did."""
    return {
        "schema": SCHEMA_VERSION, "kind": "decision", "id": answer["id"], "ts": ts,
        "session_id": record["session_id"],
        "record": {"utterance": record["utterance"], "intent": record["intent"], "context": record["context"],
                   "products": record["products"], "screen_available": record["screen_available"]},
        "probability": answer["probability"], "threshold": answer["threshold"],
        "image_seeking": answer["image_seeking"], "suggest_switch": answer["suggest_switch"],
        "eligible": decision.eligible, "explored": decision.explored, "propensity": decision.propensity,
        "model_version": answer["model_version"], "policy": policy,
    }


def feedback_event(item: dict[str, Any], received: float) -> dict[str, Any]:
    """One feedback line (docs/loop.md)."""
    return {"schema": SCHEMA_VERSION, "kind": "feedback", "id": item["id"], "event": item["event"],
            "ts": item["ts"], "received_ts": received}
