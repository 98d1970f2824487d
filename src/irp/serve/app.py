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
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from irp.policy import DEFAULT_COOLDOWN_S, SwitchPolicy
from irp.schema import MAX_PRODUCTS, MAX_UTTERANCE_CHARS
from irp.serve.checks import (
    FEEDBACK_EVENTS,
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
from irp.serve.feedback import LivePrecision, OfferMemory
from irp.serve.metrics import Metrics, MetricsMiddleware
from irp.serve.reload import ModelSlot, ReloadError
from irp.serve.runtime_choice import runtime_choice

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
    offer_memory: int = 200_000  # recent offers remembered to attribute their answers


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


def create_app(engine: Engine, settings: ServeSettings | None = None, decision_log: DecisionLog | None = None) -> Any:
    """The FastAPI app around a loaded engine (the CLI loads the model before binding the port).

    `decision_log`: where decisions and feedback go (None: not logged); the app closes it on shutdown."""
    import threading

    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    settings = settings or ServeSettings()
    limits = settings.limits
    policy = SwitchPolicy(cooldown_s=settings.cooldown_s, explore_rate=settings.explore_rate, seed=settings.seed)
    policy_settings = policy.settings
    live = LivePrecision(window_s=settings.live_window_s)  # answers to offers: accepted / answers
    live_tap = LivePrecision(window_s=settings.live_window_s)  # taps after offers: tapped / answers
    offers = OfferMemory(settings.offer_memory)
    metrics = Metrics(engine, live, decision_log, live_tap)
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

    app = FastAPI(
        title="irp: image-seeking intent",
        version=engine.version,
        description="Predicts whether a spoken product query wants to be seen, and whether to offer a screen.",
        lifespan=lifespan,
    )
    app.state.engine, app.state.slot, app.state.policy, app.state.metrics = engine, slot, policy, metrics
    app.state.decision_log, app.state.live = decision_log, live
    bearer = HTTPBearer(auto_error=False)
    token = settings.token.encode() if settings.token else None

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        given = credentials.credentials.encode("utf-8", "surrogateescape") if credentials else b""
        if credentials is None or credentials.scheme.lower() != "bearer" or not hmac.compare_digest(given, token):
            raise RequestError(401, "authorization", "missing or wrong bearer token")

    def require_admin(request: Request, _: None = Depends(require_token)) -> None:
        """Admin calls: the token when the server has one; without a token, only from this machine."""
        if token is None:
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
        with computing:  # extra threads wait here, asleep, instead of splitting the cores among themselves
            probs = served.predict_proba(records)
        threshold, version, now = served.threshold, served.version, time.time()
        out, events, offered = [], [], []
        explored = 0
        for record, p in zip(records, probs):
            seeking = bool(p >= threshold)
            decision = policy.decide(seeking, record["screen_available"], record["session_id"])
            result = {"id": record["id"], "probability": float(p), "image_seeking": seeking,
                      "suggest_switch": decision.offer, "threshold": threshold, "model_version": version}
            out.append(result)
            if decision.offer:
                offered.append((record["id"], version))
                explored += decision.explored
            if decision_log is not None:
                events.append(decision_event(record, result, decision, policy_settings, now))
        if events:
            decision_log.submit("decision", events)  # type: ignore[union-attr]  # never blocks; drops when full
        offers.remember(offered)
        metrics.observe_decisions(sum(r["image_seeking"] for r in out), len(out), len(offered), explored)
        return out

    errors = {code: {"model": ErrorOut} for code in (400, 401, 413, 422)}
    protected = [Depends(require_token)]

    @app.post("/v1/predict", response_model=PredictionOut, responses=errors, dependencies=protected,
              openapi_extra=_body("RecordIn"))
    async def predict(request: Request) -> JSONResponse:
        """Score one interaction record."""
        record = check_record(parse_json(await read_body(request, limits.max_body_bytes)), limits)
        return JSONResponse((await run_in_threadpool(answer, [record]))[0])

    @app.post("/v1/predict/batch", response_model=BatchOut, responses=errors, dependencies=protected,
              openapi_extra=_body("BatchIn"))
    async def predict_batch(request: Request) -> JSONResponse:
        """Score up to 256 records in one call (switch offers are decided in item order)."""
        records = check_batch(parse_json(await read_body(request, limits.max_body_bytes)), limits)
        results = await run_in_threadpool(answer, records)
        version = results[0]["model_version"] if results else slot.engine.version
        threshold = results[0]["threshold"] if results else slot.engine.threshold
        return JSONResponse({"results": results, "model_version": version, "threshold": threshold})

    @app.post("/v1/feedback", response_model=FeedbackOut, responses=errors, dependencies=protected,
              openapi_extra=_body("FeedbackBatchIn"))
    async def feedback(request: Request) -> JSONResponse:
        """What the user did after an answer: one event `{id, event, ts?}` or `{"items": [...]}` (<= 256)."""
        now = time.time()
        items = check_feedback(parse_json(await read_body(request, limits.max_body_bytes)), limits, now)
        logged = decision_log.submit("feedback", [feedback_event(i, now) for i in items]) if decision_log else 0
        for item in items:
            event = item["event"]
            metrics.feedback.labels(event=event).inc()
            kind = "offer" if event in ("offer_accepted", "offer_declined") else "tap"
            version = offers.answer(item["id"], kind)
            if version == "repeat":  # a retried answer: logged (the join de-duplicates), counted once here
                continue
            if kind == "offer":
                if version is None:
                    metrics.unmatched.inc()
                live.add(event == "offer_accepted", version)
            elif version is not None:  # a tap or no tap after one of this server's offers
                live_tap.add(event == "carousel_tap", version)
        return JSONResponse({"accepted": len(items), "logged": logged, "model_version": slot.engine.version})

    @app.post("/v1/admin/reload", dependencies=[Depends(require_admin)],
              responses={code: {"model": ErrorOut} for code in (400, 401, 403, 409, 413, 422)},
              openapi_extra=_body("ReloadIn"))
    async def reload_model(request: Request) -> JSONResponse:
        """Swap the served model with no failed request: load DIR, warm up, ONNX parity, swap atomically.
        `{}` re-reads the folder being served. 409 with the reason when the folder fails: the old model stays."""
        body = await read_body(request, limits.max_body_bytes)
        model_dir = check_reload(parse_json(body) if body.strip() else {})
        try:
            result = await run_in_threadpool(slot.reload, model_dir)
        except ReloadError as e:
            raise RequestError(409, "model", f"{e}; still serving {slot.engine.version}") from None
        return JSONResponse(result)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up (no auth: for liveness probes)."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """200 once the model answered its warm-up request, else 503 (no auth: for readiness probes)."""
        served = slot.engine
        return JSONResponse({"ready": served.ready, "model_version": served.version},
                            status_code=200 if served.ready else 503)

    @app.get("/v1/model", dependencies=protected)
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
            "model_dir": str(served.model_dir) if served.model_dir else None,
            "runtime": served.runtime,
            "runtime_choice": runtime_choice(meta),  # --runtime auto: timings and parity of every candidate
            "threshold": served.threshold,
            "operating_point": meta["threshold"],
            "promise": promise,
            "promised_precision": served.promised_precision,
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

    @app.get("/metrics", dependencies=protected)
    async def prometheus() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _document_request_bodies(app)
    return app


# ---- OpenAPI schema: documentation of the contract (validation itself is irp.serve.checks) -----------------
class ProductIn(BaseModel):
    """A retrieved product: `title`, optional `price`, and any attributes (string or list of strings)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, str | list[str] | None] = Field(init=False)
    title: str = Field(min_length=1, max_length=512)
    price: float | None = Field(default=None, ge=0)


