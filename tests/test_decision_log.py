"""The decision log writer (irp.serve.decision_log): rotation, complete-or-absent files, drops, drain, recovery.

No model here: events are plain dicts; the files are read back with the offline reader (irp.logs), which is
the contract between `irp serve --log-dir` and `irp logs join`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from irp.logs.reader import FILE_PATTERN, scan_log_dir
from irp.serve.decision_log import DecisionLog, LogDirError, check_log_dir, recover_orphans


def event(i: int, pad: int = 0) -> dict:
    """A decision line that irp.logs.reader accepts."""
    return {"schema": 1, "kind": "decision", "id": f"r{i}", "ts": 1000.0 + i, "session_id": None,
            "record": {"utterance": f"red dress {i}" + "x" * pad, "intent": "search", "context": [], "products": [],
                       "screen_available": None},
            "probability": 0.7, "threshold": 0.5, "image_seeking": True, "suggest_switch": True, "eligible": True,
            "explored": False, "propensity": 0.9, "model_version": "v1",
            "policy": {"name": "threshold+cooldown+explore", "cooldown_s": 0.0, "explore_rate": 0.2}}


def fb(i: int) -> dict:
    return {"schema": 1, "kind": "feedback", "id": f"r{i}", "event": "no_tap", "ts": 2000.0 + i, "received_ts": 1.0}


def files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(complete files, dot-files) in the folder."""
    names = sorted(folder.iterdir())
    return [p for p in names if not p.name.startswith(".")], [p for p in names if p.name.startswith(".")]


def test_rotation_by_size_keeps_every_file_whole_and_in_order(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path, rotate_bytes=4_000, flush_interval=0.01)
    for start in range(0, 300, 30):
        log.submit("decision", [event(i) for i in range(start, start + 30)])
        log.submit("feedback", [fb(i) for i in range(start, start + 30)])
        time.sleep(0.02)
    stats = log.close()
    complete, dots = files(tmp_path)
    assert not dots and stats["written"] == {"decision": 300, "feedback": 300} and stats["dropped"] == {
        "decision": 0, "feedback": 0}
    decision_files = [p for p in complete if p.name.startswith("decisions-")]
    assert len(decision_files) >= 5 and all(FILE_PATTERN.match(p.name) for p in complete)
    line = len(json.dumps(event(0), separators=(",", ":")))
    assert all(p.stat().st_size <= 4_000 + line for p in complete)  # rotated at a line boundary past the size
    decisions, feedback, scan = scan_log_dir(tmp_path)
    assert [d["id"] for d in decisions] == [f"r{i}" for i in range(300)]  # name order = write order
    assert len(feedback) == 300 and scan.torn_lines == scan.invalid_lines == scan.foreign_files == 0


def test_rotation_by_time_completes_an_idle_file(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path, rotate_seconds=0.3, flush_interval=0.02)
    log.submit("decision", [event(i) for i in range(5)])
    time.sleep(0.1)
    complete, dots = files(tmp_path)
    assert not complete and len(dots) == 1  # being written: invisible to readers
    assert scan_log_dir(tmp_path)[2].in_progress_files == 1 and not scan_log_dir(tmp_path)[0]
    deadline = time.monotonic() + 5
    while not files(tmp_path)[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    complete, dots = files(tmp_path)
    assert len(complete) == 1 and not dots  # rotated by age with no new event
    log.submit("decision", [event(5)])
    log.close()
    assert [d["id"] for d in scan_log_dir(tmp_path)[0]] == [f"r{i}" for i in range(6)]
    assert len(files(tmp_path)[0]) == 2


def test_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path, max_queue=8, flush_interval=10.0)  # the writer sleeps: nothing drains meanwhile
    started = time.perf_counter()
    assert log.submit("decision", [event(i) for i in range(5)]) == 5
    assert log.submit("decision", [event(i) for i in range(5, 10)]) == 3  # 3 fit, 2 dropped
    assert log.submit("feedback", [fb(1)]) == 0
    assert time.perf_counter() - started < 0.5
    assert log.dropped == {"decision": 2, "feedback": 1}
    stats = log.close()
    assert stats["written"] == {"decision": 8, "feedback": 0}
    assert len(scan_log_dir(tmp_path)[0]) == 8


