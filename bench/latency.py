"""Single-record latency and batch throughput of irp's runtimes against a Hugging Face pipeline baseline.

    python bench/latency.py --model DIR --out OUTDIR [--calls N] [--warmup W] [--data FILE]

End to end per call: one raw record in -> probability out (validation, tokenization, product summary, padding,
network, sigmoid), on 1 CPU thread, p50 / p99 over `--calls` calls after `--warmup` calls. Runtimes:

- hf_pipeline_torch: `transformers.pipeline("text-classification")` in torch fp32 on the same encoder
  architecture (random classifier weights: speed does not depend on their values), reading the same text as
  irp's encoder (intent, utterance) but not the products;
- irp_torch, irp_onnx_fp32, irp_onnx_int8: `IRPClassifier.predict_proba([record])` on each runtime
  (needs `irp export-onnx --model DIR --int8` first).

The runtimes take turns in blocks of `--block` calls on the same records (`irp.serve.runtime_choice.
time_interleaved`, rotating the order), so that a busy machine slows them alike and the ratios stay fair, while each
runtime keeps its weights warm in the CPU caches within a block, as a server running one model does (a runtime switch
on every call would evict them). Every call sees a record not seen before (repeats of the same query text or
product values inside the data are cache hits, as they would be in production). Then batch throughput:
records/s of irp on ONNX int8 on 2 threads (two single-threaded runs at once, as `irp predict` scores), batches of 64.

Writes OUTDIR/latency.json: for each runtime {p50_ms, p99_ms, mean_ms, min_ms}, batch_records_per_s,
speedup_p50_int8_vs_hf, featurize_collate (the Python featurization share of the irp latencies, measured alone),
the int8 scheme of the export, and the settings and machine load of the run.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch starts its thread pool
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

RUNTIMES = ("hf_pipeline_torch", "irp_torch", "irp_onnx_fp32", "irp_onnx_int8")


def summarize(milliseconds: list[float]) -> dict[str, float]:
    """Latency summary in milliseconds.

    >>> summarize([1.0, 2.0, 3.0])["p50_ms"]
    2.0
    """
    ms = np.asarray(milliseconds, dtype=np.float64)
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "mean_ms": round(float(ms.mean()), 3),
        "min_ms": round(float(ms.min()), 3),
        "n": int(len(ms)),
    }


def load_records(data: Path | None, n: int) -> tuple[list[dict], str]:
    """`n` raw records without labels: from `data`, else simulated (deterministic)."""
    if data is not None:
        from irp.data.io import load_records as load

        records = load(data)
        if len(records) < n:  # cycle: later passes hit warm caches, which the note in the JSON says
            records = [records[i % len(records)] for i in range(n)]
        source = str(data)
    else:
        from irp.data.simulate import SimConfig, simulate

        records, source = list(simulate(SimConfig(n=n, seed=4242))), f"simulated (n={n}, seed=4242)"
    drop = {"label", "true_intent", "true_category", "user_id"}
    return [{k: v for k, v in r.items() if k not in drop and not k.startswith("_")} for r in records[:n]], source


def hf_pipeline(model_dir: Path) -> Callable[[dict], float]:
    """A pipeline-style baseline: the artifact's encoder architecture with a sequence-classification head."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, pipeline

    encoder_config = json.loads((model_dir / "encoder_config.json").read_text())
    config = AutoConfig.for_model(**(encoder_config | {"num_labels": 1}))
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir / "tokenizer"))
    pipe = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu", function_to_apply="sigmoid")

    def call(record: dict) -> float:
        out = pipe({"text": str(record.get("intent") or "unknown"), "text_pair": record["utterance"].strip()})
        return float(out["score"] if isinstance(out, dict) else out[0]["score"])

    return call


def irp_runner(
    model_dir: Path, runtime: str, threads: int = 1, concurrency: int = 1
) -> tuple[Callable[[dict], float], Any]:
    from irp.onnx_runtime import load_onnx
    from irp.predict import IRPClassifier
    from irp.schema import validate_record

    if runtime == "torch":
        clf = IRPClassifier.load(model_dir, runtime="torch")
    else:
        model, featurizer, meta = load_onnx(model_dir, runtime, threads=threads, concurrency=concurrency)
        clf = IRPClassifier(model, featurizer, meta)  # type: ignore[arg-type]

    def call(record: dict) -> float:
        return float(clf.predict_proba([validate_record(record)])[0])

    return call, clf


def featurize_times(model_dir: Path, records: list[dict]) -> list[float]:
    """Milliseconds per record of validation + Featurizer.featurize + collate alone (fresh featurizer, one record
    a call): the Python share of every irp runtime's latency."""
    from irp.artifact import read_meta
    from irp.config import IRPConfig
    from irp.features import Featurizer
    from irp.model.encoder import load_tokenizer
    from irp.schema import validate_record

    featurizer = Featurizer(load_tokenizer(str(model_dir / "tokenizer")), IRPConfig.from_dict(read_meta(model_dir)["config"]))
    times = []
    for record in records:
        started = time.perf_counter()
        featurizer.collate(featurizer.featurize([validate_record(record)]), np.arange(1))
        times.append((time.perf_counter() - started) * 1000.0)
    return times


