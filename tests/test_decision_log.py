"""The decision log writer (irp.serve.decision_log): rotation, complete-or-absent files, drops, drain, recovery.

No model here: events are plain dicts; the files are read back with the offline reader (irp.logs), which is
the contract between `irp serve --log-dir` and `irp logs join`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from irp.logs.parquet_log import PARQUET_NAME
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
    """(complete Parquet files, dot-files) anywhere under the folder."""
    names = sorted(p for p in folder.rglob("*") if p.is_file())
    return [p for p in names if not p.name.startswith(".")], [p for p in names if p.name.startswith(".")]


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert condition()


def test_rotation_by_size_keeps_every_file_whole_and_in_order(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path, rotate_bytes=4_000, flush_interval=0.01, replica_id="pod/a 1", row_group_rows=7)
    for start in range(0, 300, 30):
        log.submit("decision", [event(i) for i in range(start, start + 30)])
        log.submit("feedback", [fb(i) for i in range(start, start + 30)])
        time.sleep(0.02)
    stats = log.close()
    complete, dots = files(tmp_path)
    assert not dots and stats["written"] == {"decision": 300, "feedback": 300} and stats["dropped"] == {
        "decision": 0, "feedback": 0}
    assert stats["replica_id"] == "pod_a_1" and stats["files_completed"] == len(complete)
    decision_files = [p for p in complete if "kind=decision" in p.parts]
    assert len(decision_files) >= 5
    for path in complete:  # DIR/kind=K/date=1970-01-01/hour=00/<replica>-<uuid>.parquet, zstd, whole
        rel = path.relative_to(tmp_path).parts
        assert rel[0] in ("kind=decision", "kind=feedback") and rel[1:3] == ("date=1970-01-01", "hour=00")
        assert PARQUET_NAME.match(path.name) and path.name.startswith("pod_a_1-")
        meta = pq.ParquetFile(path).metadata
        assert meta.row_group(0).column(0).compression == "ZSTD" and meta.metadata[b"irp.log.schema"] == b"2"
    decisions, feedback, scan = scan_log_dir(tmp_path)
    assert [d["id"] for d in decisions] == [f"r{i}" for i in range(300)]  # path order = write order
    assert decisions[0] == {**event(0), "schema": 2}  # every field back as submitted
    assert len(feedback) == 300 and scan.torn_lines == scan.invalid_lines == scan.foreign_files == 0


def test_events_go_to_the_partition_of_their_hour_and_duckdb_reads_them_in_place(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb", reason="duckdb is a core dependency: pip install -e .")
    log = DecisionLog(tmp_path, flush_interval=0.01)
    hour = 3600.0
    batch = [{**event(i), "ts": 1_764_000_000.0 + (i % 3) * hour} for i in range(30)]
    batch[0]["record"]["products"] = [{"title": "Boot", "color": "red", "size": ["40", "41"], "price": 120},
                                      {"title": "Lamp", "price": 9.5}]
    log.submit("decision", batch)
    log.close()
    parts = sorted({p.parent.relative_to(tmp_path).as_posix() for p in files(tmp_path)[0]})
    assert parts == ["kind=decision/date=2025-11-24/hour=16", "kind=decision/date=2025-11-24/hour=17",
                     "kind=decision/date=2025-11-24/hour=18"]
    con = duckdb.connect()
    source = f"read_parquet('{tmp_path}/kind=decision/**/*.parquet', hive_partitioning = true)"
    assert con.execute(f"SELECT count(*) FROM {source}").fetchall() == [(30,)]
    assert con.execute(f"SELECT count(*) FROM {source} WHERE date = '2025-11-24' AND hour = '17'").fetchall() == [(10,)]
    rows = con.execute(f"SELECT id, p.title, p.price, p.attributes['color'], p.list_attributes['size'] FROM {source}, "
                       "unnest(record.products) AS t(p) ORDER BY p.title").fetchall()
    assert rows == [("r0", "Boot", 120.0, "red", ["40", "41"]), ("r0", "Lamp", 9.5, None, None)]
    assert scan_log_dir(tmp_path)[0][0]["record"]["products"][0] == batch[0]["record"]["products"][0]  # 120 stays int


def test_rotation_by_time_completes_an_idle_file(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path, rotate_seconds=0.5, flush_interval=0.02)
    log.submit("decision", [event(i) for i in range(5)])
    wait_for(lambda: log.stats()["written"]["decision"] == 5)
    complete, dots = files(tmp_path)
    assert not complete and len(dots) == 2  # the Parquet file being written and its journal: invisible to readers
    assert scan_log_dir(tmp_path)[2].in_progress_files == 2 and not scan_log_dir(tmp_path)[0]
    wait_for(lambda: bool(files(tmp_path)[0]) and not files(tmp_path)[1])
    complete, dots = files(tmp_path)
    assert len(complete) == 1 and not dots  # rotated by age with no new event; the journal is gone
    log.submit("decision", [event(5)])
    log.close()
    assert sorted(d["id"] for d in scan_log_dir(tmp_path)[0]) == [f"r{i}" for i in range(6)]
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


KILLED_WRITER = """
import sys, time
sys.path.insert(0, sys.argv[2])
from test_decision_log import event
from irp.serve.decision_log import DecisionLog
log = DecisionLog(sys.argv[1], flush_interval=0.01, row_group_rows=100)
log.submit("decision", [event(i) for i in range(250)])
while log.stats()["written"]["decision"] < 250:
    time.sleep(0.01)
