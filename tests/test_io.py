"""irp.data.io: JSONL / gzipped JSONL / Parquet reading and writing, losslessly and in a stream."""

from __future__ import annotations

import base64
import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from irp.data import io as dio
from irp.data.io import (
    DataFileError,
    InvalidRecordError,
    RejectedRecord,
    file_format,
    iter_records,
    load_records,
    write_records,
)
from irp.data.nested import PRODUCTS_TYPE, decode_products
from irp.schema import RecordError, validate_record

GoodRecord = Callable[[int], dict[str, Any]]

UNICODE = {
    "id": "ü-1",
    "utterance": "zeig mir rote Schuhe 👠 — 赤い靴 e\u0301",  # emoji, CJK, combining accent
    "intent": "search",
    "context": ["hallo", "", "ça va"],
    "products": [
        {"title": "Schuh 👠", "color": ["rot", "赤"], "brand": "Ñandú", "price": 49.9},
        {"title": "Boot", "color": [], "price": 120, "style": "chelsea"},
        {"title": "Sandal", "price": 0.1 + 0.2},  # a float that needs all 17 digits
    ],
    "label": 1,
    "screen_available": True,
    "session_id": "s1",
    "true_intent": 0,
    "meta": {"nested": [1, 2.5, None, {"deep": "ok"}], "big": 2**70},
    "note": None,
}


def normalized(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [validate_record(r, i) for i, r in enumerate(records, 1)]


def write_lines(path: Path, lines: list[str | bytes]) -> Path:
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".parquet"])
def test_round_trip_keeps_everything(tmp_path: Path, good_record: GoodRecord, suffix: str) -> None:
    records = normalized([UNICODE, *(good_record(i) for i in range(40))])
    path = tmp_path / f"r{suffix}"
    assert write_records(path, records) == len(records)
    back = load_records(path)
    assert back == records
    assert [type(p["price"]) for p in back[0]["products"]] == [float, int, float]  # 120 stays int
    assert back[0]["products"][2]["price"] == 0.1 + 0.2 and back[0]["meta"]["big"] == 2**70


def test_jsonl_to_parquet_to_jsonl_is_byte_identical(tmp_path: Path, good_record: GoodRecord) -> None:
    records = normalized([UNICODE, *(good_record(i) for i in range(30))])
    write_records(tmp_path / "a.jsonl", records)
    write_records(tmp_path / "b.parquet", iter_records(tmp_path / "a.jsonl"))
    write_records(tmp_path / "c.jsonl.gz", iter_records(tmp_path / "b.parquet"))
    write_records(tmp_path / "d.jsonl", iter_records(tmp_path / "c.jsonl.gz"))
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "d.jsonl").read_bytes()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)
_attr = st.one_of(st.text(max_size=10), st.lists(st.text(max_size=6), max_size=3))
_products = st.lists(
    st.builds(
        lambda title, attrs, price: {"title": title, **attrs, **({} if price is None else {"price": price})},
        st.text(min_size=1, max_size=10).filter(lambda s: not s.isspace()),
        st.dictionaries(st.text(max_size=6).filter(lambda k: k not in ("title", "price")), _attr, max_size=4),
        st.none() | st.integers(0, 2**53) | st.floats(0, 1e12, allow_nan=False),
    ),
    max_size=5,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.fixed_dictionaries(
            {"utterance": st.text(min_size=1, max_size=30).filter(str.strip), "products": _products},
            optional={
                "context": st.lists(st.text(max_size=8), max_size=3),
                "label": st.sampled_from([0, 1]),
                "screen_available": st.booleans(),
                "extra": _json,
                "z": _json,
            },
        ),
        min_size=1,
        max_size=8,
    )
)
def test_generated_records_survive_jsonl_parquet_jsonl(tmp_path: Path, raw: list[dict[str, Any]]) -> None:
    records = normalized(raw)
    write_records(tmp_path / "g.parquet", records)
    write_records(tmp_path / "g.jsonl", iter_records(tmp_path / "g.parquet"))
    assert load_records(tmp_path / "g.jsonl") == records


def test_parquet_encoding_and_row_groups(tmp_path: Path, good_record: GoodRecord, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dio, "CHUNK_ROWS", 70)  # read in chunks of 70 rows
    monkeypatch.setattr(dio, "WRITE_ROWS", 70)  # write in batches of 70: row groups are flushed as it streams
    monkeypatch.setattr(dio, "ROW_GROUP_ROWS", 200)
    records = normalized([good_record(i) for i in range(1000)])
    path = tmp_path / "r.parquet"
    assert write_records(path, iter(records), total=len(records), progress=True) == 1000
    parquet = pq.ParquetFile(path)
    schema = parquet.schema_arrow
    assert schema.field("products").type == PRODUCTS_TYPE and schema.field("context").type == pa.list_(pa.string())
    assert schema.field("label").type == pa.int8() and schema.field("screen_available").type == pa.bool_()
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)]
    assert sum(sizes) == 1000 and max(sizes) <= 270 and len(sizes) >= 4  # row groups flushed as it streams
    first = parquet.read_row_group(0).to_pylist()[0]
    assert decode_products(first["products"]) == records[0]["products"] and first["__extra_json__"] == '{"meta":{"source":"test","rank":[0,null]}}'
    assert load_records(path) == records


