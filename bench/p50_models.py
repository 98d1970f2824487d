"""CPU p50 of single queries for several served models side by side, each on the runtime named (one thread).

    python bench/p50_models.py --data dev_report.jsonl --out p50.json RUNS/t13_dev:onnx-fp32 RUNS/s_l3_dev:onnx-fp32

The models take turns in blocks of `--block` calls on the same records (`irp.serve.runtime_choice.time_interleaved`,
as bench/latency.py: their order rotates each block; the first block is an untimed warm-up), so that a busy machine
slows them alike and their ratio stays fair, while each keeps its weights warm within a block, as a server running
one model does. `bench/latency.py` compares the runtimes of one model; this compares models (a student
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
from irp.serve.runtime_choice import time_interleaved  # noqa: E402


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
    if args.blocks < 1 or args.block < 1:
        ap.error(f"--blocks and --block must be >= 1, got {args.blocks} and {args.block}")
    names = [f"{folder.name}:{runtime}" for folder, runtime in args.models]
    if len(set(names)) < len(names):
        ap.error(f"a model is named twice: {' '.join(names)}")
    records = load_records(args.data)
    models = [IRPClassifier.load(folder, runtime=runtime) for folder, runtime in args.models]
    calls = [records[i % len(records)] for i in range(args.block * (1 + args.blocks))]  # cycling through the data
    timings = time_interleaved(  # the first block warms up: lazy setup is not latency
        {name: model.predict_proba for name, model in zip(names, models)}, calls, args.block, warmup=args.block
    )
    p50 = {name: round(statistics.median(timings[name]), 3) for name in names}
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
