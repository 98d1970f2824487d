"""`irp validate` end to end: every bad-input case, exit codes, quarantine and clean outputs."""

from __future__ import annotations

import base64
import gzip
import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from irp.cli import app
from irp.data.io import load_records, write_records
from irp.schema import validate_record
from irp.validate import validate_file

GoodRecord = Callable[[int], dict[str, Any]]
runner = CliRunner()

# (case, verbatim line, field named on stderr, reason fragment): one of every kind of bad input.
BAD_LINES: list[tuple[str, bytes, str, str]] = [
    ("invalid json", b'{"utterance": "red dress",', "record", "invalid JSON"),
    ("truncated json", b'{"utterance": "x"} trailing', "record", "invalid JSON: Extra data"),
    ("array", b"[1, 2, 3]", "record", "must be a JSON object, got array"),
    ("bare string", b'"find me shoes"', "record", "got string"),
    ("bare number", b"42", "record", "got number"),
    ("null", b"null", "record", "got null"),
    ("missing utterance", b'{"intent": "search", "products": []}', "utterance", "missing"),
    ("empty utterance", b'{"utterance": ""}', "utterance", "empty or whitespace-only"),
    ("whitespace utterance", b'{"utterance": " \\t\\n  "}', "utterance", "empty or whitespace-only"),
    ("long utterance", b'{"utterance": "' + b"a" * 2001 + b'"}', "utterance", "too long: 2001 characters"),
    ("number utterance", b'{"utterance": 12}', "utterance", "must be a string, got number"),
    ("string products", b'{"utterance": "u", "products": "lamp"}', "products", "must be an array of objects"),
    ("product without title", b'{"utterance": "u", "products": [{"brand": "Acme"}]}', "products[0].title", "missing"),
    ("product not object", b'{"utterance": "u", "products": [{"title": "a"}, 7]}', "products[1]", "must be an object"),
    ("nested attribute", b'{"utterance": "u", "products": [{"title": "a", "dims": {"w": 2}}]}', "products[0].dims",
     "must be a string or an array of strings, got object"),
    ("number attribute", b'{"utterance": "u", "products": [{"title": "a", "color": 3}]}', "products[0].color",
     "got number"),
    ("bad price", b'{"utterance": "u", "products": [{"title": "a", "price": "cheap"}]}', "products[0].price",
     "must be a number"),
    ("51 products", b'{"utterance": "u", "products": [' + b",".join([b'{"title": "t"}'] * 51) + b"]}", "products",
     "too many: 51 (max 50)"),
    ("label 2", b'{"utterance": "u", "label": 2}', "label", "must be 0 or 1, got 2"),
    ("label true", b'{"utterance": "u", "label": true}', "label", "must be 0 or 1, got boolean"),
    ("label string", b'{"utterance": "u", "label": "1"}', "label", "got string"),
    ("number intent", b'{"utterance": "u", "intent": 5}', "intent", "must be a string"),
    ("empty intent", b'{"utterance": "u", "intent": ""}', "intent", "empty"),
    ("string context", b'{"utterance": "u", "context": "hi"}', "context", "must be an array of strings"),
    ("screen string", b'{"utterance": "u", "screen_available": "yes"}', "screen_available", "true or false"),
    ("session list", b'{"utterance": "u", "session_id": []}', "session_id", "must be a string"),
    ("true_intent 3", b'{"utterance": "u", "true_intent": 3}', "true_intent", "must be 0 or 1"),
    ("invalid utf-8", b'{"utterance": "caf\xe9 au lait"}', "record", "invalid UTF-8 at byte 19"),
    ("lone surrogate", b'{"utterance": "\\udc80"}', "record", "unpaired surrogate"),
]


def invoke(*args: str) -> Any:
    return runner.invoke(app, ["validate", *args])


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # short relative names keep rich from wrapping messages