print("written", flush=True)
time.sleep(60)
"""


def test_sigkill_loses_nothing_written_the_journal_rebuilds_the_file(tmp_path: Path) -> None:
    # A Parquet file is unreadable without its footer: the journal is what a SIGKILL leaves behind.
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path), str(Path(__file__).parent)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    complete, dots = files(tmp_path)
    assert not complete and {p.name.endswith((".parquet.tmp", ".journal.jsonl")) for p in dots} == {True}
    journal = next(p for p in dots if p.name.endswith(".journal.jsonl"))
    with open(journal, "ab") as handle:
        handle.write(b'{"schema":1,"kind":"decis')  # as if killed mid-line
    got = recover_orphans(tmp_path)
    assert got["files"] == 1 and got["lines"] == 250 and got["torn_bytes"] > 0
    complete, dots = files(tmp_path)
    assert len(complete) == 1 and not dots and complete[0].name == journal.name[1:].rsplit(".", 3)[0] + ".parquet"
    decisions, _, scan = scan_log_dir(tmp_path)
    assert [d["id"] for d in decisions] == [f"r{i}" for i in range(250)] and scan.in_progress_files == 0


def test_orphaned_legacy_jsonl_file_is_recovered_whole(tmp_path: Path) -> None:
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
    assert (tmp_path / name).is_file() and FILE_PATTERN.match(name)


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
    log recovers its own replica's leftovers (and this host's), another host's only once idle long enough."""
    from irp.logs import scan_log_dir

    for replica in ("host-a-1f2e3d", "host-b-9c8b7a"):
        log = DecisionLog(tmp_path, replica_id=replica, flush_interval=0.01)
        log.submit("decision", [event(i) | {"id": f"{replica}-{i}"} for i in range(3)])
        log.close()
    complete, dots = files(tmp_path)
    assert not dots and sorted(p.name.rsplit("-", 1)[0] for p in complete) == ["host-a-1f2e3d", "host-b-9c8b7a"]
    assert scan_log_dir(tmp_path)[2].decision_files == 2
    # A killed writer of each replica left a journal (pid 999999: not running here).
    part = complete[0].parent
    journals = {r: part / f".{r}-{'0' * 32}.999999.journal.jsonl" for r in ("host-a-1f2e3d", "host-b-9c8b7a")}
    for k, path in enumerate(journals.values()):
        path.write_text(json.dumps(event(100 + k)) + "\n")
    assert recover_orphans(tmp_path, "host-a-1f2e3d")["files"] == 1  # its own
    assert recover_orphans(tmp_path, "host-c", stale_after_s=3600)["files"] == 0  # another host's, recently written
    os.utime(journals["host-b-9c8b7a"], (0, 0))
    assert recover_orphans(tmp_path, "host-c", stale_after_s=3600)["files"] == 1  # idle for ages: abandoned
    assert scan_log_dir(tmp_path)[2].decision_lines == 8
