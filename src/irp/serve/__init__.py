"""`irp serve`: the model on the live path (DESIGN section 6), as a FastAPI app, and the loop around it.

    POST /v1/predict        one interaction record (no label needed) -> {id, probability, image_seeking,
                            suggest_switch, threshold, model_version}
    POST /v1/predict/batch  {"items": [record, ...]} (at most 256) -> {results: [...], model_version, threshold}
    POST /v1/feedback       {id, event, ts?} or {"items": [...]}: what the user did (offer_accepted,
                            offer_declined, carousel_tap, no_tap) -> {accepted, logged, model_version}
    POST /v1/admin/reload   {"model": DIR} (or {} for the served folder; an empty body is a 400): swap models with no failed request
    GET  /healthz, /readyz  liveness, readiness (the model answered a warm-up request)
    GET  /v1/model          version, runtime, operating point and its promise next to the live precision, ...
    GET  /metrics           Prometheus (irp.serve.metrics)

The package, in reading order:

    checks.py        request checking: bytes and JSON -> validated records, or a 4xx naming the field
    engine.py        Engine: one loaded classifier scored by many request threads
    app.py           create_app: routes, auth, errors, and `answer` (score -> policy -> decision log)
    decision_log.py  DecisionLog: bounded queue, writer thread, rotating complete-or-absent Parquet files (journaled)
    feedback.py      live precision of offers over a sliding window (Wilson interval), offer memory
    reload.py        ModelSlot: load, warm up, ONNX parity, atomic swap; SIGHUP
    state.py         what replicas share (--state memory | redis://): session cooldown, offer records
    metrics.py       Prometheus metrics and the request middleware
    openapi.py       the OpenAPI document: request schemas written from checks.py's rules, response models

File layout of the decision log and the serving-to-retraining loop: docs/serving.md, docs/loop.md.
"""

from irp.serve.app import ServeSettings, create_app, read_body
from irp.serve.checks import (
    FEEDBACK_EVENTS,
    TOKEN_ENV,
    Limits,
    RequestError,
    check_batch,
    check_feedback,
    check_record,
    check_reload,
    is_loopback,
    parse_json,
)
from irp.serve.decision_log import DecisionLog, LogDirError, check_log_dir, recover_orphans
from irp.serve.engine import Engine, load_classifier
from irp.serve.feedback import LivePrecision, wilson_interval
from irp.serve.metrics import Metrics
from irp.serve.reload import ModelSlot, ReloadError, install_sighup
from irp.serve.state import MemoryState, RedisState, SharedState, StateError, open_state, parse_state

__all__ = [
    "FEEDBACK_EVENTS", "TOKEN_ENV", "DecisionLog", "Engine", "Limits", "LivePrecision", "LogDirError",
    "MemoryState", "Metrics", "ModelSlot", "RedisState", "ReloadError", "RequestError", "ServeSettings", "SharedState",
    "StateError", "open_state", "parse_state", "check_batch", "check_feedback", "check_log_dir",
    "check_record", "check_reload", "create_app", "install_sighup", "is_loopback", "load_classifier", "parse_json",
    "read_body", "recover_orphans", "wilson_interval",
]
