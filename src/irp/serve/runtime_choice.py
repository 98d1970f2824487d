"""`irp serve --runtime auto`: serve with the fastest runtime that passed parity on this machine.

int8 is not always the fast one: on CPUs without VNNI its 8-bit matmuls are emulated and the int8 model is
slower than fp32 (bench/results/latency_cpu_novnni.json: 13.3 vs 11.5 ms p50). So at load, and at every reload,
each candidate (the artifact's int8 and fp32 ONNX exports, and the torch weights) is loaded and checked:

1. parity: an ONNX export whose own export-time parity check failed is out, and so is one whose probabilities on
   the probe records (irp.serve.reload.PROBES) differ from the torch weights' by more than the export tolerance;
2. speed: each remaining candidate answers `rounds` single-record predictions through the serving path
   (featurize, collate, network, calibration), after one untimed call; the lowest median (p50) wins, ties go to
   the more exact runtime (fp32 before int8 before torch).

The choice, every candidate's timings and the reasons for leaving one out ride on the classifier's meta
(`meta_["runtime_choice"]`): `GET /v1/model` shows them and the log gets one line.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from irp.predict import IRPClassifier

log = logging.getLogger("irp.serve.runtime")

# Tie order: the more exact runtime first.
CANDIDATES = ("onnx-fp32", "onnx-int8", "torch")
ROUNDS = 30  # timed single-record predictions per candidate: ~0.4 s each for minilm-l6 on one core

Clock = Callable[[], float]
Measure = Callable[[str, Callable[[Sequence[dict]], Any]], list[float]]


def time_single_requests(
    predict: Callable[[Sequence[dict]], Any], records: Sequence[dict], rounds: int = ROUNDS,
    clock: Clock = time.perf_counter,
) -> list[float]:
    """Milliseconds of `rounds` single-record calls `predict([record])`, cycling through `records`, after one
    untimed call (lazy setup is not latency).

    >>> ticks = iter(range(0, 100, 2))  # a fake clock: each reading 2 s after the last
    >>> time_single_requests(lambda batch: None, [{}], rounds=3, clock=lambda: next(ticks))
    [2000.0, 2000.0, 2000.0]
    """
    predict([records[0]])
    timings = []
    for i in range(rounds):
        started = clock()
        predict([records[i % len(records)]])
        timings.append((clock() - started) * 1000.0)
    return timings


def time_interleaved(
    predicts: Mapping[str, Callable[[Sequence[dict]], Any]], records: Sequence[dict], block: int, warmup: int = 0,
    clock: Clock = time.perf_counter, on_block: Callable[[int], None] = lambda calls: None,
) -> dict[str, list[float]]:
    """Milliseconds of single-record calls `predict([record])` of several predictors taking turns in blocks of
    `block` records (the benches' comparison: a busy machine slows them alike, so their ratios stay fair, while each
    keeps its weights warm within a block, as a server running one model does). Every predictor sees every record;
    their order rotates each block, so none always meets fresh records first; the first `warmup` records are not
    timed. `on_block(n)` hears each finished block of n records.

    >>> ticks = iter(range(100))  # a fake clock: each reading 1 s after the last
    >>> times = time_interleaved({"a": len, "b": len}, [{}] * 3, block=2, warmup=1, clock=lambda: next(ticks))
    >>> {name: len(ms) for name, ms in times.items()}, times["a"][0]
    ({'a': 2, 'b': 2}, 1000.0)
    """
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    order = list(predicts)
    times: dict[str, list[float]] = {name: [] for name in order}
    for start in range(0, len(records), block):
        order = order[1:] + order[:1]
        stop = min(start + block, len(records))
        for name in order:
            for i in range(start, stop):
                started = clock()
                predicts[name]([records[i]])
                if i >= warmup:
                    times[name].append((clock() - started) * 1000.0)
        on_block(stop - start)
    return times


def fastest(p50_ms: dict[str, float]) -> str:
    """The runtime with the lowest p50; ties go to the earlier of CANDIDATES.

    >>> fastest({"onnx-int8": 13.3, "onnx-fp32": 11.5, "torch": 25.8})
    'onnx-fp32'
    >>> fastest({"onnx-int8": 6.0, "onnx-fp32": 6.0})
    'onnx-fp32'
    """
    return min(p50_ms, key=lambda name: (p50_ms[name], CANDIDATES.index(name)))


def pick_fastest(
    model_dir: str | Path, threads: int = 1, rounds: int = ROUNDS, clock: Clock = time.perf_counter,
    measure: Measure | None = None,
) -> IRPClassifier:
    """The classifier of the fastest runtime that passed parity, with `meta_["runtime_choice"]` = {chosen,
    p50_ms, candidates: {name: {parity, p50_ms, timings_ms | excluded}}, rounds, threads, seconds}.

    `measure(name, predict)` returns the per-request milliseconds of one candidate (default: `rounds` timed
    single-record calls on `clock`); tests inject timings through it."""
    from irp.onnx_runtime import exported
    from irp.schema import validate_record
    from irp.serve.engine import Engine, load_classifier
    from irp.serve.reload import PROBES, onnx_parity

    started = time.perf_counter()
    if measure is None:
        def measure(name: str, predict: Callable[[Sequence[dict]], Any]) -> list[float]:
            return time_single_requests(predict, probes, rounds, clock)

    probes = [validate_record(r) for r in PROBES]
    torch_engine = Engine(load_classifier(model_dir, "torch", threads))
    reference = torch_engine.predict_proba(probes)
    engines: dict[str, Engine] = {"torch": torch_engine}
    report: dict[str, dict[str, Any]] = {"torch": {"parity": "reference"}}
    files = exported(model_dir)
    for name in ("onnx-int8", "onnx-fp32"):
        if name not in files:
            report[name] = {"excluded": "not exported"}
            continue
        try:
            engine = Engine(load_classifier(model_dir, name, threads))
        except (ValueError, OSError) as e:  # a stale export (other weights), an unreadable file
            report[name] = {"excluded": f"cannot load: {str(e)[:300]}"}
            continue
        parity = onnx_parity(engine, Path(model_dir), reference)
        report[name] = {"parity": parity}
        if parity is not None and not parity["passed"]:
            report[name]["excluded"] = f"parity failed: {parity['reason']}"
            continue
        engines[name] = engine
    p50: dict[str, float] = {}
    for name, engine in engines.items():
        timings = measure(name, engine.predict_proba)
        p50[name] = round(float(statistics.median(timings)), 4)
        report[name] |= {"p50_ms": p50[name], "timings_ms": [round(t, 4) for t in timings]}
    chosen = fastest(p50)
    classifier = engines[chosen].classifier
    choice = {
        "requested": "auto", "chosen": chosen, "p50_ms": p50, "candidates": report, "rounds": rounds,
        "threads": threads, "seconds": round(time.perf_counter() - started, 3),
        "rule": "the lowest median latency of single-record predictions among runtimes that passed parity",
    }
    classifier.meta_ = dict(classifier.meta_, runtime_choice=choice)
    excluded = {n: r["excluded"] for n, r in report.items() if "excluded" in r}
    log.warning("runtime auto for %s: chose %s; p50 ms %s%s", model_dir, chosen,
                ", ".join(f"{n} {v:.2f}" for n, v in sorted(p50.items(), key=lambda kv: kv[1])),
                f"; excluded {excluded}" if excluded else "")
    return classifier


def runtime_choice(meta: dict[str, Any]) -> dict[str, Any] | None:
    """What `GET /v1/model` shows: the auto choice (without the raw timings), or None when a runtime was forced."""
    choice = meta.get("runtime_choice")
    if choice is None:
        return None
    candidates = {name: {k: v for k, v in entry.items() if k != "timings_ms"}
                  for name, entry in choice["candidates"].items()}
    return dict(choice, candidates=candidates)

