"""The Parquet decision log (schema version 2): its layout, Arrow schemas and row <-> event conversion.

Shared by the writer (`irp serve --log-dir`, irp.serve.decision_log) and the readers (irp.logs.reader,
irp.logs.duck). Layout, Hive-partitioned so DuckDB, Spark and Ray prune by partition key:

    DIR/kind=decision/date=YYYY-MM-DD/hour=HH/<replica_id>-<uuid>.parquet      complete files (zstd)
    DIR/kind=feedback/date=YYYY-MM-DD/hour=HH/<replica_id>-<uuid>.parquet
    DIR/kind=.../.<replica_id>-<uuid>.parquet.tmp, .<replica_id>-<uuid>.<pid>.journal.jsonl   in progress

`date`/`hour` are the UTC hour of the decision's `ts` (feedback: `received_ts`, the server's clock), so a
partition filter is exact. A row is the JSONL event of docs/loop.md with `schema` = 2, without `kind` (the
partition says it) and with `record.products` nested (irp.data.nested).
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from irp.data.nested import PRODUCTS_TYPE, decode_products, encode_product

LOG_SCHEMA_VERSION = 2
KIND_DIRS = {"decision": "kind=decision", "feedback": "kind=feedback"}
PARQUET_NAME = re.compile(r"^[A-Za-z0-9_.-]+-[0-9a-f]{32}\.parquet$")  # <replica_id>-<uuid hex>.parquet

POLICY_TYPE = pa.struct([("name", pa.string()), ("cooldown_s", pa.float64()), ("explore_rate", pa.float64())])
RECORD_TYPE = pa.struct([("utterance", pa.string()), ("intent", pa.string()), ("context", pa.list_(pa.string())),
                         ("products", PRODUCTS_TYPE), ("screen_available", pa.bool_())])
_META = {"irp.log.schema": str(LOG_SCHEMA_VERSION)}
DECISION_SCHEMA = pa.schema(
    [("schema", pa.int16()), ("id", pa.string()), ("ts", pa.float64()), ("session_id", pa.string()),
     ("record", RECORD_TYPE), ("probability", pa.float64()), ("threshold", pa.float64()),
     ("image_seeking", pa.bool_()), ("suggest_switch", pa.bool_()), ("eligible", pa.bool_()),
     ("explored", pa.bool_()), ("propensity", pa.float64()), ("model_version", pa.string()),
     ("policy", POLICY_TYPE)],
    metadata={**_META, "irp.log.kind": "decision"},
)
FEEDBACK_SCHEMA = pa.schema(
    [("schema", pa.int16()), ("id", pa.string()), ("event", pa.string()), ("ts", pa.float64()),
     ("received_ts", pa.float64())],
    metadata={**_META, "irp.log.kind": "feedback"},
)
SCHEMAS = {"decision": DECISION_SCHEMA, "feedback": FEEDBACK_SCHEMA}
PARTITION_TS = {"decision": "ts", "feedback": "received_ts"}  # the event field that picks the partition


def sanitize_replica_id(replica_id: str) -> str:
    """A replica id usable in a file name: [A-Za-z0-9_.-], other characters as '_'.

    >>> sanitize_replica_id("pod/irp-7 b")
    'pod_irp-7_b'
    """
    clean = re.sub(r"[^A-Za-z0-9_.-]", "_", replica_id).strip(".")
    return clean or "replica"


def partition(kind: str, event: dict[str, Any]) -> str:
    """The partition folder (relative) of one event: `kind=K/date=YYYY-MM-DD/hour=HH` (UTC).

    >>> partition("decision", {"ts": 0.0})
    'kind=decision/date=1970-01-01/hour=00'
    """
    ts = event.get(PARTITION_TS[kind])
    if type(ts) not in (int, float) or not math.isfinite(ts) or not 0 <= ts < 253402300800:
        ts = 0.0  # unusable clock value: the epoch partition (the reader's contract check names the row)
    when = datetime.fromtimestamp(ts, timezone.utc)
    return f"{KIND_DIRS[kind]}/date={when:%Y-%m-%d}/hour={when:%H}"


def _decision_row(event: dict[str, Any]) -> dict[str, Any]:
    row = dict(event)
    record = row.get("record")
    if type(record) is dict and type(record.get("products")) is list:
        row["record"] = {**record, "products": [encode_product(p) for p in record["products"]]}
    row["schema"] = LOG_SCHEMA_VERSION
    return row


def events_to_table(kind: str, events: list[dict[str, Any]]) -> pa.Table:
    """Events (the dicts the server submits) as one Arrow table of the kind's schema; raises
    pa.ArrowException / TypeError / ValueError when one does not fit."""
    if kind == "decision":
        rows = [_decision_row(e) for e in events]
    else:
        rows = [{**e, "schema": LOG_SCHEMA_VERSION} for e in events]
    return pa.Table.from_pylist(rows, schema=SCHEMAS[kind])


def table_to_events(kind: str, table: pa.Table | pa.RecordBatch) -> list[dict[str, Any]]:
    """Parquet log rows back as the JSONL-shaped events the reader checks (products decoded, `kind` set)."""
    rows = table.to_pylist()
    for row in rows:
        row["kind"] = kind
        if kind == "decision" and type(row.get("record")) is dict:
            row["record"]["products"] = decode_products(row["record"].get("products"))
    return rows
