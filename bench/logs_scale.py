"""Logs at production volume: a synthetic day of decisions in the Parquet log layout, joined, evaluated, scored.

    .venv/bin/python bench/logs_scale.py --out DIR [--n 10000000] [--n-compare 1000000] [--stages all]

Stages (each merges its keys into DIR/logs_scale.json, so a stage can be rerun alone with --stages):

- `generate`: a synthetic log of `--n` decisions (a day, two replicas) with feedback, written vectorised
  straight into the documented layout (DIR/log_big/kind=.../date=.../hour=.../<replica>-<id>.parquet, row groups
  of 10,000 as `irp serve` writes them). Requests are drawn from an `irp simulate` pool (utterances, context,
  nested products), decisions follow the serving policy (threshold 0.5, explore rate 0.1, 10 % ineligible),
  feedback arrives after an exponential delay (mean 60 s), 0.5 % of it two days late.
- `compare`: the first `--n-compare` decisions of the same generator in both layouts (Parquet, and the JSON
  Lines of older servers: the same events); `bytes_per_decision_*` (decisions and their feedback, on disk);
  `old_join_s_1m` (today's in-memory join on the JSONL log, `irp logs join --engine python`) and
  `new_join_s_1m` (`irp logs join`, DuckDB, on the Parquet log), each a child process timed with its peak RSS
  (/usr/bin/time -v), and a check that both give the same records and counts.
- `bytes`: bytes per decision of both layouts when requests rarely repeat (200,000 decisions, 200,000-request pool).
- `join`: `irp logs join` on the big log -> DIR/joined.parquet: `join_s`, `join_peak_rss_mb`, `join_records_per_s`.
- `policy_eval`: `irp policy-eval --scores` on the joined log (the candidate's probabilities precomputed by a
  vectorised stand-in scorer, because scoring 10M records on 2 cores is `predict`'s job, measured below):
  `policy_eval_s`, `policy_eval_peak_rss_mb`.
- `validate`: `irp validate` on the 1M joined Parquet (streamed): `validate_s_1m`, `validate_peak_rss_mb_1m`.
- `model`: unless `--model` is given, MiniLM-L6 trained briefly (30 steps) on simulated records, ONNX int8.
- `predict`: records/s of `irp predict` on `--n-predict` joined records, single process and `--engine ray`
  with 2 actors, ONNX int8 (`--runtime`).

Every measurement names the machine it ran on (`machine`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from irp.logs.parquet_log import (  # noqa: E402
    DECISION_SCHEMA,
    FEEDBACK_SCHEMA,
    KIND_DIRS,
    LOG_SCHEMA_VERSION,
    POLICY_TYPE,
    RECORD_TYPE,
    table_to_events,
)

IRP = [sys.executable, "-m", "irp.cli"]
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200",
                    "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
T0 = 1_764_547_200.0  # 2025-12-01T00:00:00Z
DAY = 86_400.0
EXPLORE, THRESHOLD = 0.1, 0.5
ROW_GROUP = 10_000
REPLICAS = ("replica-a", "replica-b")


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(ram, 1),
            "python": platform.python_version()}


def timed(cmd: list[str], log: Path) -> dict[str, Any]:
    """Run a child under /usr/bin/time -v: seconds, peak RSS (MB), exit code; output to `log`."""
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=out, stderr=subprocess.STDOUT, env=ENV)
    seconds = time.perf_counter() - start
    text = log.read_text(errors="replace")
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(int(match.group(1)) / 1024, 1) if match else None,
            "rc": done.returncode}


# ---- the synthetic log -------------------------------------------------------------------------------------


def request_pool(folder: Path, n: int = 20_000) -> pa.Table:
    pool = folder / "pool.parquet"
    if not pool.exists():
        subprocess.run([*IRP, "simulate", "--n", str(n), "--seed", "0", "--out", str(pool)], check=True, env=ENV,
                       stdout=subprocess.DEVNULL)
    return pq.read_table(pool, columns=["utterance", "intent", "context", "products", "screen_available", "label"])


def decisions_table(first: int, m: int, n: int, pool: pa.Table, rng: np.random.Generator) -> tuple[pa.Table, np.ndarray]:
    """Decisions first .. first+m-1 of a day of n (ts spread evenly), and their click labels."""
    i = np.arange(first, first + m)
    take = pa.array(rng.integers(0, pool.num_rows, m))
    rec = pool.take(take)
    ids = pc.binary_join_element_wise("d", pc.cast(pa.array(i), pa.string()), "")
    sessions = pc.binary_join_element_wise("s", pc.cast(pa.array(i // 5), pa.string()), "")  # 5 turns a session
    record = pa.StructArray.from_arrays([rec.column(k).combine_chunks() for k in RECORD_TYPE.names],
                                        fields=list(RECORD_TYPE))
    prob = rng.random(m)
    above = prob >= THRESHOLD
    eligible = (rng.random(m) > 0.1) & (rec.column("screen_available").to_numpy(zero_copy_only=False) != False)  # noqa: E712
    exploring = rng.random(m) < EXPLORE
    coin = rng.random(m) < 0.5
    offered = eligible & np.where(exploring, coin, above)
    propensity = np.where(eligible, (1 - EXPLORE) * above + EXPLORE * 0.5, 0.0)
    policy = pa.array([{"name": "threshold+cooldown+explore", "cooldown_s": 0.0, "explore_rate": EXPLORE}] * m,
                      type=POLICY_TYPE)
    columns = {
        "schema": pa.array(np.full(m, LOG_SCHEMA_VERSION, dtype=np.int16)), "id": ids,
        "ts": pa.array(T0 + i * (DAY / n)), "session_id": sessions, "record": record,
        "probability": pa.array(np.round(prob, 6)), "threshold": pa.array(np.full(m, THRESHOLD)),
        "image_seeking": pa.array(above), "suggest_switch": pa.array(offered), "eligible": pa.array(eligible),
        "explored": pa.array(eligible & (offered != above)), "propensity": pa.array(propensity),
        "model_version": pa.array(["A"] * m), "policy": policy,
    }
    label = rec.column("label").to_numpy(zero_copy_only=False).astype(bool)
    return pa.table(columns, schema=DECISION_SCHEMA), label


def feedback_table(dec: pa.Table, label: np.ndarray, rng: np.random.Generator) -> pa.Table:
    """Each decision's tap or no_tap (85 %), and the answer to an offer (90 % of offers)."""
    m = dec.num_rows
    ts = dec.column("ts").to_numpy()
    offered = dec.column("suggest_switch").to_numpy(zero_copy_only=False)
    tapped = label & (rng.random(m) < 0.95)
    sent = rng.random(m) < 0.85
    answered = offered & (rng.random(m) < 0.9)
    ids = dec.column("id").combine_chunks()
    parts = []
    for mask, event in ((sent & tapped, "carousel_tap"), (sent & ~tapped, "no_tap"),
                        (answered & tapped, "offer_accepted"), (answered & ~tapped, "offer_declined")):
        k = int(mask.sum())
        delay = rng.exponential(60.0, k)
        delay[rng.random(k) < 0.005] += 2 * DAY  # late: beyond the default 1-day window
        parts.append(pa.table({"schema": pa.array(np.full(k, LOG_SCHEMA_VERSION, dtype=np.int16)),
                               "id": ids.filter(pa.array(mask)), "event": pa.array([event] * k),
                               "ts": pa.array(ts[mask] + delay), "received_ts": pa.array(ts[mask] + delay + 0.05)},
                              schema=FEEDBACK_SCHEMA))
    table = pa.concat_tables(parts)
    return table.take(pc.sort_indices(table.column("received_ts")))


