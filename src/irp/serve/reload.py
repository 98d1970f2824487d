"""Swap the served model with no failed request: `POST /v1/admin/reload {"model": DIR}` and SIGHUP.

A reload builds a complete new Engine next to the serving one: load the artifact, warm it up (every lazy
stage runs once), and when it will run on ONNX Runtime, check its parity against its own torch weights on a
fixed set of probe records (the tolerances of `irp export-onnx`). Only then is it swapped in, by one
attribute assignment. A request reads the slot once, when it starts scoring, so requests in flight finish
on the model they started with, and every answer names the `model_version` that produced it. Any failure
(missing folder, broken config, stale or failing ONNX export) leaves the old model serving and is reported
(HTTP 409 with the reason). One reload runs at a time; a second one meanwhile gets 409 at once.

Memory: both models are resident during a reload; the old one is freed when its last request finishes.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from irp.schema import validate_record
from irp.serve.engine import Engine

log = logging.getLogger("irp.serve.reload")

# Probe records for the parity check: varied lengths, lists, unicode, no products.
PROBES = [
    {"utterance": "show me red summer dresses", "intent": "search",
     "products": [{"title": "Red Summer Dress", "brand": "acme", "color": ["red", "white"], "category": "dress"}]},
    {"utterance": "reorder aa batteries", "intent": "reorder",
     "products": [{"title": "AA Batteries 24 pack", "brand": "zed", "category": "batteries", "price": 12.5}] * 3},
    {"utterance": "what does a mid century sofa look like", "intent": "product_question", "context": ["hi"],
     "products": [{"title": f"Velvet Sofa {i}", "color": "grey", "style": ["modern", "mid century"]}
                  for i in range(5)]},
    {"utterance": "add detergent to my cart", "intent": "add_to_cart"},
    {"utterance": "montre-moi des chaussures de course vert forêt ✨", "intent": "unknown",
     "products": [{"title": "Chaussure de course", "color": "vert forêt"}]},
    {"utterance": "deals on table lamps " * 8, "intent": "deals",
     "products": [{"title": "Brass Table Lamp " * 6, "material": "brass"}] * 8},
]


class ReloadError(Exception):
    """A reload that did not happen; the old model keeps serving. The message is the reason."""


class ModelSlot:
    """The engine being served. `engine` is read once per request; `reload` replaces it atomically."""

    def __init__(self, engine: Engine, runtime: str = "auto", threads: int = 1,
                 on_swap: Callable[[Engine, Engine], None] | None = None,
                 on_failure: Callable[[str], None] | None = None) -> None:
        self.engine = engine
        self.runtime, self.threads = runtime, threads
        self.on_swap, self.on_failure = on_swap, on_failure
        self._reloading = threading.Lock()
        self.history: list[dict[str, Any]] = []

    def reload(self, model_dir: str | Path | None = None, check_parity: bool = True) -> dict[str, Any]:
        """Load, warm up, check parity, swap; returns what happened, or raises ReloadError (nothing changed).

        `model_dir` None re-reads the folder being served (SIGHUP)."""
        if not self._reloading.acquire(blocking=False):
            raise ReloadError("another reload is in progress; try again when it finishes")
        try:
            return self._reload(model_dir, check_parity)
        except ReloadError as e:
            if self.on_failure is not None:
                self.on_failure(str(e))
            raise
        finally:
            self._reloading.release()

    def _reload(self, model_dir: str | Path | None, check_parity: bool) -> dict[str, Any]:
        old = self.engine
        if model_dir is None:
            if old.model_dir is None:
                raise ReloadError("the served model was not loaded from a folder; name one")
            model_dir = old.model_dir
        model_dir = Path(model_dir)
        started = time.perf_counter()
        try:
            is_dir = model_dir.is_dir()
        except (OSError, ValueError) as e:  # a name too long, an unreadable parent
            raise ReloadError(f"{model_dir}: cannot read: {e}") from None
        if not is_dir:
            raise ReloadError(f"{model_dir}: not a folder")
        try:
            new = Engine.load(model_dir, self.runtime, self.threads, renew_after=old.renew_after,
                              max_values=old.max_values, micro_batch=old.micro_batch)
        except Exception as e:  # noqa: BLE001  # whatever a broken folder raises, the old model keeps serving
            raise ReloadError(f"{model_dir}: cannot load: {type(e).__name__}: {str(e)[:500]}") from None
        loaded = time.perf_counter()
        parity = onnx_parity(new, model_dir) if check_parity else None
        if parity is not None and not parity["passed"]:
            raise ReloadError(f"{model_dir}: ONNX parity failed: {parity['reason']}")
        self.engine = new  # the swap: one reference assignment; requests in flight keep `old`
        if self.on_swap is not None:
            self.on_swap(old, new)
        result = {
            "model_version": new.version, "previous_model_version": old.version, "model_dir": str(model_dir),
            "runtime": new.runtime, "threshold": new.threshold, "parity": parity,
            "load_seconds": round(loaded - started, 3), "seconds": round(time.perf_counter() - started, 3),
        }
        self.history.append({"ts": time.time(), **{k: result[k] for k in ("model_version", "model_dir")}})
        del self.history[:-20]
        log.warning("reloaded %s: %s -> %s in %.1f s", model_dir, old.version, new.version, result["seconds"])
        return result


def onnx_parity(engine: Engine, model_dir: Path, reference: np.ndarray | None = None) -> dict[str, Any] | None:
    """For an engine on ONNX Runtime: max |Δprobability| against the artifact's torch weights on PROBES (their
    probabilities [len(PROBES)] when `reference` is given), and the parity recorded at export time. None for a
    torch engine (nothing to compare)."""
    if not engine.runtime.startswith("onnx"):
        return None
    from irp.predict import IRPClassifier

    fp32 = engine.runtime == "onnx-fp32"
    tolerance = 1e-4 if fp32 else 0.02  # irp.export FP32_TOLERANCE / INT8_TOLERANCE
    recorded = (engine.classifier.meta_.get("onnx") or {}).get("parity") or {}
    entry = recorded.get("fp32" if fp32 else "int8") or {}
    if entry and entry.get("passed") is False:
        return {"runtime": engine.runtime, "passed": False, "tolerance": tolerance,
                "reason": f"the recorded parity check failed (exported with --force, or marked by irp threshold): "
                          f"{entry}"[:500]}
    try:
        records = [validate_record(r) for r in PROBES]
        if reference is None:
            reference = IRPClassifier.load(model_dir, runtime="torch").predict_proba(records)
        reference = np.asarray(reference, dtype=np.float64)
        got = engine.predict_proba(records)
    except Exception as e:  # noqa: BLE001
        return {"runtime": engine.runtime, "passed": False, "tolerance": tolerance,
                "reason": f"cannot score the probes: {type(e).__name__}: {str(e)[:300]}"}
    worst = float(np.max(np.abs(got - reference)))
    passed = bool(worst <= tolerance)
    return {"runtime": engine.runtime, "passed": passed, "max_abs_diff": worst, "tolerance": tolerance,
            "records": len(records),
            "reason": None if passed else f"max |Δprobability| {worst:.3g} > {tolerance:g} on {len(records)} probes"}


def install_sighup(slot: ModelSlot) -> bool:
    """SIGHUP re-reads the served folder (in a thread: the signal handler itself returns at once). Only from
    the main thread of a platform with SIGHUP; returns whether the handler was installed."""
    if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
        return False

    def reload_in_background() -> None:
        try:
            slot.reload(None)
        except ReloadError as e:
            log.error("SIGHUP reload failed, the old model keeps serving: %s", e)

    def handler(signum: int, frame: Any) -> None:
        threading.Thread(target=reload_in_background, name="irp-sighup-reload", daemon=True).start()

    signal.signal(signal.SIGHUP, handler)
    return True