def test_close_drains_the_queue_and_is_idempotent(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path, flush_interval=5.0)
    threads = [threading.Thread(target=lambda k=k: [log.submit("decision", [event(k * 1000 + i)]) for i in range(500)])
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = log.close()
    assert stats["written"]["decision"] == 2000 and stats["queue_depth"] == 0
    assert log.close()["written"]["decision"] == 2000
    assert log.submit("decision", [event(1)]) == 0 and log.dropped["decision"] == 1  # closed: counted, not lost silently
    decisions, _, scan = scan_log_dir(tmp_path)
    assert len({d["id"] for d in decisions}) == 2000 and scan.in_progress_files == 0


def test_orphaned_temporary_file_is_recovered_whole(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    name = f"decisions-20261203T101500123456Z-{dead.pid}-000003.jsonl"
    lines = b"".join(json.dumps(event(i)).encode() + b"\n" for i in range(3))
    (tmp_path / f".{name}.tmp").write_bytes(lines + b'{"schema": 1, "kind": "decis')  # killed mid-line
    alive = f".decisions-20261203T101500123456Z-{os.getpid() + 0}-000004.jsonl.tmp"  # our own pid: a restart
    (tmp_path / alive).write_bytes(b"")
    got = recover_orphans(tmp_path)
    assert got["files"] == 1 and got["lines"] == 3 and got["torn_bytes"] > 0
    decisions, _, scan = scan_log_dir(tmp_path)
    assert len(decisions) == 3 and scan.torn_lines == 0 and scan.in_progress_files == 0
    assert (tmp_path / name).is_file()


def test_unusable_folders_are_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(LogDirError, match="not a folder|cannot create"):
        check_log_dir(a_file)
    with pytest.raises(LogDirError, match="cannot create"):
        check_log_dir(a_file / "sub")
    assert check_log_dir(tmp_path / "new" / "deeper").is_dir()
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(LogDirError, match="not writable"):
            check_log_dir(locked)


def test_replicas_share_a_folder_without_collisions(tmp_path: Path) -> None:
    """Two replicas write into one folder: their names carry the replica id, the reader takes both, and a new
    log recovers only its own replica's leftovers (or another's, once it has been idle long enough)."""
    import os

    from irp.logs import scan_log_dir
    from irp.serve.decision_log import recover_orphans

    logs = [DecisionLog(tmp_path, replica_id=r, flush_interval=0.01) for r in ("host-a-1f2e3d", "host-b-9c8b7a")]
    for k, log in enumerate(logs):
        log.submit("decision", [{"schema": 1, "kind": "decision", "id": f"{k}-{i}"} for i in range(3)])
        log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and "-host-a-1f2e3d-" in names[0] + names[1] and "-host-b-9c8b7a-" in names[0] + names[1]
    assert scan_log_dir(tmp_path)[2].decision_files == 2
    # A killed writer of each replica left a dot-file (pid 999999: not running here).
    for replica in ("host-a-1f2e3d", "host-b-9c8b7a"):
        (tmp_path / f".decisions-20260101T000000000000Z-{replica}-999999-000000.jsonl.tmp").write_bytes(b'{"a":1}\n')
    assert recover_orphans(tmp_path, "host-a-1f2e3d")["files"] == 1  # its own only
    assert recover_orphans(tmp_path, "host-c", stale_after_s=3600)["files"] == 0  # another's, recently written
    stale = tmp_path / ".decisions-20260101T000000000000Z-host-b-9c8b7a-999999-000000.jsonl.tmp"
    os.utime(stale, (0, 0))
    assert recover_orphans(tmp_path, "host-c", stale_after_s=3600)["files"] == 1  # idle for ages: abandoned
