"""What a backbone costs to run: the ONNX export of a trained artifact (fp32, and int8 where its parity passes) and
the CPU latency of one query through the faster of them (what `irp serve --runtime auto` picks), measured the way `irp serve` answers one request (validation,
featurization, ONNX Runtime on 1 thread, sigmoid). Used by the backbones table (`irp ablate --table backbones`).

Training throughput is not measured here: it is read from each run's own training record (`training_rate`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def training_rate(training: dict[str, Any], batch_size: int) -> float | None:
    """Training examples per second of one run: optimiser steps x batch over the training loop's time without its
    validation passes (tokenization is not in it: features are built before the loop, and cached).

    >>> training_rate({"steps": 100, "train_loop_s": 12.0, "eval_s": 2.0}, 32)
    320.0
    >>> training_rate({"steps": 100}, 32) is None
    True
    """
    steps, loop, evals = training.get("steps"), training.get("train_loop_s"), training.get("eval_s") or 0.0
    if not steps or not loop or loop - evals <= 0:
        return None
    return round(steps * batch_size / (loop - evals), 1)


def export_for_latency(
    model_dir: Path, parity_data: Path, max_records: int, int8_scheme: str = "auto"
) -> dict[str, Any]:
    """`irp export-onnx --int8` (`auto`: the first of per-channel, vector-wise, blockwise that passes parity), in
    one export: the fp32 graph must pass its parity check, the int8 one is timed only if it passed too (else the
    fp32 graph is). Returns the runtime to time and what the export said about each int8 scheme."""
    from irp.export import ExportError, export_onnx

    report = export_onnx(model_dir, int8=True, data=parity_data, max_records=max_records, int8_scheme=int8_scheme,
                         force=True)  # installs the files whatever the int8 parity; fp32's is checked below
    fp32 = report.parity["fp32"]
    if not fp32.passed:
        raise ExportError(f"{model_dir}: fp32 ONNX parity failed: " + "; ".join(fp32.problems()))
    int8 = report.parity.get("int8")
    out: dict[str, Any] = {
        "parity_records": fp32.n, "fp32_max_abs_diff": max(fp32.max_abs_diff, fp32.max_abs_diff_single),
        "int8_tried": int8_scheme, "int8_scheme": None, "export_s": report.seconds,
        "int8_failures": [n for n in report.notes if n.startswith("int8 ") and "failed parity" in n],
    }
    if int8 is not None and int8.passed:
        out |= {"runtime": "onnx-int8", "int8_scheme": report.int8_scheme,
                "int8_max_abs_diff": max(int8.max_abs_diff, int8.max_abs_diff_single), "int8_ap": int8.ap_onnx,
                "torch_ap": int8.ap_torch}
    else:
        out["runtime"] = "onnx-fp32"
        if int8 is not None and not out["int8_failures"]:
            out["int8_failures"] = [f"int8 {report.int8_scheme} failed parity: " + "; ".join(int8.problems())]
    return out


def single_query_latency(model_dir: Path, runtime: str, records: list[dict], warmup: int = 10) -> dict[str, Any]:
    """p50 / p90 milliseconds of one record in, probability out, on 1 CPU thread, each call a new record."""
    from irp.onnx_runtime import load_onnx
    from irp.predict import IRPClassifier
    from irp.schema import validate_record

    model, featurizer, meta = load_onnx(model_dir, runtime, threads=1, concurrency=1)
    clf = IRPClassifier(model, featurizer, meta)  # type: ignore[arg-type]
    valid = [validate_record({k: v for k, v in r.items() if k not in ("label", "true_intent")}) for r in records]
    for record in valid[:warmup]:
        clf.predict_proba([record])
    times = []
    for record in valid[warmup:]:
        started = time.perf_counter()
        clf.predict_proba([record])
        times.append(time.perf_counter() - started)
    ms = np.asarray(times) * 1000.0
    return {"runtime": runtime, "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p90_ms": round(float(np.percentile(ms, 90)), 3), "calls": int(ms.size), "threads": 1}


def measure_cost(
    model_dir: Path, data: Path, queries: int = 100, parity_records: int = 300, int8_scheme: str = "auto"
) -> dict[str, Any]:
    """Export `model_dir` to ONNX (fp32, and int8 where its parity passes), time single queries of `data` on one
    CPU thread through each, and keep the faster: the runtime `irp serve --runtime auto` would pick."""
    from itertools import islice

    from irp.data.io import iter_records
    from irp.serve.runtime_choice import fastest

    started = time.perf_counter()
    info = export_for_latency(model_dir, data, parity_records, int8_scheme)
    records = list(islice(iter_records(data), queries + 10))
    candidates = ["onnx-fp32"] + (["onnx-int8"] if info["runtime"] == "onnx-int8" else [])
    latencies = {runtime: single_query_latency(model_dir, runtime, records) for runtime in candidates}
    info["p50_ms_by_runtime"] = {runtime: lat["p50_ms"] for runtime, lat in latencies.items()}
    info["runtime"] = fastest(info["p50_ms_by_runtime"])
    info["latency"] = latencies[info["runtime"]]
    info["encoder_params_m"] = encoder_params_m(model_dir)
    info["cpu"] = _cpu_name()
    info["seconds"] = round(time.perf_counter() - started, 1)
    return info


def encoder_params_m(model_dir: Path) -> float:
    """Millions of parameters of the artifact's encoder (read from the safetensors header, no weights loaded)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(Path(model_dir) / "model.safetensors"), framework="np") as handle:
        for name in handle.keys():
            if name.startswith("encoder."):
                total += int(np.prod(handle.get_slice(name).get_shape()))
    return round(total / 1e6, 2)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "?")
    except OSError:
        return os.uname().machine