def write_partitioned(folder: Path, kind: str, table: pa.Table, stamp_ts: str, seq: list[int]) -> None:
    """Rows into DIR/kind=K/date=D/hour=H/<replica>-<time-ordered id>.parquet, alternating replicas by row."""
    hours = ((table.column(stamp_ts).to_numpy() - T0) // 3600).astype(np.int64)
    replica = np.arange(table.num_rows) % len(REPLICAS)
    for h in np.unique(hours):
        day, hour = divmod(int(h), 24)
        date = time.strftime("%Y-%m-%d", time.gmtime(T0 + day * DAY))
        part = folder / KIND_DIRS[kind] / f"date={date}" / f"hour={hour:02d}"
        part.mkdir(parents=True, exist_ok=True)
        for r, name in enumerate(REPLICAS):
            rows = table.filter(pa.array((hours == h) & (replica == r)))
            if rows.num_rows:
                seq[0] += 1
                pq.write_table(rows, part / f"{name}-{seq[0]:012x}{0:020x}.parquet", compression="zstd",
                               row_group_size=ROW_GROUP)


def generate(folder: Path, n: int, pool: pa.Table, seed: int, chunk: int = 500_000, jsonl: Path | None = None) -> None:
    """A day of n decisions and their feedback, in chunks (bounded memory); optionally the same events as JSONL."""
    rng = np.random.default_rng(seed)
    seq = [0]
    for first in range(0, n, chunk):
        m = min(chunk, n - first)
        dec, label = decisions_table(first, m, n, pool, rng)
        fb = feedback_table(dec, label, rng)
        write_partitioned(folder, "decision", dec, "ts", seq)
        write_partitioned(folder, "feedback", fb, "received_ts", seq)
        if jsonl is not None:
            write_jsonl(jsonl, "decisions", dec, first // chunk)
            write_jsonl(jsonl, "feedback", fb, first // chunk)
        print(f"  generated {first + m:,} / {n:,} decisions", flush=True)


def write_jsonl(folder: Path, prefix: str, table: pa.Table, seq: int) -> None:
    """The same events as the JSON Lines of older servers (schema 1)."""
    folder.mkdir(parents=True, exist_ok=True)
    kind = "decision" if prefix == "decisions" else "feedback"
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    with open(folder / f"{prefix}-20251201T000000{seq:06d}Z-1-{seq:06d}.jsonl", "w") as out:
        for batch in table.to_batches(50_000):
            rows = table_to_events(kind, batch)
            out.write("".join(dumps({"schema": 1, **{k: v for k, v in row.items() if k != "schema"}}) + "\n"
                              for row in rows))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ---- stages ------------------------------------------------------------------------------------------------


def stage_generate(out: Path, args: argparse.Namespace, pool: pa.Table) -> dict[str, Any]:
    big = out / "log_big"
    shutil.rmtree(big, ignore_errors=True)
    start = time.perf_counter()
    generate(big, args.n, pool, seed=1)
    files = sum(1 for _ in big.rglob("*.parquet"))
    return {"decisions": args.n, "log_bytes": folder_bytes(big), "log_files": files,
            "generate_s": round(time.perf_counter() - start, 1)}


def stage_compare(out: Path, args: argparse.Namespace, pool: pa.Table) -> dict[str, Any]:
    parquet, jsonl = out / "log_1m", out / "log_1m_jsonl"
    for folder in (parquet, jsonl):
        shutil.rmtree(folder, ignore_errors=True)
    generate(parquet, args.n_compare, pool, seed=2, jsonl=jsonl)
    n = args.n_compare
    result: dict[str, Any] = {"compare_decisions": n,
                              "bytes_per_decision_jsonl": round(folder_bytes(jsonl) / n, 1),
                              "bytes_per_decision_parquet": round(folder_bytes(parquet) / n, 1)}
    result["parquet_over_jsonl"] = round(result["bytes_per_decision_parquet"] / result["bytes_per_decision_jsonl"], 4)
    new = timed([*IRP, "logs", "join", "--log-dir", str(parquet), "--out", str(out / "joined_1m_new.parquet"),
                 "--json", str(out / "join_1m_new.json")], out / "join_1m_new.log")
    old = timed([*IRP, "logs", "join", "--engine", "python", "--log-dir", str(jsonl),
                 "--out", str(out / "joined_1m_old.parquet"), "--json", str(out / "join_1m_old.json")],
                out / "join_1m_old.log")
    result.update(new_join_s_1m=new["seconds"], new_join_peak_rss_mb_1m=new["peak_rss_mb"], new_join_rc_1m=new["rc"],
                  old_join_s_1m=old["seconds"], old_join_peak_rss_mb_1m=old["peak_rss_mb"], old_join_rc_1m=old["rc"])
    if new["rc"] == 0 and old["rc"] == 0:
        result["new_over_old_1m"] = round(new["seconds"] / old["seconds"], 4)
        a = json.loads((out / "join_1m_new.json").read_text())
        b = json.loads((out / "join_1m_old.json").read_text())
        for report in (a, b):
            report.pop("engine")
            report["scan"].pop("examples")
            report["scan"].pop("decision_files"), report["scan"].pop("feedback_files")  # 48+ vs 2+2 files
        result["old_new_reports_equal_1m"] = a == b
        result["old_new_same_records_1m"] = same_records(out / "joined_1m_new.parquet", out / "joined_1m_old.parquet")
        result["joined_records_1m"] = a["records"]
    return result


def same_records(a: Path, b: Path) -> bool:
    """Both joins' outputs, read back as records, streamed side by side."""
    sys.path.insert(0, str(ROOT / "src"))
    from irp.data.io import iter_records

    left, right = iter_records(a), iter_records(b)
    for x, y in zip(left, right, strict=True):
        if x != y:
            return False
    return True


def stage_bytes(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Bytes per decision when requests rarely repeat: 200,000 decisions drawn from a pool of 200,000 simulated
    requests (the main log draws from 20,000, which Parquet's dictionaries compress better)."""
    n = 200_000
    (out / "pool_200k").mkdir(exist_ok=True)
    pool = request_pool(out / "pool_200k", n=n)
    parquet, jsonl = out / "log_distinct", out / "log_distinct_jsonl"
    for folder in (parquet, jsonl):
        shutil.rmtree(folder, ignore_errors=True)
    generate(parquet, n, pool, seed=4, chunk=100_000, jsonl=jsonl)
    jsonl_b, parquet_b = folder_bytes(jsonl) / n, folder_bytes(parquet) / n
    return {"bytes_per_decision_jsonl_distinct": round(jsonl_b, 1), "bytes_per_decision_parquet_distinct": round(parquet_b, 1),
            "parquet_over_jsonl_distinct": round(parquet_b / jsonl_b, 4), "distinct_pool": n}


def stage_join(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    run = timed([*IRP, "logs", "join", "--log-dir", str(out / "log_big"), "--out", str(out / "joined.parquet"),
                 "--json", str(out / "join_big.json"), *(["--memory-limit", args.memory_limit] if args.memory_limit else [])],
                out / "join_big.log")
    result = {"join_s": run["seconds"], "join_peak_rss_mb": run["peak_rss_mb"], "join_rc": run["rc"]}
    if run["rc"] == 0:
        report = json.loads((out / "join_big.json").read_text())
        result.update(joined_records=report["records"], join_late_feedback=report["late_feedback"],
                      join_records_per_s=round(report["decisions"] / run["seconds"], 1),
                      joined_bytes=(out / "joined.parquet").stat().st_size)
    return result


def stage_policy_eval(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    joined = out / "joined.parquet"
    scores = out / "scores.parquet"
    writer = None
    rng = np.random.default_rng(3)
    for batch in pq.ParquetFile(joined).iter_batches(100_000, columns=["id", "logged_probability"]):
        # A stand-in candidate: the logging model's score with noise, the way a retrained model differs.
        p = np.clip(batch.column("logged_probability").to_numpy() + rng.normal(0, 0.1, batch.num_rows), 0, 1)
        table = pa.table({"id": batch.column("id"), "probability": pa.array(p)})
        writer = writer or pq.ParquetWriter(scores, table.schema, compression="zstd")
        writer.write_table(table)
    assert writer is not None
    writer.close()
    run = timed([*IRP, "policy-eval", "--logs", str(joined), "--scores", str(scores), "--threshold", "0.5",
                 "--n-boot", str(args.n_boot), "--json", str(out / "policy_eval.json")], out / "policy_eval.log")
    return {"policy_eval_s": run["seconds"], "policy_eval_peak_rss_mb": run["peak_rss_mb"], "policy_eval_rc": run["rc"],
            "policy_eval_n_boot": args.n_boot}


def stage_model(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """A real model to score with when --model is not given: MiniLM-L6 trained briefly on simulated records,
    exported to ONNX int8 (throughput does not depend on how well it was trained)."""
    model = out / "model"
    if not (model / "config.json").is_file():
        for name, n, seed in (("train", 3000, 10), ("valid", 1000, 11)):
            subprocess.run([*IRP, "simulate", "--n", str(n), "--seed", str(seed), "--out", str(out / f"{name}.jsonl")],
                           check=True, env=ENV, stdout=subprocess.DEVNULL)
        subprocess.run([*IRP, "train", "--train", str(out / "train.jsonl"), "--valid", str(out / "valid.jsonl"),
                        "--out", str(model), "--backbone", "minilm-l6", "--max-steps", "30", "--batch-size", "32",
                        "--device", "cpu"], check=True, env=ENV, stdout=subprocess.DEVNULL)
        subprocess.run([*IRP, "export-onnx", "--model", str(model), "--int8"], check=True, env=ENV,
                       stdout=subprocess.DEVNULL)
    args.model = model
    return {"model": str(model), "model_backbone": "minilm-l6"}


def stage_validate(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    joined = out / "joined_1m_new.parquet"
    run = timed([*IRP, "validate", str(joined)], out / "validate_1m.log")
    return {"validate_s_1m": run["seconds"], "validate_peak_rss_mb_1m": run["peak_rss_mb"], "validate_rc_1m": run["rc"],
            "validate_records_per_s": round(1_000_000 / run["seconds"], 1)}


def stage_predict(out: Path, args: argparse.Namespace) -> dict[str, Any]:
    if args.model is None and (out / "model" / "config.json").is_file():
        args.model = out / "model"
    if args.model is None:
        return {"predict_note": "no --model given (run the model stage): predict stage skipped"}
    sample = out / "predict_in.parquet"
    table = pq.ParquetFile(out / "joined_1m_new.parquet").read_row_groups([0]).slice(0, args.n_predict)
    pq.write_table(table, sample)
    n = table.num_rows
    result: dict[str, Any] = {"predict_records": n, "predict_model": str(args.model), "predict_runtime": args.runtime}
    single = timed([*IRP, "predict", "--model", str(args.model), "--data", str(sample), "--runtime", args.runtime,
                    "--out", str(out / "pred_single")], out / "predict_single.log")
    result.update(predict_s_single=single["seconds"], predict_rc_single=single["rc"],
                  predict_records_per_s_single=round(n / single["seconds"], 1))
    ray = timed([*IRP, "predict", "--model", str(args.model), "--data", str(sample), "--runtime", args.runtime,
                 "--engine", "ray", "--workers", "2", "--out", str(out / "pred_ray")], out / "predict_ray.log")
    result.update(predict_s_ray=ray["seconds"], predict_rc_ray=ray["rc"],
                  predict_records_per_s_ray=round(n / ray["seconds"], 1), predict_ray_workers=2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--n-compare", type=int, default=1_000_000)
    parser.add_argument("--n-predict", type=int, default=5_000)
    parser.add_argument("--n-boot", type=int, default=200)
    parser.add_argument("--memory-limit", default=None)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--runtime", default="onnx")
    parser.add_argument("--stages", default="generate,compare,join,policy_eval,validate,model,predict")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "logs_scale.json"
    result: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    result["machine"] = machine()
    pool = request_pool(args.out)
    stages = {"generate": lambda: stage_generate(args.out, args, pool), "compare": lambda: stage_compare(args.out, args, pool),
              "join": lambda: stage_join(args.out, args), "policy_eval": lambda: stage_policy_eval(args.out, args),
              "validate": lambda: stage_validate(args.out, args), "bytes": lambda: stage_bytes(args.out, args), "model": lambda: stage_model(args.out, args),
              "predict": lambda: stage_predict(args.out, args)}
    for name in args.stages.split(","):
        print(f"== {name}", flush=True)
        got = stages[name]()
        got[f"{name}_machine"] = result["machine"]["host"]
        result.update(got)
        print(json.dumps(got, indent=1), flush=True)
        path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
