"""The FastAPI app: routes, auth and error handling over an Engine slot, a policy and a decision log.

Input is never trusted: the body is read with a size cap, parsed, and checked by irp.serve.checks. Any
problem is a 4xx whose JSON names the field: `{"detail": "products[2].color: too long: ...", "field":
"products[2].color"}` (400 unreadable JSON, 401 missing or wrong token, 403 admin call from elsewhere than
loopback on a tokenless server, 409 a reload that did not happen, 413 body too large, 422 a field breaks
the contract). A 500 would be a bug: it is logged with its traceback and answered without internals.

Concurrency: requests are scored in FastAPI's thread pool, at most `workers` at once (default 2, one per
core; the other threads sleep on a semaphore instead of oversubscribing the CPU). The decision log is
written by its own thread; a request only appends to its queue.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from irp.policy import DEFAULT_COOLDOWN_S, SwitchPolicy
from irp.serve.checks import (
    Limits,
    RequestError,
    check_batch,
    check_feedback,
    check_record,
    check_reload,
    is_loopback,
    parse_json,
)
from irp.serve.decision_log import DecisionLog, decision_event, feedback_event
from irp.serve.engine import Engine
from irp.serve.feedback import LivePrecision
from irp.serve.metrics import Metrics, MetricsMiddleware
from irp.serve.openapi import (
    BatchOut,
    FeedbackOut,
    PredictionOut,
    ReadyOut,
    error_responses,
    install_openapi,
    request_body,
)
from irp.serve.reload import ModelSlot, ReloadError
from irp.serve.runtime_choice import runtime_choice
from irp.serve.state import Ask, MemoryState, SharedState, StateError, default_replica_id

log = logging.getLogger("irp.serve")


@dataclass
class ServeSettings:
    limits: Limits = Limits()
    token: str | None = None  # bearer token; None = no auth (the CLI then binds loopback only)
    cooldown_s: float = DEFAULT_COOLDOWN_S
    workers: int = 2  # requests scored at once; more only oversubscribes the cores
    explore_rate: float = 0.0  # share of eligible records whose offer is a fair coin (irp.policy)
    seed: int | None = None  # exploration coins: reproducible in decision order
    runtime: str = "auto"  # for reloads: the runtime the server was started with
    threads: int = 1  # intra-op threads of a reloaded model
    live_window_s: float = 3600.0  # sliding window of the live precision of offers
    offer_memory: int = 200_000  # recent offers remembered to attribute their answers (--state memory)
    replica_id: str = ""  # names this replica in answers, metrics and log files ("": hostname + random suffix)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or RequestError(413) beyond `limit` bytes. An oversized body is still drained (up to
    8x the limit) so that the connection closes cleanly and the client reads the 413 instead of a reset."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or len(declared) > 18):
        raise RequestError(400, "content-length", "not a byte count")
    size, chunks, too_large = 0, [], declared is not None and int(declared) > limit
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            too_large = True
            chunks.clear()
            if size > 8 * limit:
                break
        elif not too_large:
            chunks.append(chunk)
    if too_large:
        raise RequestError(413, "body", f"too large: {max(size, int(declared or 0))} bytes (max {limit})")
    return b"".join(chunks)


def create_app(engine: Engine, settings: ServeSettings | None = None, decision_log: DecisionLog | None = None,
               state: SharedState | None = None) -> Any:
    """The FastAPI app around a loaded engine (the CLI loads the model before binding the port).

    `decision_log`: where decisions and feedback go (None: not logged); the app closes it on shutdown.
    `state`: what the replicas share (irp.serve.state; None: this process only)."""
    import threading

    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    settings = settings or ServeSettings()
    limits = settings.limits
    policy = SwitchPolicy(cooldown_s=settings.cooldown_s, explore_rate=settings.explore_rate, seed=settings.seed)
    policy_settings = policy.settings
    live = LivePrecision(window_s=settings.live_window_s)  # answers to offers: accepted / answers
    live_tap = LivePrecision(window_s=settings.live_window_s)  # taps after offers: tapped / answers
    state = state if state is not None else MemoryState(settings.offer_memory)
    replica_id = settings.replica_id or default_replica_id()
    state.replica_id = replica_id  # type: ignore[attr-defined]  # names this replica's counts in a shared store
    metrics = Metrics(engine, decision_log, state, replica_id)
    def swapped(old: Engine, new: Engine) -> None:
        app.state.engine = new
        metrics.model_swapped(new)

    slot = ModelSlot(engine, settings.runtime, settings.threads, on_swap=swapped,
                     on_failure=lambda reason: metrics.reloads.labels(result="failed").inc())
    computing = threading.BoundedSemaphore(max(settings.workers, 1))  # a thread lock: any event loop may call

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        yield
        if decision_log is not None:  # after the last request was answered (uvicorn's graceful shutdown)
            stats = await run_in_threadpool(decision_log.close)
            log.warning("decision log closed: %s", {k: stats[k] for k in ("written", "dropped")})
        state.close()

    app = FastAPI(
        title="irp: image-seeking intent",
        version=engine.version,
        description="Predicts whether a spoken product query wants to be seen, and whether to offer a screen.",
        lifespan=lifespan,
    )
    app.state.engine, app.state.slot, app.state.policy, app.state.metrics = engine, slot, policy, metrics
    app.state.decision_log, app.state.live, app.state.shared, app.state.replica_id = decision_log, live, state, replica_id
    bearer = HTTPBearer(auto_error=False)
    token = settings.token.encode() if settings.token else None

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        given = credentials.credentials.encode("utf-8", "surrogateescape") if credentials else b""
        if credentials is None or credentials.scheme.lower() != "bearer" or not hmac.compare_digest(given, token):
            raise RequestError(401, "authorization", "missing or wrong bearer token")

    def require_loopback(request: Request) -> None:
        """Admin calls on a server without a token: only from this machine."""
        host = request.client.host if request.client else ""
        if not is_loopback(host):
            raise RequestError(403, "client", "admin endpoints of a server without a token answer loopback "
                               "clients only; start it with --token to reload from elsewhere")

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:  # a bug, never a client mistake
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error", "field": ""}, status_code=500)

    def answer(records: list[dict]) -> list[dict[str, Any]]:
        served = slot.engine  # read once: a reload meanwhile does not touch this request
        prefetched = state.prefetch([r["session_id"] for r in records if r["screen_available"] is not False],
                                    policy.cooldown_s)  # the cooldowns are read while the model scores
        with computing:  # extra threads wait here, asleep, instead of splitting the cores among themselves
            probs = served.predict_proba(records)
        threshold, version, now = served.threshold, served.version, time.time()
        asks = [Ask(r["id"], bool(p >= threshold), r["screen_available"], r["session_id"]) for r, p in zip(records, probs)]
        decisions = state.decide(policy, asks, version, prefetched)  # cooldown and offer records (shared with --state)
        out, events = [], []
        for record, ask, p, decision in zip(records, asks, probs, decisions):
            result = {"id": record["id"], "probability": float(p), "image_seeking": ask.image_seeking,
                      "suggest_switch": decision.offer, "threshold": threshold, "model_version": version,
                      "replica_id": replica_id}
            out.append(result)
            if decision_log is not None:
                events.append(decision_event(record, result, decision, policy_settings, now))
        if events:
            decision_log.submit("decision", events)  # type: ignore[union-attr]  # never blocks; drops when full
        metrics.observe_decisions(sum(a.image_seeking for a in asks), len(out), sum(d.offer for d in decisions),
                                  sum(d.offer and d.explored for d in decisions), version)
        return out

    # The document describes this server: bearer auth and its 401 only when it has a token (a tokenless server
    # answers admin calls from loopback only: 403).
    auth = (401,) if token else ()
    protected = [Depends(require_token)] if token else []
    admin = protected if token else [Depends(require_loopback)]
    errors = error_responses(400, 413, 422, *auth)

    @app.post("/v1/predict", response_model=PredictionOut, responses=errors, dependencies=protected,
              openapi_extra=request_body("RecordIn"))
    async def predict(request: Request) -> JSONResponse:
        """Score one interaction record."""
        record = check_record(parse_json(await read_body(request, limits.max_body_bytes)), limits)
        return JSONResponse((await run_in_threadpool(answer, [record]))[0])

    @app.post("/v1/predict/batch", response_model=BatchOut, responses=errors, dependencies=protected,
              openapi_extra=request_body("BatchIn"))
    async def predict_batch(request: Request) -> JSONResponse:
        """Score up to 256 records in one call (switch offers are decided in item order)."""
        records = check_batch(parse_json(await read_body(request, limits.max_body_bytes)), limits)
        results = await run_in_threadpool(answer, records)
        version = results[0]["model_version"] if results else slot.engine.version
        threshold = results[0]["threshold"] if results else slot.engine.threshold
        return JSONResponse({"results": results, "model_version": version, "threshold": threshold,
                             "replica_id": replica_id})

    @app.post("/v1/feedback", response_model=FeedbackOut, responses=errors, dependencies=protected,
              openapi_extra=request_body("FeedbackBodyIn"))
    async def feedback(request: Request) -> JSONResponse:
        """What the user did after an answer: one event `{id, event, ts?}` or `{"items": [...]}` (<= 256)."""
        now = time.time()
        items = check_feedback(parse_json(await read_body(request, limits.max_body_bytes)), limits, now)
        logged = decision_log.submit("feedback", [feedback_event(i, now) for i in items]) if decision_log else 0
        await run_in_threadpool(count_feedback, items)
        return JSONResponse({"accepted": len(items), "logged": logged, "model_version": slot.engine.version,
                             "replica_id": replica_id})

    unattributed: deque[dict[str, Any]] = deque(maxlen=settings.offer_memory)  # feedback met while the state was down
    waiting_lock = threading.Lock()

    def count_feedback(items: list[dict[str, Any]]) -> None:
        """Attribute each answer to the offer it answers (any replica's, through the shared state) and count its
        first answer of each kind. While the state is down the events wait (bounded) and are counted with the next
        feedback once it is back: counting is exactly-once in the store, so a late count is still exact."""
        for item in items:
            metrics.feedback.labels(event=item["event"]).inc()
        items = [{**item, "token": secrets.token_hex(8)} for item in items]  # a retry keeps it: counted once
        if unattributed:
            with waiting_lock:  # at most 1,024 waiting events per call: one bounded script call
                items = [unattributed.popleft() for _ in range(min(len(unattributed), 1024))] + items
        kinds = ["offer" if i["event"] in ("offer_accepted", "offer_declined") else "tap" for i in items]
        try:
            attributed = state.answer([(i["id"], kind, i["token"], i["event"]) for i, kind in zip(items, kinds)])
        except StateError:
            unattributed.extend(items)
            return
        for item, kind, (version, first) in zip(items, kinds, attributed):
            if version is None:  # not an offer the fleet remembers: no model to hold it against
                if kind == "offer":
                    metrics.unmatched.inc()
            elif first:  # a retried answer is logged (the join de-duplicates) and counted once here
                metrics.answers.add(version, item["event"])
                (live if kind == "offer" else live_tap).add(item["event"] in ("offer_accepted", "carousel_tap"),
                                                            version)

    @app.post("/v1/admin/reload", dependencies=admin, responses=error_responses(400, 409, 413, 422, *(auth or (403,))),
              openapi_extra=request_body("ReloadIn"))
    async def reload_model(request: Request) -> JSONResponse:
        """Swap the served model with no failed request: load DIR, warm up, ONNX parity, swap atomically.
        `{}` re-reads the folder being served. 409 with the reason when the folder fails: the old model stays."""
        model_dir = check_reload(parse_json(await read_body(request, limits.max_body_bytes)))
        try:
            result = await run_in_threadpool(slot.reload, model_dir)
        except ReloadError as e:
            raise RequestError(409, "model", f"{e}; still serving {slot.engine.version}") from None
        return JSONResponse(result)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up (no auth: for liveness probes)."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut, "description": "not ready"}})
    async def readyz() -> JSONResponse:
        """200 once the model answered its warm-up request, else 503 (no auth: for readiness probes)."""
        served = slot.engine
        # The shared state does not decide readiness: without it a replica still answers predictions (with no
        # offers), and a balancer that took every replica out when the store is down would answer nothing.
        return JSONResponse({"ready": served.ready, "model_version": served.version, "replica_id": replica_id,
                             "state": {**state.status(), "feedback_waiting": len(unattributed)}},
                            status_code=200 if served.ready else 503)

    @app.get("/v1/model", dependencies=protected, responses=error_responses(*auth))
    async def model_info() -> dict[str, Any]:
        """What is served: version, runtime, operating point and its promise next to the live precision of
        offers, inputs, limits, policy, decision log and reloads."""
        served = slot.engine
        meta = served.classifier.meta_
        cfg = meta["config"]
        promise = served.promise
        live_now, live_tap_now = live.snapshot(), live_tap.snapshot()
        return {
            "model_version": served.version,
            "replica_id": replica_id,
            "state": {**state.status(), "feedback_waiting": len(unattributed)},
            "model_dir": str(served.model_dir) if served.model_dir else None,
            "runtime": served.runtime,
            "runtime_choice": runtime_choice(meta),  # --runtime auto: timings and parity of every candidate
            "threshold": served.threshold,
            "operating_point": meta["threshold"],
            "promise": promise,
            "promised_precision": served.promised_precision,
            "live_scope": "this replica's view: the answers it received, over its sliding window; fleet-wide "
                          "live precision is a Prometheus recording rule (deploy/prometheus/rules.yml)",
            "counts": {"offers": {v: c["offers"] for v, c in metrics.offers.totals().items()},
                       "answers": metrics.answers.totals()},
            "live_precision": live_now,
            "live_precision_current_model": live_now["by_model_version"].get(served.version),
            "live_tap_precision": live_tap_now,
            "live_tap_precision_current_model": live_tap_now["by_model_version"].get(served.version),
            "backbone": cfg["backbone"],
            "summarizer": cfg["summarizer"],
            "fields": cfg["fields"],
            "validation_metrics": served.validation_metrics,
            "onnx": {k: meta["onnx"].get(k) for k in ("int8_scheme", "parity")} if meta.get("onnx") else None,
            "limits": asdict(limits),
            "policy": {**policy_settings, "rule": "image_seeking and screen_available is not false and no offer "
                       "to the session within the cooldown; with explore_rate E, an eligible record's offer is a "
                       "fair coin with probability E", "seed": settings.seed},
            "decision_log": decision_log.stats() if decision_log is not None else None,
            "reloads": slot.history,
        }

    @app.get("/metrics", dependencies=protected, response_class=PlainTextResponse, responses=error_responses(*auth))
    async def prometheus() -> Response:
        """Prometheus text format."""
        # In a thread: with --state redis the counts are read from the store (one round trip, <= 50 ms).
        return Response(await run_in_threadpool(generate_latest, metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(MetricsMiddleware, metrics=metrics)
    install_openapi(app, limits)
    return app