def test_writes_are_atomic(tmp_path: Path, good_record: GoodRecord) -> None:
    for suffix in (".jsonl", ".parquet"):
        path = tmp_path / f"out{suffix}"
        write_records(path, [validate_record(good_record(1), 1)])
        before = path.read_bytes()

        def failing() -> Any:
            yield validate_record(good_record(2), 2)
            raise RuntimeError("upstream broke")

        with pytest.raises(RuntimeError):
            write_records(path, failing())
        assert path.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted({f"out{s}" for s in (".jsonl", suffix)})


def test_write_creates_folders_and_empty_files_read_back(tmp_path: Path) -> None:
    for suffix in (".jsonl", ".jsonl.gz", ".parquet"):
        path = tmp_path / "new" / "dir" / f"empty{suffix}"
        assert write_records(path, []) == 0
        assert load_records(path) == []


def test_gzip_output_is_reproducible(tmp_path: Path, good_record: GoodRecord) -> None:
    records = normalized([good_record(i) for i in range(5)])
    write_records(tmp_path / "a.jsonl.gz", records)
    write_records(tmp_path / "b.jsonl.gz", records)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == (tmp_path / "b.jsonl.gz").read_bytes()  # no mtime/name inside


def test_jsonl_line_numbers_blank_lines_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"utterance": "a"}\r\n\n   \r\n{"utterance": "b"}\n\n{"id": "k", "utterance": "c"}')
    assert [(r["id"], r["utterance"]) for r in iter_records(path)] == [("1", "a"), ("4", "b"), ("k", "c")]


def test_rejections_carry_file_line_field_reason_and_raw_bytes(tmp_path: Path) -> None:
    bad_utf8 = b'{"utterance": "caf\xe9"}'
    path = write_lines(tmp_path / "x.jsonl", [
        '{"utterance": "ok"}',
        "",
        '{"utterance": "ok", "label": 2}',
        "{not json",
        bad_utf8,
        '{"utterance": "\\ud800 lone surrogate"}',
        '{"utterance": "\\ud83d\\udc60 a valid pair"}',
        "[" * 100_000,
    ])
    rejected: list[RejectedRecord] = []
    ok = list(iter_records(path, rejected.append))
    assert [r["utterance"] for r in ok] == ["ok", "👠 a valid pair"]
    assert [(r.line_no, r.field, r.kind) for r in rejected] == [
        (3, "label", "invalid_value"),
        (4, "record", "invalid_json"),
        (5, "record", "invalid_utf8"),
        (6, "record", "invalid_utf8"),
        (8, "record", "invalid_json"),
    ]
    assert rejected[0].raw == b'{"utterance": "ok", "label": 2}' and str(rejected[0]) == f"{path}:3: label: must be 0 or 1, got 2"
    assert rejected[2].raw == bad_utf8 and "byte 19" in rejected[2].reason
    entry = rejected[2].quarantine_entry()
    assert "raw" not in entry and base64.b64decode(entry["raw_b64"]) == bad_utf8
    assert rejected[0].quarantine_entry() == {
        "file": str(path), "line": 3, "field": "label", "kind": "invalid_value",
        "reason": "must be 0 or 1, got 2", "raw": '{"utterance": "ok", "label": 2}',
    }


def test_without_on_error_the_first_bad_record_raises(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "x.jsonl", ['{"utterance": "ok"}', '{"utterance": ""}'])
    with pytest.raises(InvalidRecordError) as info:
        load_records(path)
    assert isinstance(info.value, RecordError) and info.value.field == "utterance"
    assert str(info.value) == f"{path}:2: utterance: empty or whitespace-only"


def test_file_level_errors_are_eager_and_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        iter_records(tmp_path / "missing.jsonl")
    with pytest.raises(DataFileError, match="unsupported file type"):
        iter_records(tmp_path / "data.csv")
    with pytest.raises(DataFileError, match="unsupported file type"):
        write_records(tmp_path / "data.json", [])
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataFileError, match="Parquet"):
        list(iter_records(tmp_path / "bad.parquet"))
    (tmp_path / "bad.jsonl.gz").write_bytes(gzip.compress(b'{"utterance": "a"}\n' * 1000)[:-30])
    with pytest.raises(DataFileError, match="gzip"):
        list(iter_records(tmp_path / "bad.jsonl.gz"))
    assert file_format("A.JSONL") == ".jsonl" and file_format(Path("x.jsonl.gz")) == ".jsonl.gz"