def batch_throughput(
    clf: Any, records: list[dict], batch_size: int, seconds: float = 10.0, micro_batch: int = 16
) -> dict[str, float]:
    """Records/s of clf.predict_proba on consecutive batches of `batch_size` records (2 warm-up batches, then
    >= `seconds` of work). Each batch is scored in length-sorted chunks of `micro_batch` (as `irp serve` does):
    less padding, and activations that fit the CPU caches (one [64, T, 1536] tensor does not)."""
    from irp.schema import validate_record

    batches = [[validate_record(r) for r in records[i : i + batch_size]]
               for i in range(0, len(records) - batch_size + 1, batch_size)]
    for batch in batches[:2]:
        clf.predict_proba(batch, batch_size=micro_batch)
    done, started, i = 0, time.perf_counter(), 2
    while True:
        batch = batches[i % len(batches)]
        clf.predict_proba(batch, batch_size=micro_batch)
        done += len(batch)
        i += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and i >= 12:
            break
    return {"records_per_s": round(done / elapsed, 1), "records": done, "seconds": round(elapsed, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="artifact directory (with onnx/ from export-onnx --int8)")
    parser.add_argument("--out", type=Path, required=True, help="output folder for latency.json")
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per runtime (default 1000)")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls per runtime first (default 100)")
    parser.add_argument("--data", type=Path, default=None, help="records to use (default: simulated)")
    parser.add_argument("--block", type=int, default=50, help="calls in a row per runtime before the next (default 50)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batch-threads", type=int, default=2)
    parser.add_argument("--micro-batch", type=int, default=16, help="chunk size inside a batch (default 16)")
    parser.add_argument("--batch-seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.calls < 1 or args.warmup < 0 or args.block < 1:
        parser.error("--calls and --block must be >= 1, --warmup >= 0")
    if not (args.model / "config.json").is_file():
        parser.error(f"{args.model} is not an irp model directory")

    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table
    from transformers.utils import logging as hf_logging

    from irp.onnx_runtime import exported
    from irp.serve.runtime_choice import time_interleaved

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(1)
    console = Console(stderr=True)
    missing = {"onnx-fp32", "onnx-int8"} - set(exported(args.model))
    if missing:
        parser.error(f"{args.model} lacks {', '.join(sorted(missing))}: run `irp export-onnx --model {args.model} --int8`")

    n = args.warmup + args.calls
    records, source = load_records(args.data, max(n, args.batch_size * 16))
    load_before = os.getloadavg()
    with console.status("loading runtimes..."):
        runners: dict[str, Callable[[dict], float]] = {"hf_pipeline_torch": hf_pipeline(args.model)}
        runners["irp_torch"], _ = irp_runner(args.model, "torch")
        runners["irp_onnx_fp32"], _ = irp_runner(args.model, "onnx-fp32")
        runners["irp_onnx_int8"], int8_clf = irp_runner(args.model, "onnx-int8")

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task("single-record calls", total=n * len(RUNTIMES))
        times = time_interleaved(
            {name: (lambda batch, run=runners[name]: run(batch[0])) for name in RUNTIMES}, records[:n], args.block,
            args.warmup, on_block=lambda calls: bar.advance(task, calls * len(RUNTIMES)),
        )

    featurize = featurize_times(args.model, records[:n])[args.warmup:]
    with console.status(f"batch throughput (batch {args.batch_size}, {args.batch_threads} threads)..."):
        # batch scoring as `irp predict` runs it (IRPClassifier.load): single-threaded runs, batch_threads at once
        _, batch_clf = irp_runner(args.model, "onnx-int8", threads=1, concurrency=args.batch_threads)
        batch = batch_throughput(batch_clf, records, args.batch_size, args.batch_seconds, args.micro_batch)

    result: dict[str, Any] = {name: summarize(times[name]) for name in RUNTIMES}
    result["featurize_collate"] = summarize(featurize)  # included in every irp_* latency above
    result["batch_records_per_s"] = batch["records_per_s"]
    result["speedup_p50_int8_vs_hf"] = round(result["hf_pipeline_torch"]["p50_ms"] / result["irp_onnx_int8"]["p50_ms"], 2)
    result["speedup_p50_int8_vs_irp_torch"] = round(result["irp_torch"]["p50_ms"] / result["irp_onnx_int8"]["p50_ms"], 2)
    result["batch"] = batch | {"runtime": "onnx-int8", "batch_size": args.batch_size, "threads": args.batch_threads,
                               "intra_op_threads_per_run": 1, "micro_batch": args.micro_batch}
    result["settings"] = {
        "model": str(args.model),
        "records": source,
        "calls": args.calls,
        "block": args.block,
        "warmup": args.warmup,
        "single_record_threads": 1,
        "int8_scheme": (int8_clf.meta_.get("onnx") or {}).get("int8_scheme"),
        "machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "python": sys.version.split()[0],
        "torch": torch.__version__,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / ".latency.json.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.out / "latency.json")

    table = Table("runtime", "p50 ms", "p99 ms", "mean ms", title=f"single record, 1 thread, {args.calls} calls")
    for name in RUNTIMES:
        r = result[name]
        table.add_row(name, f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['mean_ms']:.2f}")
    table.add_row("(featurize+collate)", f"{result['featurize_collate']['p50_ms']:.2f}",
                  f"{result['featurize_collate']['p99_ms']:.2f}", f"{result['featurize_collate']['mean_ms']:.2f}")
    Console().print(table)
    Console().print(
        f"int8 vs hf pipeline at p50: {result['speedup_p50_int8_vs_hf']}x; batch {args.batch_size} on "
        f"{args.batch_threads} threads: {batch['records_per_s']:,.0f} records/s -> {args.out / 'latency.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