def write_jsonl(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


@pytest.mark.parametrize(("line", "field", "reason"), [b[1:] for b in BAD_LINES], ids=[b[0] for b in BAD_LINES])
def test_each_bad_input_is_named_with_field_and_reason(line: bytes, field: str, reason: str) -> None:
    write_jsonl(Path("x.jsonl"), [b'{"utterance": "fine"}', line, b'{"utterance": "also fine"}'])
    result = invoke("x.jsonl")
    assert result.exit_code == 1
    named = [s for s in result.stderr.splitlines() if s.startswith("x.jsonl:")]
    assert len(named) == 1 and named[0].startswith(f"x.jsonl:2: {field}: ") and reason in named[0], named
    assert "3 records in, 2 accepted, 1 rejected" in result.stdout


def test_acceptance_1000_good_records_mixed_with_every_kind_of_bad(good_record: GoodRecord) -> None:
    rng = random.Random(7)
    kinds = [(line, field, reason) for _, line, field, reason in BAD_LINES] * 2  # each kind twice
    lines: list[bytes] = [json.dumps(good_record(i), ensure_ascii=i % 2 == 0).encode() for i in range(1000)]
    for bad in kinds:
        lines.insert(rng.randrange(len(lines) + 1), bad[0])
    lines.insert(500, b"")  # blank lines are skipped, not counted, but keep line numbers physical
    lines.insert(10, b"   ")
    write_jsonl(Path("data.jsonl"), lines)
    bad_at = {n: next(k for k in kinds if k[0] == line) for n, line in enumerate(lines, 1) if line in {k[0] for k in kinds}}
    good_at = [n for n, line in enumerate(lines, 1) if line.strip() and n not in bad_at]
    assert len(bad_at) == len(kinds) and len(good_at) == 1000

    result = invoke("data.jsonl", "--quarantine", "q.jsonl", "--out", "clean.parquet")

    assert result.exit_code == 1
    named = [s for s in result.stderr.splitlines() if s.startswith("data.jsonl:")]
    assert len(named) == len(bad_at)  # every bad line, and nothing else
    for text, (n, (_, field, reason)) in zip(named, sorted(bad_at.items())):
        assert text.startswith(f"data.jsonl:{n}: {field}: ") and reason in text
    in_, rejected = 1000 + len(kinds), len(kinds)
    assert f"{in_:,} records in, 1,000 accepted, {rejected} rejected" in result.stdout

    # clean: exactly the good records, normalized, ids from line numbers where absent
    clean = load_records("clean.parquet")
    assert clean == [validate_record(json.loads(lines[n - 1]), n) for n in good_at]
    assert clean[0]["id"] == str(good_at[0])  # good_record(0) has no id
    # quarantine: exactly the bad lines, verbatim, with line and reason
    entries = [json.loads(s) for s in Path("q.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [e["line"] for e in entries] == sorted(bad_at)
    for entry in entries:
        raw = entry["raw"].encode() if "raw" in entry else base64.b64decode(entry["raw_b64"])
        assert raw == lines[entry["line"] - 1]
        assert entry["field"] == bad_at[entry["line"]][1] and bad_at[entry["line"]][2] in entry["reason"]
        assert entry["file"] == "data.jsonl" and entry["kind"]
    assert len(clean) + len(entries) == in_


def test_all_valid_exits_0_and_writes_jsonl_and_gzip(good_record: GoodRecord) -> None:
    write_records("in.jsonl.gz", [good_record(i) for i in range(30)])
    result = invoke("in.jsonl.gz", "--out", "clean.jsonl", "--quarantine", "q.jsonl.gz")
    assert result.exit_code == 0, result.output
    assert "30 records in, 30 accepted, 0 rejected" in result.stdout
    assert load_records("clean.jsonl") == [validate_record(good_record(i), i + 1) for i in range(30)]
    assert gzip.decompress(Path("q.jsonl.gz").read_bytes()) == b""  # asked for, so written, empty
    assert not [s for s in result.stderr.splitlines() if s.startswith("in.jsonl.gz:")]


def test_parquet_input_names_rows_from_one(good_record: GoodRecord) -> None:
    write_records("in.parquet", [validate_record(good_record(i), i + 1) for i in range(5)])
    table = pq.read_table("in.parquet")
    utterances = table.column("utterance").to_pylist()
    utterances[3] = "   "
    table = table.set_column(table.schema.get_field_index("utterance"), "utterance", pa.array(utterances))
    pq.write_table(table, "in.parquet")
    result = invoke("in.parquet", "--quarantine", "q.jsonl", "--out", "clean.parquet")
    assert result.exit_code == 1
    assert "in.parquet:4: utterance: empty or whitespace-only" in result.stderr.splitlines()
    entry = json.loads(Path("q.jsonl").read_text())
    assert entry["line"] == 4 and json.loads(entry["raw"])["utterance"] == "   "
    assert len(load_records("clean.parquet")) == 4


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"], ids=["empty", "blank lines only"])
def test_no_records_exits_1_with_a_message(content: bytes) -> None:
    Path("e.jsonl").write_bytes(content)
    result = invoke("e.jsonl", "--out", "clean.jsonl", "--quarantine", "q.jsonl")
    assert result.exit_code == 1 and "no records in e.jsonl" in result.stderr
    assert Path("clean.jsonl").read_bytes() == b"" and Path("q.jsonl").read_bytes() == b""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.jsonl"], "missing.jsonl: no such file"),
        (["data.csv"], "unsupported file type"),
        (["ok.jsonl", "--out", "clean.csv"], "clean.csv: unsupported file type"),
        (["ok.jsonl", "--quarantine", "q.parquet"], "quarantine file must be .jsonl or .jsonl.gz"),
        (["ok.jsonl", "--out", "ok.jsonl"], "must be three different files"),
        (["ok.jsonl", "--out", "a.jsonl", "--quarantine", "a.jsonl"], "must be three different files"),
        (["folder.jsonl"], "not a regular file"),
        (["broken.parquet"], "cannot read as Parquet"),
        ([], "Missing argument"),
    ],
)
def test_unusable_arguments_exit_2(args: list[str], message: str) -> None:
    write_jsonl(Path("ok.jsonl"), [b'{"utterance": "u"}'])
    Path("data.csv").write_text("utterance\nu\n")
    Path("folder.jsonl").mkdir()
    Path("broken.parquet").write_bytes(b"nope")
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    assert not Path("clean.csv").exists() and not Path("q.parquet").exists()


def test_report_counts_reasons_by_field_pattern() -> None:
    write_jsonl(Path("x.jsonl"), [
        b'{"utterance": "u", "products": [{"title": "a"}, {"brand": "b"}]}',
        b'{"utterance": "u", "products": [{"brand": "b"}]}',
        b"{oops",
        b'{"utterance": "u"}',
    ])
    seen: list[str] = []
    report = validate_file("x.jsonl", on_reject=lambda r: seen.append(str(r)))
    assert (report.n_in, report.n_accepted, report.n_rejected, report.ok) == (4, 1, 3, False)
    assert report.reasons == {("products[].title", "missing"): 2, ("record", "invalid_json"): 1}
    assert seen[0] == "x.jsonl:1: products[1].title: missing (every product needs a title)"


def test_installed_console_script() -> None:
    irp = Path(sys.executable).with_name("irp")
    if not irp.exists():
        pytest.skip(f"console script not installed next to {sys.executable} (run `make setup`)")
    write_jsonl(Path("x.jsonl"), [b'{"utterance": "ok"}', b'{"utterance": 3}'])
    proc = subprocess.run([str(irp), "validate", "x.jsonl", "--quarantine", "q.jsonl"], capture_output=True, text=True)
    assert proc.returncode == 1 and "x.jsonl:2: utterance: must be a string, got number" in proc.stderr
    assert json.loads(Path("q.jsonl").read_text())["raw"] == '{"utterance": 3}'
    proc = subprocess.run([str(irp), "validate", "nope.jsonl"], capture_output=True, text=True)
    assert proc.returncode == 2 and "no such file" in proc.stderr