class RecordIn(BaseModel):
    """One interaction record (DESIGN section 2); `label` and `true_intent` are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    utterance: str = Field(min_length=1, max_length=MAX_UTTERANCE_CHARS)
    id: str | int | None = Field(default=None, description="echoed back; derived from the content if absent")
    intent: str | None = Field(default=None, max_length=512, description='NLU intent label ("unknown" if absent)')
    context: list[str] | None = Field(default=None, description="earlier user turns, oldest first")
    products: list[ProductIn] | None = Field(default=None, max_length=MAX_PRODUCTS, description="top-k, in rank order")
    screen_available: bool | None = Field(default=None, description="false: never suggest a switch")
    session_id: str | int | None = Field(default=None, description="scopes the switch-offer cooldown")
    label: int | None = Field(default=None, ge=0, le=1)
    true_intent: int | None = Field(default=None, ge=0, le=1)


class BatchIn(BaseModel):
    items: list[RecordIn] = Field(max_length=256)


class FeedbackIn(BaseModel):
    """What the user did after the answer with this id."""

    id: str | int = Field(description="the id that /v1/predict answered", max_length=256)
    event: str = Field(json_schema_extra={"enum": list(FEEDBACK_EVENTS)})
    ts: float | None = Field(default=None, ge=0, description="unix seconds when it happened (default: received)")


class FeedbackBatchIn(BaseModel):
    """One event, or a batch `{"items": [event, ...]}` (at most 256)."""

    items: list[FeedbackIn] = Field(max_length=256)


class ReloadIn(BaseModel):
    model: str | None = Field(default=None, description="artifact folder; absent: re-read the served folder")


class PredictionOut(BaseModel):
    id: str
    probability: float
    image_seeking: bool
    suggest_switch: bool
    threshold: float
    model_version: str


class BatchOut(BaseModel):
    results: list[PredictionOut]
    model_version: str
    threshold: float


class FeedbackOut(BaseModel):
    accepted: int = Field(description="events validated and counted")
    logged: int = Field(description="events queued for the decision log (0 without --log-dir)")
    model_version: str


class ErrorOut(BaseModel):
    detail: str = Field(description="'<field>: <what is wrong>'")
    field: str = Field(description="the offending field, e.g. products[2].color, items[5].utterance, body")


_REQUEST_MODELS: dict[str, type[BaseModel]] = {"RecordIn": RecordIn, "BatchIn": BatchIn, "FeedbackIn": FeedbackIn,
                                               "FeedbackBatchIn": FeedbackBatchIn, "ReloadIn": ReloadIn}


def _body(name: str) -> dict[str, Any]:
    """openapi_extra for an endpoint that reads its JSON body itself."""
    schema = {"$ref": f"#/components/schemas/{name}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _document_request_bodies(app: Any) -> None:
    """Add the request models to the generated OpenAPI components (the endpoints refer to them by name)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, model in _REQUEST_MODELS.items():
                definition = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(definition.pop("$defs", {}))
                components[name] = definition
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi

