"""`irp serve`: the model on the live path (DESIGN section 6), as a FastAPI app.

    POST /v1/predict        one interaction record (no label needed) -> {id, probability, image_seeking,
                            suggest_switch, threshold, model_version}
    POST /v1/predict/batch  {"items": [record, ...]} (at most 256) -> {results: [...], model_version, threshold}
    GET  /healthz           the process is up
    GET  /readyz            the model is loaded and answered a warm-up request (503 before)
    GET  /v1/model          version, runtime, operating point, config, limits, policy
    GET  /metrics           Prometheus: requests and errors by endpoint and status, latency histogram,
                            predictions and the share of positive decisions, switch suggestions

Input is never trusted: the body is read with a size cap, parsed, and every record goes through
`irp.schema.validate_record` plus the serving limits below. Any problem is a 4xx whose JSON names the field:
`{"detail": "products[2].color: too long: 900 characters (max 512)", "field": "products[2].color"}`
(400 unreadable JSON, 401 missing or wrong token, 413 body too large, 422 a field breaks the contract).
A 500 would be a bug: it is logged with its traceback and answered without internals.

Concurrency: requests are scored in FastAPI's thread pool, at most `workers` at once (default 2, one per core;
the other threads sleep on a semaphore instead of oversubscribing the CPU). Featurization is serialized by a
lock (the Featurizer's token and value caches are not thread-safe); the network runs outside the lock, so
ONNX Runtime / torch calls of different requests overlap.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from irp.policy import DEFAULT_COOLDOWN_S, SwitchPolicy
from irp.schema import MAX_PRODUCTS, MAX_UTTERANCE_CHARS, RecordError, json_type, validate_record

if TYPE_CHECKING:  # torch and transformers load with the model, not with this module (the CLI checks first)
    from irp.features import Featurizer
    from irp.predict import IRPClassifier

log = logging.getLogger("irp.serve")

TOKEN_ENV = "IRP_SERVE_TOKEN"
LOOPBACK_HOSTS = ("localhost",)


@dataclass(frozen=True)
class Limits:
    """What one request may carry. Utterance and product count come from the data contract (irp.schema)."""

    max_body_bytes: int = 1_000_000
    max_batch: int = 256
    max_utterance_chars: int = MAX_UTTERANCE_CHARS  # checked by validate_record (after strip)
    max_products: int = MAX_PRODUCTS  # checked by validate_record
    max_value_chars: int = 512  # one product attribute value; a list counts as its items plus ", " separators
    max_id_chars: int = 256  # id / session_id (sessions are remembered by the switch policy)


class RequestError(Exception):
    """A client mistake: HTTP `status`, the offending `field`, and what is wrong with it."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message = status, field, message

    def body(self) -> dict[str, str]:
        return {"detail": f"{self.field}: {self.message}", "field": self.field}


# ---- request checking: pure functions ---------------------------------------------------------------------
def parse_json(body: bytes) -> Any:
    """Bytes -> JSON value, or RequestError(400) saying why not.

    >>> parse_json(b'{"a": 1}')
    {'a': 1}
    >>> parse_json(b'{"a": ').body()["field"]
    Traceback (most recent call last):
    ...
    irp.serve.RequestError: body: invalid JSON: Expecting value at line 1 column 7
    """
    if not body.strip():
        raise RequestError(400, "body", "empty; send one JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(400, "body", f"not UTF-8 (byte {e.start})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise RequestError(400, "body", f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except (RecursionError, ValueError) as e:  # nesting too deep; integers beyond Python's digit limit
        raise RequestError(400, "body", f"invalid JSON: {str(e)[:120]}") from None
    if _SURROGATE_ESCAPE.search(body):  # only a "\\udXXX" escape can smuggle a lone surrogate into a str
        where = lone_surrogate_at(value)
        if where is not None:
            raise RequestError(422, where, r"invalid unicode: lone surrogate escape (\ud800-\udfff)")
    return value


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def lone_surrogate_at(value: Any) -> str | None:
    r"""Path of the first string (or key) holding a lone surrogate, which UTF-8 text (and the tokenizer) cannot
    hold; None when there is none. Iterative: JSON nesting may be as deep as the parser allows.

    >>> lone_surrogate_at({"items": [{"utterance": "ok"}, {"utterance": "a\ud800"}]})
    'items[1].utterance'
    >>> lone_surrogate_at({"utterance": "\N{GRINNING FACE}"}) is None
    True
    """
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _has_surrogate(item):
                return path or "body"
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                child_path = f"{path}.{key}" if path else str(key)
                if not key.isascii() and _has_surrogate(key):
                    return path or "body"
                stack.append((child_path, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in reversed(list(enumerate(item))))
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _check_text(field: str, text: str, max_chars: int) -> None:
    if len(text) > max_chars:
        raise RequestError(422, field, f"too long: {len(text)} characters (max {max_chars})")


def check_record(obj: Any, limits: Limits = Limits(), where: str = "") -> dict[str, Any]:
    """Validate one request record: the data contract (irp.schema) plus the serving limits.

    Returns the normalized record; raises RequestError(422) naming the field (prefixed by `where`).

    >>> check_record({"utterance": " show me red dresses ", "session_id": "s1"})["utterance"]
    'show me red dresses'
    >>> check_record({"utterance": "x", "products": [{"title": "t", "color": "r" * 600}]}, where="items[3].")
    Traceback (most recent call last):
    ...
    irp.serve.RequestError: items[3].products[0].color: too long: 600 characters (max 512)
    """
    try:
        record = validate_record(obj)
    except RecordError as e:
        field = (where.rstrip(".") or "body") if e.field == "record" else where + e.field  # the whole record
        raise RequestError(422, field, e.reason) from None
    _check_text(f"{where}intent", record["intent"], limits.max_value_chars)
    for name in ("id", "session_id"):
        if record[name] is not None:
            _check_text(where + name, record[name], limits.max_id_chars)
    for i, turn in enumerate(record["context"]):
        _check_text(f"{where}context[{i}]", turn, MAX_UTTERANCE_CHARS)
    for i, product in enumerate(record["products"]):
        for key, value in product.items():
            if key == "price":
                continue
            field = f"{where}products[{i}].{key}"
            if isinstance(value, list):
                for j, item in enumerate(value):
                    _check_text(f"{field}[{j}]", item, limits.max_value_chars)
                joined = sum(map(len, value)) + 2 * max(len(value) - 1, 0)  # as the featurizer joins it
                if joined > limits.max_value_chars:
                    raise RequestError(
                        422, field, f"too long: {joined} characters joined (max {limits.max_value_chars})"
                    )
            else:
                _check_text(field, value, limits.max_value_chars)
    return record


def check_batch(obj: Any, limits: Limits = Limits()) -> list[dict[str, Any]]:
    """Validate `{"items": [record, ...]}`; errors name the item, e.g. `items[3].utterance`.

    >>> len(check_batch({"items": [{"utterance": "a"}, {"utterance": "b"}]}))
    2
    >>> check_batch({"items": {}})
    Traceback (most recent call last):
    ...
    irp.serve.RequestError: items: must be an array of records, got object
    """
    if type(obj) is not dict:
        raise RequestError(422, "body", f'must be a JSON object {{"items": [...]}}, got {json_type(obj)}')
    items = obj.get("items")
    if type(items) is not list:
        what = "absent" if "items" not in obj else f"got {json_type(items)}"
        raise RequestError(422, "items", f"must be an array of records, {what}")
    if len(items) > limits.max_batch:
        raise RequestError(422, "items", f"too many: {len(items)} (max {limits.max_batch})")
    return [check_record(item, limits, f"items[{i}].") for i, item in enumerate(items)]


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server private to this machine.

    >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.1.2.3")]
    [True, True, True, False, False]
    """
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---- the model behind the endpoints -----------------------------------------------------------------------
def load_classifier(model_dir: str | Path, runtime: str = "auto", threads: int = 1) -> IRPClassifier:
    """IRPClassifier with `threads` intra-op threads for its runtime (ONNX Runtime session, or torch)."""
    from irp.onnx_runtime import load_onnx, resolve_runtime
    from irp.predict import IRPClassifier

    if resolve_runtime(model_dir, runtime) == "torch":
        import torch

        torch.set_num_threads(max(threads, 1))
        return IRPClassifier.load(model_dir, runtime="torch")
    model, featurizer, meta = load_onnx(model_dir, runtime, threads=threads)
    return IRPClassifier(model, featurizer, meta)  # type: ignore[arg-type]  # OnnxModel: same call convention


class Engine:
    """A classifier shared by request threads: featurize under a lock, run the network concurrently.

    The Featurizer memoizes tokenized texts and attribute values; on the live path those caches would grow
    with every new query, so after `renew_after` featurized records, or once it holds `max_values` distinct
    attribute values, the engine starts a fresh Featurizer (~50 ms, under the lock). The value bound is tight
    because Featurizer.collate currently rebuilds its whole value matrix, O(values seen), on every call.
    """

    def __init__(
        self,
        classifier: IRPClassifier,
        model_dir: str | Path | None = None,
        renew_after: int = 50_000,
        max_values: int = 2_048,
        micro_batch: int = 16,
    ) -> None:
        self.classifier = classifier
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.renew_after, self.max_values, self.micro_batch = renew_after, max_values, micro_batch
        self.runtime: str = classifier.meta_.get("runtime", "torch")
        self._featurizer: Featurizer = classifier.featurizer_
        self._featurized = 0
        self._lock = threading.Lock()
        self.ready = False

    @property
    def threshold(self) -> float:
        return self.classifier.threshold_

    @property
    def version(self) -> str:
        return self.classifier.version

    def predict_proba(self, records: Sequence[dict]) -> np.ndarray:
        """P(image-seeking) [N] for validated records. A batch is cut into length-sorted chunks of
        `micro_batch` records: less padding, and activations that stay in the CPU caches."""
        if not records:
            return np.zeros(0, dtype=np.float32)
        with self._lock:
            if self._featurized >= self.renew_after or len(self._featurizer.value_tokens) >= self.max_values:
                from irp.features import Featurizer

                self._featurizer = Featurizer(self._featurizer.tokenizer, self._featurizer.config)
                self._featurized = 0
            self._featurized += len(records)
            features = self._featurizer.featurize(records)
            order = np.argsort(features.lengths, kind="stable")
            chunks = [order[i : i + self.micro_batch] for i in range(0, len(order), self.micro_batch)]
            batches = [self._featurizer.collate(features, index) for index in chunks]
        probs = np.empty(len(records), dtype=np.float64)
        for index, batch in zip(chunks, batches):
            batch.pop("labels")
            probs[index] = 1.0 / (1.0 + np.exp(-self._logits(batch).astype(np.float64)))
        return probs

    def _logits(self, batch: dict[str, Any]) -> np.ndarray:
        model = self.classifier.model_
        if self.runtime == "torch":
            import torch

            with torch.inference_mode():
                return model(**batch)[0].float().numpy()
        return model.logits(batch)  # type: ignore[attr-defined]  # OnnxModel

    def warm_up(self) -> None:
        """One prediction through every stage, so the first real request does not pay for lazy setup."""
        self.predict_proba([validate_record({"utterance": "show me red summer dresses", "intent": "search",
                                             "products": [{"title": "Red Summer Dress", "color": "red"}]})])
        self.ready = True


@dataclass
class ServeSettings:
    limits: Limits = Limits()
    token: str | None = None  # bearer token; None = no auth (the CLI then binds loopback only)
    cooldown_s: float = DEFAULT_COOLDOWN_S
    workers: int = 2  # requests scored at once; more only oversubscribes the cores


# ---- metrics ----------------------------------------------------------------------------------------------
ENDPOINTS = ("/v1/predict", "/v1/predict/batch", "/healthz", "/readyz", "/v1/model", "/metrics", "/docs",
             "/openapi.json")


class Metrics:
    """Prometheus metrics in the app's own registry (several apps may live in one process, e.g. tests)."""

    def __init__(self, engine: Engine) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("irp_http_requests", "HTTP requests by endpoint and status code.",
                                ["endpoint", "status"], registry=self.registry)
        self.errors = Counter("irp_http_errors", "HTTP error responses: client (4xx) or server (5xx).",
                              ["endpoint", "kind"], registry=self.registry)
        self.latency = Histogram(
            "irp_http_request_duration_seconds", "Request latency (body read to response start).", ["endpoint"],
            buckets=(0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.predictions = Counter("irp_predictions", "Records scored, by decision at the operating point.",
                                   ["decision"], registry=self.registry)
        self.positive_share = Gauge("irp_positive_decision_share",
                                    "Share of scored records decided image-seeking since start.",
                                    registry=self.registry)
        self.switches = Counter("irp_switch_suggestions", "Records answered with suggest_switch=true.",
                                registry=self.registry)
        info = Gauge("irp_model_info", "The served model.", ["version", "runtime"], registry=self.registry)
        info.labels(version=engine.version, runtime=engine.runtime).set(1)
        self._lock = threading.Lock()
        self._scored = self._positive = 0

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in ENDPOINTS else "other"  # bounded label values whatever clients request
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint=endpoint, kind="server" if status >= 500 else "client").inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def observe_decisions(self, positive: int, total: int, switches: int) -> None:
        self.predictions.labels(decision="image_seeking").inc(positive)
        self.predictions.labels(decision="not_image_seeking").inc(total - positive)
        self.switches.inc(switches)
        with self._lock:
            self._scored += total
            self._positive += positive
            self.positive_share.set(self._positive / self._scored if self._scored else 0.0)


class _MetricsMiddleware:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware): counts and times every HTTP request."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]], send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(scope.get("path", ""), status, time.perf_counter() - started)


# ---- the app ----------------------------------------------------------------------------------------------
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


def create_app(engine: Engine, settings: ServeSettings | None = None) -> Any:
    """The FastAPI app around a loaded engine (the CLI loads the model before binding the port)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    settings = settings or ServeSettings()
    limits = settings.limits
    policy = SwitchPolicy(cooldown_s=settings.cooldown_s)
    metrics = Metrics(engine)
    computing = threading.BoundedSemaphore(max(settings.workers, 1))  # a thread lock: any event loop may call
    app = FastAPI(
        title="irp: image-seeking intent",
        version=engine.version,
        description="Predicts whether a spoken product query wants to be seen, and whether to offer a screen.",
    )
    app.state.engine, app.state.policy, app.state.metrics = engine, policy, metrics
    bearer = HTTPBearer(auto_error=False)
    token = settings.token.encode() if settings.token else None

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        given = credentials.credentials.encode("utf-8", "surrogateescape") if credentials else b""
        if credentials is None or credentials.scheme.lower() != "bearer" or not hmac.compare_digest(given, token):
            raise RequestError(401, "authorization", "missing or wrong bearer token")

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:  # a bug, never a client mistake
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error", "field": ""}, status_code=500)

    def answer(records: list[dict]) -> list[dict[str, Any]]:
        with computing:  # extra threads wait here, asleep, instead of splitting the cores among themselves
            probs = engine.predict_proba(records)
        threshold, version = engine.threshold, engine.version
        out = []
        for record, p in zip(records, probs):
            seeking = bool(p >= threshold)
            switch = policy.decide(seeking, record["screen_available"], record["session_id"])
            out.append({"id": record["id"], "probability": float(p), "image_seeking": seeking,
                        "suggest_switch": switch, "threshold": threshold, "model_version": version})
        metrics.observe_decisions(sum(r["image_seeking"] for r in out), len(out),
                                  sum(r["suggest_switch"] for r in out))
        return out

    metrics_file = engine.model_dir / "metrics.json" if engine.model_dir else None
    validation_metrics = json.loads(metrics_file.read_text()) if metrics_file and metrics_file.is_file() else None
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
        return JSONResponse({"results": results, "model_version": engine.version, "threshold": engine.threshold})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is up (no auth: for liveness probes)."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """200 once the model answered its warm-up request, else 503 (no auth: for readiness probes)."""
        return JSONResponse({"ready": engine.ready, "model_version": engine.version},
                            status_code=200 if engine.ready else 503)

    @app.get("/v1/model", dependencies=protected)
    async def model_info() -> dict[str, Any]:
        """What is served: version, runtime, operating point, inputs, limits and policy."""
        meta = engine.classifier.meta_
        cfg = meta["config"]
        return {
            "model_version": engine.version,
            "runtime": engine.runtime,
            "threshold": engine.threshold,
            "operating_point": meta["threshold"],
            "backbone": cfg["backbone"],
            "summarizer": cfg["summarizer"],
            "fields": cfg["fields"],
            "validation_metrics": validation_metrics,
            "onnx": {k: meta["onnx"].get(k) for k in ("int8_scheme", "parity")} if meta.get("onnx") else None,
            "limits": asdict(limits),
            "policy": {"cooldown_s": policy.cooldown_s, "rule": "image_seeking and screen_available is not "
                       "false and no offer to the session within the cooldown"},
        }

    @app.get("/metrics", dependencies=protected)
    async def prometheus() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    _document_request_bodies(app)
    return app


# ---- OpenAPI schema: documentation of the contract (validation itself is check_record / check_batch) -------
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


class ErrorOut(BaseModel):
    detail: str = Field(description="'<field>: <what is wrong>'")
    field: str = Field(description="the offending field, e.g. products[2].color, items[5].utterance, body")


_REQUEST_MODELS: dict[str, type[BaseModel]] = {"RecordIn": RecordIn, "BatchIn": BatchIn}


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
