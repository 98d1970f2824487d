"""`irp logs join` on DuckDB: the rules of irp.logs.join (docs/loop.md), out of core, streamed to the output.

The Python engine (`joined_records`) holds every event as a Python object (~13 KB a decision); this one
hands the work to DuckDB, which reads the Parquet log in place, spills to `temp_dir` beyond `memory_limit`,
and streams the joined records in decision-time order as Arrow batches straight into the output file
(`products` stay nested: the log's Arrow type is the record file's). Same records, labels and counts as the
Python engine (tested); the rules, in SQL:

- contract checks of every row (irp.logs.reader.check_decision / check_feedback, same reasons);
- the first decision of an id in file order wins (`duplicate_decisions`);
- feedback: unknown ids counted; later than `window_s` after its decision counted as `late_feedback` and not
  joined; repeated (id, event) used once; contradictions resolve to the positive event;
- the request must be a valid record: rows that are already normalized pass in SQL; the few that are not
  (stray whitespace, nulls, too many products, ...) go through irp.schema.validate_record in Python.

JSON Lines log files (older servers) are converted to temporary Parquet first, so one query reads both.
A Parquet file that cannot be read (truncated, corrupt, another schema) is counted in `unreadable_files`.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from irp.data.io import EXTRA_COLUMN, PARQUET_SCHEMA, ROW_GROUP_ROWS, RecordWriter, file_format
from irp.data.nested import decode_products, encode_products
from irp.fileio import atomic_path
from irp.logs.join import LABELS, Label, JoinReport, _request
from irp.logs.parquet_log import SCHEMAS, events_to_table
from irp.logs.reader import MAX_EXAMPLES, LogFile, LogScan, _lines, log_files, unreadable
from irp.schema import MAX_PRODUCTS, MAX_UTTERANCE_CHARS, UNKNOWN_INTENT, RecordError

DEFAULT_WINDOW_S = 86_400.0
OUTPUT_BATCH_ROWS = 20_000
LOG_FIELDS = [pa.field("tap", pa.int8()), pa.field("accepted", pa.int8()), pa.field("offered", pa.bool_()),
              pa.field("propensity", pa.float64()), pa.field("eligible", pa.bool_()), pa.field("explored", pa.bool_()),
              pa.field("logged_probability", pa.float64()), pa.field("logged_threshold", pa.float64()),
              pa.field("model_version", pa.string()), pa.field("ts", pa.float64())]
# The joined records' Parquet: the record columns, then the log columns as typed columns (read back as
# extra keys, irp.data.io), then the (empty) extras column.
JOINED_SCHEMA = pa.schema([f for f in PARQUET_SCHEMA if f.name != EXTRA_COLUMN] + LOG_FIELDS
                          + [PARQUET_SCHEMA.field(EXTRA_COLUMN)],
                          metadata={b"irp.encoding": b"irp logs join output; products nested (irp.data.nested)"})

# Whitespace as Python's str.strip() sees it (RE2 classes are ASCII-only): a value that starts or ends with
# one, or is made of them, is not normalized and goes to validate_record.
_WS = r"[\s\x0b\x1c-\x1f\x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]"
_EDGE_WS = f"'^{_WS}|{_WS}$'"
_ALL_WS = f"'^{_WS}*$'"


def default_memory_limit() -> int:
    """DuckDB's memory limit when none is given: an eighth of physical memory, at least 1 GiB (the join spills
    beyond it; the process's peak RSS stays a little above it)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 << 30
    return max(1 << 30, total // 8)


def _decision_reason() -> str:
    """The first contract rule a decision row breaks (NULL when none), as irp.logs.reader.check_decision."""
    unit = "{c} IS NULL OR NOT isfinite({c}) OR {c} < 0 OR {c} > 1"
    return f"""CASE
      WHEN schema IS DISTINCT FROM 2 THEN 'schema: unsupported version ' || coalesce(schema::VARCHAR, 'None') || ' (Parquet logs are 2)'
      WHEN id IS NULL OR id = '' THEN 'id: must be a non-empty string'
      WHEN ts IS NULL OR NOT isfinite(ts) THEN 'ts: must be a number'
      WHEN record IS NULL THEN 'record: must be an object'
      WHEN {unit.format(c='probability')} THEN 'probability: must be a number in [0, 1]'
      WHEN {unit.format(c='threshold')} THEN 'threshold: must be a number in [0, 1]'
      WHEN {unit.format(c='propensity')} THEN 'propensity: must be a number in [0, 1]'
      WHEN suggest_switch IS NULL THEN 'suggest_switch: must be true or false'
      WHEN eligible IS NULL THEN 'eligible: must be true or false'
      WHEN explored IS NULL THEN 'explored: must be true or false'
      WHEN model_version IS NULL THEN 'model_version: must be a string'
      WHEN suggest_switch AND propensity = 0 THEN 'propensity: 0 for a decision that offered'
      WHEN NOT suggest_switch AND propensity = 1 THEN 'propensity: 1 for a decision that did not offer'
    END"""


_FEEDBACK_REASON = """CASE
      WHEN schema IS DISTINCT FROM 2 THEN 'schema: unsupported version ' || coalesce(schema::VARCHAR, 'None') || ' (Parquet logs are 2)'
      WHEN id IS NULL OR id = '' THEN 'id: must be a non-empty string'
      WHEN event IS NULL OR event NOT IN ('offer_accepted', 'offer_declined', 'carousel_tap', 'no_tap')
        THEN 'event: must be one of offer_accepted, offer_declined, carousel_tap, no_tap, got ' || coalesce('''' || event || '''', 'None')
      WHEN ts IS NULL OR NOT isfinite(ts) THEN 'ts: must be a number'
    END"""

# A request that is already a normalized record (what `irp serve` logs): nothing for validate_record to do.
_NORMALIZED = f"""(
    record.utterance IS NOT NULL AND length(record.utterance) BETWEEN 1 AND {MAX_UTTERANCE_CHARS}
    AND NOT regexp_matches(record.utterance, {_EDGE_WS})
    AND (record.intent IS NULL OR (record.intent <> '' AND NOT regexp_matches(record.intent, {_EDGE_WS})))
    AND (d.session_id IS NULL OR NOT regexp_matches(d.session_id, {_ALL_WS}))
    AND coalesce(list_bool_and(list_transform(record.context, lambda c: c IS NOT NULL)), true)
    AND record.products IS NOT NULL AND len(record.products) <= {MAX_PRODUCTS}
    AND coalesce(list_bool_and(list_transform(record.products, lambda p:
          p IS NOT NULL AND p.title IS NOT NULL AND NOT regexp_matches(p.title, {_ALL_WS})
          AND (p.price IS NULL OR (isfinite(p.price) AND p.price >= 0))
          AND coalesce(list_bool_and(list_transform(map_values(p.attributes), lambda v: v IS NOT NULL)), true)
          AND coalesce(list_bool_and(list_transform(map_values(p.list_attributes), lambda v:
                v IS NOT NULL AND coalesce(list_bool_and(list_transform(v, lambda s: s IS NOT NULL)), true))), true)
          AND (p.layout IS NULL OR json_valid(p.layout))
        )), true))"""


def _sql_list(paths: Sequence[Path]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


class _Inputs:
    """The Parquet files DuckDB reads, per kind, with their file order; JSONL files converted first."""

    def __init__(self, files: list[LogFile], scan: LogScan, temp_dir: Path) -> None:
        self.paths: dict[str, list[Path]] = {"decision": [], "feedback": []}
        self.order: list[tuple[str, int]] = []  # (path as DuckDB reports it, file index)
        self.names: dict[str, str] = {}  # DuckDB path -> the name shown in examples
        for index, file in enumerate(files):
            path = self._prepare(file, scan, temp_dir, index)
            if path is not None:
                self.paths[file.kind].append(path)
                self.order.append((str(path), index))
                self.names[str(path)] = file.path.name

    @staticmethod
    def _prepare(file: LogFile, scan: LogScan, temp_dir: Path, index: int) -> Path | None:
        schema = SCHEMAS[file.kind]
        if file.fmt == "jsonl":
            events = list(_lines(file.path, file.kind, scan))  # counted (torn, invalid) as the Python engine does
            if not events:
                return None
            path = temp_dir / f"jsonl-{index:06d}.parquet"
            pq.write_table(events_to_table(file.kind, events), path)
            return path
        try:  # the footer and schema: a truncated or foreign file fails here
            found = pq.read_schema(file.path)
            missing = [f.name for f in schema if found.get_field_index(f.name) < 0
                       or not found.field(f.name).type.equals(f.type)]
            if missing:
                raise ValueError(f"not a {file.kind} log file: columns {', '.join(missing)} missing or of another type")
        except (pa.ArrowException, OSError, ValueError) as e:
            unreadable(scan, file.path, str(e).splitlines()[0] if str(e) else type(e).__name__)
            return None
        return file.path

    def drop(self, path: str) -> None:
        for paths in self.paths.values():
            paths[:] = [p for p in paths if str(p) != path]


def _find_corrupt(inputs: _Inputs, scan: LogScan) -> bool:
    """After DuckDB failed on a data page: read every file whole, count and drop the ones that fail."""
    found = False
    for paths in inputs.paths.values():
        for path in list(paths):
            try:
                pq.read_table(path)
            except (pa.ArrowException, OSError) as e:
                unreadable(scan, path, str(e).splitlines()[0] if str(e) else type(e).__name__)
                inputs.drop(str(path))
                found = True
    return found


def join_logs_duckdb(
    log_dirs: str | Path | Sequence[str | Path],
    out: str | Path | None,
    label: Label = "tap",
    require_feedback: bool = False,
    window_s: float | None = DEFAULT_WINDOW_S,
    memory_limit: int | None = None,
    temp_dir: str | Path | None = None,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> JoinReport:
    """Join the log(s) and stream the records to `out` (.parquet, .jsonl or .jsonl.gz by suffix; atomic;
    written only when at least one record joined). `progress(done, total)` hears the records written."""
    import duckdb

    if label not in LABELS:
        raise ValueError(f"label must be tap or accept, got {label!r}")
    if window_s is not None and not window_s > 0:
        raise ValueError(f"the feedback window must be > 0 seconds, got {window_s}")
    if out is not None:
        file_format(out)
    scan = LogScan()
    files = log_files(log_dirs, scan)
    report = JoinReport(scan=scan, label=label, feedback_window_s=window_s, engine="duckdb")
    spill = Path(tempfile.mkdtemp(prefix="irp-join-", dir=temp_dir))
    try:
        inputs = _Inputs(files, scan, spill)
        con = duckdb.connect(config={"memory_limit": f"{(memory_limit or default_memory_limit()) >> 20}MB",
                                     "temp_directory": str(spill / "duckdb"), "preserve_insertion_order": False,
                                     **({"threads": threads} if threads else {})})
        con.execute("SET enable_progress_bar = false")
        try:
            while True:
                try:
                    _run(con, inputs, scan, report, out, label, require_feedback, window_s, progress)
                    return report
                except duckdb.Error as e:
                    if not _find_corrupt(inputs, scan):
                        raise RuntimeError(f"DuckDB failed: {e}") from e
                    _reset(report)
        finally:
            con.close()
    finally:
        shutil.rmtree(spill, ignore_errors=True)


def _reset(report: JoinReport) -> None:
    """Clear a report's join counts (not its scan) before a run again without the corrupt files."""
    fresh = JoinReport(scan=report.scan, label=report.label, feedback_window_s=report.feedback_window_s,
                       engine=report.engine)
    report.__dict__.update(fresh.__dict__)


def _source(con: Any, kind: str, paths: Sequence[Path]) -> str:
    """SQL of the rows of `paths` (Parquet log files of `kind`) with their file order, row number and the first
    contract rule each breaks (`reason`, NULL when none)."""
    columns = ", ".join(f'"{name}"' for name in SCHEMAS[kind].names)
    reason = _decision_reason() if kind == "decision" else _FEEDBACK_REASON
    if paths:
        return (f"SELECT f.file_index, s.file_row_number + 1 AS row_no, {columns}, {reason} AS reason "
                f"FROM read_parquet({_sql_list(paths)}, filename = true, file_row_number = true, "
                f"union_by_name = true, hive_partitioning = false) s JOIN files f ON f.path = s.filename")
    con.register(f"empty_{kind}", pa.table({f.name: pa.array([], f.type) for f in SCHEMAS[kind]}))
    return f"SELECT 0 AS file_index, 0::BIGINT AS row_no, {columns}, NULL::VARCHAR AS reason FROM empty_{kind}"


def _segments(con: Any) -> list[list[int]]:
    """The decision files in groups whose decision-time ranges do not overlap, in time order: sorting each
    group on its own gives the global order (decision time, then file order) without one external sort of
    every record (a server's files cover one hour each, so a group is about an hour)."""
    groups: list[list[int]] = []
    high = -math.inf
    for index, low, top in con.execute("SELECT file_index, min(ts), max(ts) FROM lab GROUP BY file_index "
                                       "ORDER BY min(ts), file_index").fetchall():
        if low > high or not groups:
            groups.append([])
        groups[-1].append(index)
        high = max(high, top)
    return groups


def _run(con: Any, inputs: _Inputs, scan: LogScan, report: JoinReport, out: str | Path | None, label: Label,
         require_feedback: bool, window_s: float | None, progress: Callable[[int, int], None] | None) -> None:
    scan.decision_lines = scan.feedback_lines = 0
    scan.invalid_lines = 0
    con.execute("DROP TABLE IF EXISTS files")
    con.execute("CREATE TEMP TABLE files (path VARCHAR, file_index INTEGER)")
    if inputs.order:
        con.executemany("INSERT INTO files VALUES (?, ?)", inputs.order)
    for kind in ("decision", "feedback"):
        con.execute(f"CREATE OR REPLACE TEMP VIEW raw_{kind} AS {_source(con, kind, inputs.paths[kind])}")
    # One pass over each kind's files: the slim columns of valid rows, the reasons of the others.
    con.execute("""CREATE OR REPLACE TEMP TABLE dec AS SELECT file_index, row_no, id, ts, suggest_switch AS offered,
                   eligible, explored, propensity, reason FROM raw_decision""")
    con.execute("CREATE OR REPLACE TEMP TABLE fb AS SELECT file_index, row_no, id, event, ts, reason FROM raw_feedback")
    paths = {index: inputs.names.get(path, path) for path, index in inputs.order}
    for table in ("dec", "fb"):
        for reason, count in con.execute(f"SELECT reason, count(*) FROM {table} WHERE reason IS NOT NULL "
                                         "GROUP BY reason ORDER BY count(*) DESC, reason").fetchall():
            scan.invalid_lines += count
            scan.reasons[reason.split(":")[0]] += count
        for index, row_no, reason in con.execute(
                f"SELECT file_index, row_no, reason FROM {table} WHERE reason IS NOT NULL "
                f"ORDER BY file_index, row_no LIMIT {MAX_EXAMPLES}").fetchall():
            if len(scan.examples) < MAX_EXAMPLES:
                scan.examples.append(f"{paths[index]}:row {row_no}: {reason}")
    (decisions,), = con.execute("SELECT count(*) FROM dec WHERE reason IS NULL").fetchall()
    (feedback,), = con.execute("SELECT count(*) FROM fb WHERE reason IS NULL").fetchall()
    scan.decision_lines, scan.feedback_lines = decisions, feedback
    report.decisions, report.feedback = decisions, feedback

    con.execute("""CREATE OR REPLACE TEMP TABLE firsts AS SELECT file_index, row_no, id, ts, offered, eligible, explored,
                   propensity FROM dec WHERE reason IS NULL
                   QUALIFY row_number() OVER (PARTITION BY id ORDER BY file_index, row_no) = 1""")
    (firsts,), = con.execute("SELECT count(*) FROM firsts").fetchall()
    report.duplicate_decisions = decisions - firsts
    if report.duplicate_decisions:
        report.dropped["duplicate decision id"] += report.duplicate_decisions
    late = "false" if window_s is None else f"(f.ts - d.ts) > {float(window_s)!r}"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE fbj AS SELECT f.id, f.event, {late} AS late
                    FROM fb f JOIN firsts d ON f.id = d.id WHERE f.reason IS NULL""")
    (known, late_n), = con.execute("SELECT count(*), count(*) FILTER (WHERE late) FROM fbj").fetchall()
    report.unknown_feedback = feedback - known
    report.late_feedback = late_n
    con.execute("""CREATE OR REPLACE TEMP TABLE ev AS SELECT id,
                   bool_or(event = 'carousel_tap') AS tap, bool_or(event = 'no_tap') AS no_tap,
                   bool_or(event = 'offer_accepted') AS acc, bool_or(event = 'offer_declined') AS dec,
                   count(*) - count(DISTINCT event) AS dups
                   FROM fbj WHERE NOT late GROUP BY id""")
    (dups, conflicts, without_offer), = con.execute(
        """SELECT coalesce(sum(e.dups), 0), coalesce(sum((e.tap AND e.no_tap)::INT + (e.acc AND e.dec)::INT), 0),
           count(*) FILTER (WHERE (e.acc OR e.dec) AND NOT d.offered)
           FROM ev e JOIN firsts d USING (id)""").fetchall()
    report.duplicate_feedback, report.conflicting_feedback = int(dups), int(conflicts)
    report.feedback_without_offer = int(without_offer)
    has_feedback = ("(d.offered AND coalesce(e.acc OR e.dec, false))" if label == "accept"
                    else "coalesce(e.tap OR e.no_tap, false)")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE lab AS SELECT d.file_index, d.row_no, d.ts, d.offered,
                    coalesce(e.tap, false)::TINYINT AS tap,
                    CASE WHEN d.offered THEN coalesce(e.acc, false)::TINYINT END AS accepted,
                    {has_feedback} AS has_feedback
                    FROM firsts d LEFT JOIN ev e USING (id) ORDER BY d.file_index, d.row_no""")  # by file: each group reads a range
    if label == "accept":
        (n,), = con.execute("SELECT count(*) FROM lab WHERE NOT offered").fetchall()
        if n:
            report.dropped["not offered (--label accept)"] += n
        con.execute("DELETE FROM lab WHERE NOT offered")
    if require_feedback:
        (n,), = con.execute("SELECT count(*) FROM lab WHERE NOT has_feedback").fetchall()
        if n:
            report.dropped["no feedback (--require-feedback)"] += n
        con.execute("DELETE FROM lab WHERE NOT has_feedback")
    (total,), = con.execute("SELECT count(*) FROM lab").fetchall()
    if not inputs.paths["decision"] or not total:
        return
    label_column = "l.tap" if label == "tap" else "l.accepted"
    paths = dict((index, Path(path)) for path, index in inputs.order)

    def group_batches(group: list[int]) -> Any:
        wanted = ", ".join(map(str, group))
        query = f"""SELECT d.id, record.utterance AS utterance, coalesce(record.intent, '{UNKNOWN_INTENT}') AS intent,
                coalesce(record.context, []::VARCHAR[]) AS context, record.products AS products,
                {label_column} AS label, record.screen_available AS screen_available, d.session_id AS session_id,
                NULL::TINYINT AS true_intent, l.tap, l.accepted, d.suggest_switch AS offered, d.propensity, d.eligible,
                d.explored, d.probability AS logged_probability, d.threshold AS logged_threshold, d.model_version, d.ts,
                NULL::VARCHAR AS {EXTRA_COLUMN}, l.has_feedback, {_NORMALIZED} AS normalized
                FROM ({_source(con, "decision", [paths[i] for i in group])}) d
                JOIN (SELECT * FROM lab WHERE file_index IN ({wanted})) l USING (file_index, row_no)
                ORDER BY d.ts, d.file_index, d.row_no"""
        yield from con.sql(query).to_arrow_reader(OUTPUT_BATCH_ROWS)

    batches = (batch for group in _segments(con) for batch in group_batches(group))
    _write(batches, out, report, total, progress)


def _checked(batch: pa.RecordBatch, report: JoinReport) -> pa.Table:
    """The batch in JOINED_SCHEMA with its not-normalized requests validated in Python (normalized or dropped)."""
    normalized = batch.column("normalized")
    has_feedback = batch.column("has_feedback")
    table = pa.Table.from_batches([batch]).drop_columns(["normalized"])
    if pc.all(normalized).as_py() is not False and normalized.null_count == 0:
        keep = table
    else:  # rare: some requests are not normalized; validate_record normalizes them or they are dropped
        kept = []
        for row, ok in zip(table.to_pylist(), normalized.to_pylist()):
            row["products"] = decode_products(row["products"])
            if not ok:
                request = {"id": row["id"], "session_id": row["session_id"],
                           "record": {k: row[k] for k in ("utterance", "intent", "context", "products",
                                                          "screen_available")}}
                try:
                    clean = _request(request)
                except RecordError as e:
                    report.dropped["invalid request record"] += 1
                    if len(report.examples) < MAX_EXAMPLES:
                        report.examples.append(f"decision {row['id']!r}: {e}")
                    continue
                row.update({k: clean[k] for k in ("utterance", "intent", "context", "products", "screen_available",
                                                  "session_id")})
            kept.append(row)
        columns = {name: pa.array([r[name] for r in kept], type=table.schema.field(name).type)
                   for name in table.schema.names if name != "products"}
        columns["products"] = encode_products([r["products"] for r in kept])
        keep = pa.table({name: columns[name] for name in table.schema.names})
        has_feedback = keep.column("has_feedback")
    report.records += keep.num_rows
    report.positives += int(pc.sum(keep.column("label")).as_py() or 0)
    report.offered += int(pc.sum(keep.column("offered").cast(pa.int64())).as_py() or 0)
    report.explored += int(pc.sum(keep.column("explored").cast(pa.int64())).as_py() or 0)
    with_feedback = int(pc.sum(pc.cast(has_feedback, pa.int64())).as_py() or 0)
    report.with_feedback += with_feedback
    report.without_feedback += keep.num_rows - with_feedback
    return keep.drop_columns(["has_feedback"]).cast(JOINED_SCHEMA)


def _records(table: pa.Table) -> list[dict[str, Any]]:
    """Joined rows as the Python engine's record dicts (for JSONL output)."""
    rows = table.drop_columns(["true_intent", EXTRA_COLUMN]).to_pylist()
    for row in rows:
        row["products"] = decode_products(row["products"]) or []
    return rows


def _write(result: Any, out: str | Path | None, report: JoinReport, total: int,
           progress: Callable[[int, int], None] | None) -> None:
    batches = (_checked(batch, report) for batch in result)
    if out is None:
        for _ in batches:
            if progress is not None:
                progress(report.records, total)
        return
    if file_format(out) != ".parquet":
        with RecordWriter(out) as writer:
            for table in batches:
                writer.write(_records(table))
                if progress is not None:
                    progress(report.records, total)
        return
    with atomic_path(out) as tmp, pq.ParquetWriter(tmp, JOINED_SCHEMA, compression="zstd") as writer:
        for table in batches:
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            if progress is not None:
                progress(report.records, total)
