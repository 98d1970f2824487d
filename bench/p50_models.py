"""CPU p50 of single queries for several served models side by side, each on the runtime named (one thread).

    python bench/p50_models.py --data dev_report.jsonl --out p50.json RUNS/t13_dev:onnx-fp32 RUNS/s_l3_dev:onnx-fp32

The models take turns in blocks of `--block` calls on the same records (rotating through the data), so that a busy
machine slows them alike and their ratio stays fair, while each keeps its weights warm within a block, as a server
running one model does. `bench/latency.py` compares the runtimes of one model; this compares models (a student
against its baseline, on the runtime each would be served with). Prints and writes {p50_ms, ratio_to_first, ...}.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch starts its thread pool

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from irp.data.io import load_records  # noqa: E402
from irp.fileio import write_json_atomic  # noqa: E402
from irp.predict import IRPClassifier  # noqa: E402
from irp.serve.runtime_choice import time_single_requests  # noqa: E402


def parse_model(spec: str) -> tuple[Path, str]:
    """'DIR:RUNTIME' -> (DIR, RUNTIME).

    >>> parse_model("runs/t13:onnx-fp32")
    (PosixPath('runs/t13'), 'onnx-fp32')
    """
    folder, sep, runtime = spec.rpartition(":")
    if not sep or not folder or not runtime:
        raise argparse.ArgumentTypeError(f"expected DIR:RUNTIME (e.g. runs/t13:onnx-fp32), got {spec!r}")
    return Path(folder), runtime


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", type=parse_model, nargs="+", help="DIR:RUNTIME (torch, onnx-fp32, onnx-int8)")
    ap.add_argument("--data", type=Path, required=True, help="records to query with (one per call)")
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--blocks", type=int, default=12, help="rounds of blocks (default 12)")
    ap.add_argument("--block", type=int, default=50, help="calls in a row per model (default 50)")
    args = ap.parse_args(argv)
    records = load_records(args.data)
    names = [f"{folder.name}:{runtime}" for folder, runtime in args.models]
    models = [IRPClassifier.load(folder, runtime=runtime) for folder, runtime in args.models]
    for model in models:  # warm-up: lazy setup is not latency
        for record in records[: args.block]:
            model.predict_proba([record])
    timings: list[list[float]] = [[] for _ in models]
    start = args.block
    for _ in range(args.blocks):
        block = [records[(start + j) % len(records)] for j in range(args.block)]
        for model, times in zip(models, timings):  # the same records for every model, one untimed call first
            times += time_single_requests(model.predict_proba, block, rounds=args.block)
        start += args.block
    p50 = {name: round(statistics.median(times), 3) for name, times in zip(names, timings)}
    result = {
        "p50_ms": p50,
        "ratio_to_first": {name: round(p50[name] / p50[names[0]], 3) for name in names},
        "calls_per_model": args.blocks * args.block,
        "data": str(args.data),
        "cpu": platform.processor() or platform.machine(),
        "threads": 1,
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(json.dumps(result, indent=2))
    write_json_atomic(args.out, result)
    return result


if __name__ == "__main__":
    main()
