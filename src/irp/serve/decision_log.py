"""The decision log: every scored record and every feedback event, written off the request path.

Request threads hand events to `DecisionLog.submit`, which appends them to a bounded in-memory queue and
returns at once; one background thread encodes them as JSON Lines and writes them. The file layout is the
contract read by `irp logs join` (docs/loop.md, irp.logs.reader):

    DIR/decisions-<YYYYmmddTHHMMSSffffff>Z-<replica>-<pid>-<seq:06d>.jsonl   complete files, one event a line
    DIR/feedback-<...>.jsonl

The replica id (`irp serve --replica-id`) makes names unique across hosts sharing one folder; a log without
one (`replica_id=""`) writes the older `...Z-<pid>-<seq>.jsonl` names, which readers also accept.
    DIR/.decisions-<...>.jsonl.tmp                                   the file being written (readers skip it)

Guarantees:
- Complete or absent. A file is written under its temporary dot-name, and fsynced, closed and renamed to its
  final name when it rotates (by size: `rotate_bytes`; by age: `rotate_seconds`, checked even when idle) or
  when the log closes. Every file without a leading dot is whole.
- Never blocks a request. A full queue drops the events that do not fit and counts them
  (`dropped[kind]`, Prometheus `irp_decision_log_dropped_total`); a write error (disk full) drops the batch
  being written, counts it, and the writer carries on with a fresh file.
- Nothing lost on a clean stop. `close()` (the server calls it on SIGTERM, after the last request was
  answered) drains the queue and finalizes the open files.
- Bounded loss on a crash. The writer writes each batch to the OS as soon as it wakes (every
  `flush_interval` s, or sooner when the queue is half full), so a SIGKILL loses at most the events still in
  the queue. The temporary file it leaves behind is recovered by the next `DecisionLog` of the same replica id
  on the same folder: cut after its last complete line, renamed to its final name (`recovered` in `stats()`).
  Other replicas' files are never touched (their pids mean nothing on this host).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("irp.serve.decision_log")

KINDS = {"decision": "decisions", "feedback": "feedback"}  # event kind -> file name prefix
SCHEMA_VERSION = 1
TMP_PATTERN = re.compile(
    r"^\.((?:decisions|feedback)-\d{8}T\d{6}\d*Z-(?:([A-Za-z0-9][A-Za-z0-9_.-]*)-)?(\d+)-\d{6}\.jsonl)\.tmp$")


class LogDirError(Exception):
    """The log folder cannot be used (not creatable, not a folder, not writable)."""


@dataclass
class _Stream:
    """The open temporary file of one kind."""

    kind: str
    tmp: Path
    final: Path
    handle: IO[bytes]
    opened: float  # monotonic seconds
    size: int = 0
    lines: int = 0


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


def recover_orphans(folder: str | Path, replica_id: str = "", stale_after_s: float | None = None) -> dict[str, int]:
    """Finalize the temporary files that a killed process of this replica left in `folder` (`replica_id`, or
    the older names without one): keep every complete line (cut after the last newline), fsync, rename to the
    final name. Files of a live process are left alone, and so are other replicas' files (their pids mean
    nothing here) unless untouched for `stale_after_s` seconds: a live writer rotates its files long before.

    Returns counts: files, lines, and bytes of torn last lines discarded.
    """
    folder = Path(folder)
    out = {"files": 0, "lines": 0, "torn_bytes": 0}
    for path in sorted(folder.iterdir()):
        match = TMP_PATTERN.match(path.name)
        if match is None or not path.is_file():
            continue
        if (match.group(2) or "") == replica_id:
            if _pid_alive(int(match.group(3))):
                continue
        else:
            try:
                idle = time.time() - path.stat().st_mtime
            except OSError:  # renamed meanwhile by its own writer
                continue
            if stale_after_s is None or idle < stale_after_s:
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
    """Bounded queue + one writer thread + rotating, complete-or-absent JSONL files. Thread-safe.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> log = DecisionLog(folder, max_queue=10)
    >>> log.submit("decision", [{"id": str(i)} for i in range(12)])   # 2 do not fit: dropped, counted
    10
    >>> stats = log.close()
    >>> stats["written"]["decision"], stats["dropped"]["decision"]
    (10, 2)
    """

    def __init__(
        self,
        folder: str | Path,
        max_queue: int = 100_000,
        rotate_bytes: int = 64 * 1024 * 1024,
        rotate_seconds: float = 300.0,
        flush_interval: float = 0.1,
        replica_id: str = "",
    ) -> None:
        if max_queue < 1 or rotate_bytes < 1 or rotate_seconds <= 0 or flush_interval <= 0:
            raise ValueError("max_queue and rotate_bytes must be >= 1, rotate_seconds and flush_interval > 0")
        self.folder = check_log_dir(folder)
        self.replica_id = replica_id  # in every file name: replicas can share one folder
        # Another replica's file untouched for twice the rotation age is abandoned (its writer was killed).
        self.recovered = recover_orphans(self.folder, replica_id, stale_after_s=2 * rotate_seconds)
        self.max_queue, self.rotate_bytes = max_queue, rotate_bytes
        self.rotate_seconds, self.flush_interval = rotate_seconds, flush_interval
        self._pending: deque[tuple[str, dict[str, Any]]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._wake_at = max(1, max_queue // 2)
        self._streams: dict[str, _Stream] = {}
        self._seq: Counter[str] = Counter()
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
        return {"folder": str(self.folder), "submitted": dict(self.submitted), "written": dict(self.written),
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
                for kind in list(self._streams):
                    self._finish(kind)
                return

    def _write(self, batch: deque[tuple[str, dict[str, Any]]]) -> None:
        lines: dict[str, list[bytes]] = {}
        for kind, event in batch:
            try:
                line = json.dumps(event, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
            except (TypeError, ValueError):  # never from the server's own events; a bug, not a crash
                self._write_dropped[kind] += 1
                continue
            lines.setdefault(kind, []).append(line + b"\n")
        for kind, chunk in lines.items():
            # Rotate by size between lines (a batch may span two files), never inside one.
            start = 0
            while start < len(chunk):
                stream = self._streams.get(kind) or self._open(kind)
                if stream is None:
                    self._write_dropped[kind] += len(chunk) - start
                    break
                end, size = start, 0
                room = self.rotate_bytes - stream.size
                while end < len(chunk) and (size + len(chunk[end]) <= room or (end == start and stream.size == 0)):
                    size += len(chunk[end])
                    end += 1
                if end == start:  # the open file is full
                    self._finish(kind)
                    continue
                try:
                    stream.handle.write(b"".join(chunk[start:end]))
                    stream.handle.flush()  # to the OS: survives a SIGKILL of this process
                except OSError as e:
                    self.write_errors += 1
                    self._write_dropped[kind] += end - start
                    log.error("decision log: cannot write %s: %s; %d events dropped", stream.tmp, e, end - start)
                    self._abandon(kind)
                    start = end
                    continue
                stream.size += size
                stream.lines += end - start
                self.written[kind] += end - start
                start = end
                if stream.size >= self.rotate_bytes:
                    self._finish(kind)

    def _rotate_aged(self) -> None:
        now = time.monotonic()
        for kind, stream in list(self._streams.items()):
            if now - stream.opened >= self.rotate_seconds:
                self._finish(kind)

    def _open(self, kind: str) -> _Stream | None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        while True:
            replica = f"{self.replica_id}-" if self.replica_id else ""
            name = f"{KINDS[kind]}-{stamp}Z-{replica}{self._pid}-{self._seq[kind]:06d}.jsonl"
            self._seq[kind] += 1
            final, tmp = self.folder / name, self.folder / f".{name}.tmp"
            if not final.exists() and not tmp.exists():
                break
        try:
            handle = open(tmp, "xb")
        except OSError as e:
            self.write_errors += 1
            log.error("decision log: cannot open %s: %s", tmp, e)
            return None
        stream = _Stream(kind, tmp, final, handle, time.monotonic())
        self._streams[kind] = stream
        return stream

    def _finish(self, kind: str) -> None:
        """fsync, close and rename the open file of `kind`: from now on it is complete."""
        stream = self._streams.pop(kind, None)
        if stream is None:
            return
        try:
            stream.handle.flush()
            os.fsync(stream.handle.fileno())
            stream.handle.close()
            if stream.lines:
                os.replace(stream.tmp, stream.final)
                _fsync_dir(self.folder)
                self.files_completed += 1
            else:
                stream.tmp.unlink()
        except OSError as e:
            self.write_errors += 1
            log.error("decision log: cannot finalize %s: %s", stream.tmp, e)
            try:
                stream.handle.close()
            except OSError:
                pass

    def _abandon(self, kind: str) -> None:
        """After a write error: close the file without renaming (its lines may be torn); a later
        recover_orphans cuts it to whole lines."""
        stream = self._streams.pop(kind, None)
        if stream is not None:
            try:
                stream.handle.close()
            except OSError:
                pass


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