def test_parquet_rows_are_numbered_from_one_and_bad_cells_rejected(tmp_path: Path) -> None:
    table = pa.table({
        "utterance": ["ok", "", "fine", "x", None],
        "products": ['[{"title": "t"}]', None, "[{bad json", '[{"title": 5}]', None],
        "label": pa.array([1, 0, 1, 7, 0], pa.int64()),
    })
    pq.write_table(table, tmp_path / "t.parquet")
    rejected: list[RejectedRecord] = []
    ok = list(iter_records(tmp_path / "t.parquet", rejected.append))
    assert [(r["id"], r["utterance"], r["products"]) for r in ok] == [("1", "ok", [{"title": "t"}])]
    assert [(r.line_no, r.field, r.kind) for r in rejected] == [
        (2, "utterance", "empty"),
        (3, "products", "invalid_json"),
        (4, "products[0].title", "wrong_type"),
        (5, "utterance", "missing"),
    ]
    # raw of a Parquet row: the row as one JSON object (products decoded when they could be).
    assert json.loads(rejected[0].raw) == {"utterance": "", "products": None, "label": 0}
    assert json.loads(rejected[1].raw) == {"utterance": "fine", "products": "[{bad json", "label": 1}
    assert json.loads(rejected[2].raw) == {"utterance": "x", "products": [{"title": 5}], "label": 7}


def test_parquet_from_other_tools_loads(tmp_path: Path) -> None:
    # e.g. pandas.to_parquet: int64 ids, products as list<struct> (missing attributes become nulls), other columns.
    rows = [
        {"id": 1, "utterance": "red sofa", "products": [{"title": "Sofa", "color": "red", "price": 10.0}], "shop": "eu"},
        {"id": 2, "utterance": "lamp", "products": [{"title": "Lamp", "color": None, "price": None}], "shop": None},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "foreign.parquet")
    got = load_records(tmp_path / "foreign.parquet")
    assert [(r["id"], r["products"], r["shop"]) for r in got] == [
        ("1", [{"title": "Sofa", "color": "red", "price": 10.0}], "eu"),
        ("2", [{"title": "Lamp"}], None),
    ]


def test_parquet_of_older_versions_with_json_products_loads(tmp_path: Path, good_record: GoodRecord) -> None:
    # irp before nested products wrote `products` as a JSON string column; such files keep loading.
    records = normalized([UNICODE, *(good_record(i) for i in range(5))])
    batch = dio._record_batch(records)
    old = batch.set_column(batch.schema.get_field_index("products"), "products",
                           pa.array([json.dumps(r["products"]) for r in records], type=pa.string()))
    pq.write_table(pa.Table.from_batches([old]), tmp_path / "old.parquet")
    assert pq.read_schema(tmp_path / "old.parquet").field("products").type == pa.string()
    assert load_records(tmp_path / "old.parquet") == records


def test_duckdb_unnests_and_filters_products_in_place(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb", reason="duckdb is a core dependency: pip install -e .")
    records = normalized([
        {"id": "a", "utterance": "red boots", "products": [
            {"title": "Boot", "color": "red", "size": ["40", "41"], "price": 120},
            {"title": "Shoe", "color": "blue", "price": 9.5}]},
        {"id": "b", "utterance": "lamp", "products": [{"title": "Lamp", "brand": "zed"}]},
    ])
    path = tmp_path / "r.parquet"
    write_records(path, records)
    con = duckdb.connect()
    rows = con.execute(
        f"SELECT id, p.title, p.price, p.attributes['color'] AS color, p.list_attributes['size'] AS size "
        f"FROM read_parquet('{path}'), unnest(products) AS t(p) WHERE p.attributes['color'] = 'red'").fetchall()
    assert rows == [("a", "Boot", 120.0, "red", ["40", "41"])]
    assert con.execute(f"SELECT count(*) FROM read_parquet('{path}'), unnest(products) AS t(p)").fetchone() == (3,)


def test_progress_flag_reads_the_same(tmp_path: Path, good_record: GoodRecord) -> None:
    records = normalized([good_record(i) for i in range(20)])
    for suffix in (".jsonl", ".parquet"):
        write_records(tmp_path / f"p{suffix}", records, total=20, progress=True)
        assert list(iter_records(tmp_path / f"p{suffix}", progress=True)) == records
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
