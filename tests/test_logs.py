"""`irp logs join`: decision log + feedback -> labelled records (hand-written logs, no server needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_bench, make_records
from irp.data.io import load_records
from irp.logs import join_logs, joined_records, scan_log_dir

IRP = [sys.executable, "-m", "irp.cli"]
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def run_irp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(IRP + list(args), capture_output=True, text=True, env=ENV)


def decision(record: dict, offered: bool, ts: float, eligible: bool = True, explore: float = 0.2,
             threshold: float = 0.5) -> dict:
    prob = 0.8 if offered else 0.3
    above = prob >= threshold
    propensity = ((1 - explore) * above + explore * 0.5) if eligible else 0.0
    explored = offered != above
    request = {k: record.get(k) for k in ("utterance", "intent", "context", "products", "screen_available")}
    return {"schema": 1, "kind": "decision", "id": record["id"], "ts": ts, "session_id": record.get("session_id"),
            "record": request, "probability": prob, "threshold": threshold, "image_seeking": above,
            "suggest_switch": offered, "eligible": eligible, "explored": explored, "propensity": propensity,
            "model_version": "A", "policy": {"name": "threshold+cooldown+explore", "cooldown_s": 0.0,
                                              "explore_rate": explore}}


def feedback(record_id: str, event: str, ts: float = 10.0) -> dict:
    return {"schema": 1, "kind": "feedback", "id": record_id, "event": event, "ts": ts, "received_ts": ts}


def write_lines(path: Path, objs: list, tail: bytes = b"") -> None:
    path.write_bytes(b"".join(json.dumps(o).encode() + b"\n" for o in objs) + tail)


def name(kind: str, seq: int, pid: int = 4242) -> str:
    return f"{kind}-20261202T101500{seq:06d}Z-{pid}-{seq:06d}.jsonl"


def make_log(folder: Path, n: int = 120) -> dict:
    """A log of n decisions (every 3rd offered, every 10th ineligible) with feedback from make_records."""
    records = make_records(n, seed=5)
    decisions, events = [], []
    for i, r in enumerate(records):
        eligible = i % 10 != 9
        offered = eligible and i % 3 == 0
        decisions.append(decision(r, offered, ts=1000.0 + i, eligible=eligible))
        if i % 7 == 6:
            continue  # no feedback at all for this one
        events.append(feedback(r["id"], "carousel_tap" if r["label"] else "no_tap"))
        if offered:
            events.append(feedback(r["id"], "offer_accepted" if r["label"] else "offer_declined"))
    half = len(decisions) // 2
    write_lines(folder / name("decisions", 1), decisions[:half])
    write_lines(folder / name("decisions", 2), decisions[half:])
    write_lines(folder / name("feedback", 1), events)
    return {"records": records, "decisions": decisions, "events": events}


def test_join_rules(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    report, out = join_logs(tmp_path, tmp_path / "out.jsonl")
    records = log["records"]
    assert report.records == len(records) == len(out)
    assert [r["id"] for r in out] == [r["id"] for r in records]  # decision time order
    for i, (r, j) in enumerate(zip(records, out)):
        no_feedback = i % 7 == 6
        assert j["label"] == (0 if no_feedback else r["label"])  # no tap logged = 0
        assert j["tap"] == j["label"]
        assert j["offered"] == (i % 10 != 9 and i % 3 == 0)
        assert j["accepted"] == (None if not j["offered"] else (0 if no_feedback else r["label"]))
        assert j["eligible"] == (i % 10 != 9) and j["model_version"] == "A"
        assert j["propensity"] == log["decisions"][i]["propensity"]
        assert j["logged_probability"] in (0.8, 0.3) and j["logged_threshold"] == 0.5
        assert j["utterance"] == r["utterance"] and j["products"] == r["products"]
        assert "true_intent" not in j or j["true_intent"] is None
    assert report.without_feedback == sum(i % 7 == 6 for i in range(len(records)))
    assert report.unknown_feedback == report.duplicate_feedback == report.scan.torn_lines == 0

    strict, out2 = join_logs(tmp_path, None, require_feedback=True)
    assert strict.records == len(records) - report.without_feedback
    assert strict.dropped["no feedback (--require-feedback)"] == report.without_feedback

    acc, out3 = join_logs(tmp_path, None, label="accept")
    assert all(r["offered"] for r in out3) and acc.records == report.offered
    assert [r["label"] for r in out3] == [r["accepted"] for r in out3]


def test_duplicates_unknown_conflicts_and_answers_without_offer() -> None:
    recs = make_records(4, seed=1)
    ds = [decision(recs[0], True, 1.0), decision(recs[1], False, 2.0), decision(recs[2], True, 3.0),
          decision(recs[0], False, 4.0)]  # recs[0] logged twice: the first decision is kept
    fb = [feedback(recs[0]["id"], "carousel_tap"), feedback(recs[0]["id"], "carousel_tap"),  # duplicate
          feedback("nobody", "no_tap"),  # unknown id
          feedback(recs[1]["id"], "offer_accepted"),  # answer to no offer
          feedback(recs[2]["id"], "offer_declined"), feedback(recs[2]["id"], "offer_accepted"),  # conflict
          feedback(recs[2]["id"], "no_tap"), feedback(recs[2]["id"], "carousel_tap")]  # conflict
    from irp.logs import JoinReport, LogScan

    report = JoinReport(scan=LogScan())
    out = {r["id"]: r for r in joined_records(ds, fb, report=report)}
    assert report.duplicate_decisions == 1 and report.duplicate_feedback == 1 and report.unknown_feedback == 1
    assert report.feedback_without_offer == 1 and report.conflicting_feedback == 2
    assert out[recs[0]["id"]]["offered"] is True and out[recs[0]["id"]]["label"] == 1
    assert out[recs[1]["id"]]["accepted"] is None
    assert out[recs[2]["id"]]["accepted"] == 1 and out[recs[2]["id"]]["label"] == 1  # positives win
    assert len(out) == 3


def test_torn_foreign_and_in_progress_files_are_counted_not_fatal(tmp_path: Path) -> None:
    recs = make_records(6, seed=2)
    good = [decision(r, False, float(i)) for i, r in enumerate(recs[:4])]
    write_lines(tmp_path / name("decisions", 1), good[:2], tail=b'{"schema": 1, "kind": "deci')  # torn last line
    write_lines(tmp_path / name("decisions", 2), [good[2], {"schema": 2, "kind": "decision"},
                                                  {**good[3], "propensity": "high"}, [1, 2],
                                                  feedback(recs[0]["id"], "no_tap")])
    (tmp_path / name("decisions", 3)).write_bytes(b"\xff\xfe garbage \x00\n")
    write_lines(tmp_path / ("." + name("decisions", 4) + ".tmp"), [decision(recs[5], False, 9.0)])  # being written
    write_lines(tmp_path / "notes.jsonl", [decision(recs[4], False, 9.0)])  # foreign
    (tmp_path / "decisions-archive").mkdir()  # foreign folder
    bad_event = {"schema": 1, "kind": "feedback", "id": recs[1]["id"], "event": "like"}
    write_lines(tmp_path / name("feedback", 1), [feedback(recs[0]["id"], "carousel_tap"), bad_event])
    decisions, events, scan = scan_log_dir(tmp_path)
    assert [d["id"] for d in decisions] == [r["id"] for r in recs[:3]]
    assert len(events) == 1
    assert scan.torn_lines == 2  # the torn tail and the garbage file's line
    assert scan.invalid_lines == 5  # schema 2, bad propensity, an array, a feedback in a decision file, bad event
    assert scan.in_progress_files == 1 and scan.foreign_files == 2
    assert scan.decision_files == 3 and scan.feedback_files == 1
    report, out = join_logs(tmp_path, tmp_path / "o.jsonl")
    assert report.records == 3 and out[0]["label"] == 1


def test_missing_folder_and_empty_join_exit_codes(tmp_path: Path) -> None:
    proc = run_irp("logs", "join", "--log-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 2 and "no such folder" in proc.stderr
    proc = run_irp("logs", "join", "--log-dir", str(tmp_path), "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 1 and not (tmp_path / "o.jsonl").exists()
    proc = run_irp("logs", "join", "--log-dir", str(tmp_path), "--out", str(tmp_path / "o.csv"))
    assert proc.returncode == 2
    proc = run_irp("logs", "join", "--log-dir", str(tmp_path), "--out", str(tmp_path / "o.jsonl"), "--label", "x")
    assert proc.returncode == 2


def test_output_validates_and_trains(tmp_path: Path, tiny_backbone: str) -> None:
    """The loop closes: join -> irp validate (exit 0) -> irp train on the joined records as they are."""
    logs = tmp_path / "logs"
    logs.mkdir()
    make_log(logs, n=240)
    for fmt in ("jsonl", "parquet"):
        proc = run_irp("logs", "join", "--log-dir", str(logs), "--out", str(tmp_path / f"joined.{fmt}"),
                       "--json", str(tmp_path / "report.json"))
        assert proc.returncode == 0, proc.stderr
        proc = run_irp("validate", str(tmp_path / f"joined.{fmt}"))
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads((tmp_path / "report.json").read_text())["records"] == 240
    assert load_records(tmp_path / "joined.jsonl") == load_records(tmp_path / "joined.parquet")
    proc = run_irp("train", "--train", str(tmp_path / "joined.jsonl"), "--valid", str(tmp_path / "joined.parquet"),
                   "--out", str(tmp_path / "model"), "--backbone", tiny_backbone, "--max-steps", "4",
                   "--batch-size", "16", "--device", "cpu", "--no-cache")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "model" / "model.safetensors").exists()


def tricky_parquet_log(folder: Path, n: int = 300) -> None:
    """A Parquet log (written by the server's DecisionLog) with every case the join rules name."""
    from irp.serve.decision_log import DecisionLog

    records = make_records(n, seed=11)
    decisions, events = [], []
    for i, r in enumerate(records):
        eligible = i % 10 != 9
        offered = eligible and i % 3 == 0
        d = decision(r, offered, ts=1_764_000_000.0 + 7 * i, eligible=eligible)
        if i % 50 == 1:
            d["record"]["utterance"] = f"  padded {i}\u00a0"  # not normalized: validate_record strips it
        if i % 50 == 2:
            d["record"]["utterance"] = " \t "  # an invalid request: counted, dropped
        if i % 50 == 3:
            d["record"]["intent"] = None  # -> "unknown"
        if i % 50 == 4:
            d["propensity"] = 1.5  # breaks the contract
        if i % 50 == 6:
            d["record"]["products"], d["record"]["context"] = None, None  # absent: [] in the record
        decisions.append(d)
        if i % 40 == 5:
            decisions.append({**d, "model_version": "dup"})  # a repeated id: the first wins
        if i % 7 == 6:
            continue
        late = 90_000.0 if i % 11 == 0 else 30.0
        events.append(feedback(r["id"], "carousel_tap" if r["label"] else "no_tap", d["ts"] + late))
        if i % 13 == 0:
            events.append(feedback(r["id"], "carousel_tap" if r["label"] else "no_tap", d["ts"] + 40))  # duplicate
        if i % 17 == 0:
            events.append(feedback(r["id"], "no_tap" if r["label"] else "carousel_tap", d["ts"] + 50))  # conflict
        if offered or i % 19 == 0:
            events.append(feedback(r["id"], "offer_accepted" if r["label"] else "offer_declined", d["ts"] + 60))
    events.append(feedback("nobody", "no_tap", 1_764_000_000.0))
    log = DecisionLog(folder, flush_interval=0.01, replica_id="a", rotate_bytes=200_000, row_group_rows=64)
    log.submit("decision", decisions)
    log.submit("feedback", events)
    stats = log.close()
    assert stats["written"] == {"decision": len(decisions), "feedback": len(events)}


@pytest.mark.parametrize("label", ["tap", "accept"])
@pytest.mark.parametrize("require", [False, True])
def test_duckdb_join_equals_the_python_join(tmp_path: Path, label: str, require: bool) -> None:
    from irp.logs.duck import join_logs_duckdb

    log = tmp_path / "log"
    log.mkdir()
    tricky_parquet_log(log)
    make_log(log, n=60)  # legacy JSONL files in the same folder
    partition = next((log / "kind=decision").glob("date=*/hour=*"))
    (partition / "b-0123456789abcdef0123456789abcdef.parquet").write_bytes(b"PAR1 truncated")  # unreadable
    good = next(partition.glob("a-*.parquet"))
    (partition / "c-0123456789abcdef0123456789abcde0.parquet").write_bytes(good.read_bytes()[:-100])  # cut footer
    py_report, _ = join_logs(log, tmp_path / "py.jsonl", label, require, window_s=86_400)  # type: ignore[arg-type]
    for out in ("duck.parquet", "duck.jsonl"):
        report = join_logs_duckdb(log, tmp_path / out, label, require, window_s=86_400)  # type: ignore[arg-type]
        assert load_records(tmp_path / out) == load_records(tmp_path / "py.jsonl")
        got, want = report.to_dict(), py_report.to_dict()
        examples = [sorted(e.split(":")[0] for e in r["scan"].pop("examples")) for r in (got, want)]
        assert {**got, "engine": "python"} == want and examples[0] == examples[1]
    assert py_report.late_feedback > 0 and py_report.duplicate_decisions > 0 and py_report.scan.unreadable_files == 2
    assert py_report.conflicting_feedback > 0 and py_report.dropped["invalid request record"] > 0


def test_join_cli_takes_several_folders_and_globs_and_refuses_bad_flags(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from irp.cli import app

    for day in ("day1", "day2"):
        (tmp_path / day).mkdir()
        tricky_parquet_log(tmp_path / day, n=40 if day == "day1" else 30)
    runner = CliRunner()
    base = ["logs", "join", "--out", str(tmp_path / "o.parquet")]
    both = runner.invoke(app, [*base, "--log-dir", str(tmp_path / "day1"), "--log-dir", str(tmp_path / "day2"),
                               "--json", str(tmp_path / "r.json")])
    assert both.exit_code == 0, both.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["engine"] == "duckdb" and report["scan"]["decision_files"] >= 2
    assert report["records"] + sum(report["dropped"].values()) == report["decisions"] >= 65  # both folders read (70 less the contract breaks)
    globbed = runner.invoke(app, [*base, "--log-dir", str(tmp_path / "day*"), "--json", str(tmp_path / "g.json")])
    assert globbed.exit_code == 0 and json.loads((tmp_path / "g.json").read_text()) == report
    for flags, needle in ((["--feedback-window-s", "0"], "--feedback-window-s"),
                          (["--feedback-window-s", "-5"], "--feedback-window-s"),
                          (["--memory-limit", "lots"], "--memory-limit"), (["--engine", "spark"], "--engine")):
        bad = runner.invoke(app, [*base, "--log-dir", str(tmp_path / "day1"), *flags])
        assert bad.exit_code == 2 and needle in bad.output, bad.output
    nothing = runner.invoke(app, [*base, "--log-dir", str(tmp_path / "nope*")])
    assert nothing.exit_code == 2 and "matches nothing" in nothing.output


@pytest.mark.slow
def test_duckdb_join_equals_the_python_join_on_100k_decisions(tmp_path: Path) -> None:
    """The issue's check at volume: the same 100,000-decision log (with feedback, late feedback included) as
    Parquet and as the JSON Lines of older servers; the DuckDB join and the in-memory join agree on every
    record, label and count."""
    import importlib.util

    from irp.data.io import iter_records
    from irp.logs.duck import join_logs_duckdb

    bench = load_bench("logs_scale")
    pool = bench.request_pool(tmp_path, n=5_000)
    bench.generate(tmp_path / "parquet", 100_000, pool, seed=7, chunk=40_000, jsonl=tmp_path / "jsonl")
    report = join_logs_duckdb(tmp_path / "parquet", tmp_path / "new.parquet", window_s=86_400)
    old, _ = join_logs(tmp_path / "jsonl", tmp_path / "old.jsonl", window_s=86_400)
    got, want = report.to_dict(), old.to_dict()
    for r in (got, want):
        r.pop("engine"), r["scan"].pop("examples"), r["scan"].pop("decision_files"), r["scan"].pop("feedback_files")
    assert got == want and want["records"] == 100_000 and want["late_feedback"] > 0
    for a, b in zip(iter_records(tmp_path / "new.parquet"), iter_records(tmp_path / "old.jsonl"), strict=True):
        assert a == b
