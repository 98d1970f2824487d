"""Prometheus metrics of the service, in the app's own registry (several apps may live in one process).

    irp_http_requests_total{endpoint,status}, irp_http_errors_total{endpoint,kind}, irp_http_request_duration_seconds
    irp_predictions_total{decision}, irp_positive_decision_share, irp_switch_suggestions_total (offers made),
    irp_offers_explored_total                                       offers decided by the exploration coin
    irp_feedback_events_total{event}, irp_feedback_unmatched_answers_total
    irp_live_precision, irp_live_precision_lower, irp_live_precision_upper, irp_live_precision_answers
                                                                    accepted / answered offers (sliding window,
                                                                    Wilson 95 % interval)
    irp_live_tap_precision{,_lower,_upper,_answers}                 the same for taps after offers
    irp_promised_precision                                          what the served artifact promises
    irp_decision_log_written_total{kind}, irp_decision_log_dropped_total{kind}, irp_decision_log_queue_depth,
    irp_decision_log_files_total, irp_decision_log_write_errors_total
    irp_model_info{version,runtime}, irp_model_reloads_total{result}
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from irp.serve.decision_log import DecisionLog
    from irp.serve.engine import Engine
    from irp.serve.feedback import LivePrecision

ENDPOINTS = ("/v1/predict", "/v1/predict/batch", "/v1/feedback", "/v1/admin/reload", "/healthz", "/readyz",
             "/v1/model", "/metrics", "/docs", "/openapi.json")
FEEDBACK_EVENTS = ("offer_accepted", "offer_declined", "carousel_tap", "no_tap")


class Metrics:
    """The service's counters and gauges; the decision log and the live window are read at scrape time."""

    def __init__(self, engine: Engine, live: LivePrecision | None = None,
                 decision_log: DecisionLog | None = None, live_tap: LivePrecision | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("irp_http_requests", "HTTP requests by endpoint and status code.",
                                ["endpoint", "status"], registry=r)
        self.errors = Counter("irp_http_errors", "HTTP error responses: client (4xx) or server (5xx).",
                              ["endpoint", "kind"], registry=r)
        self.latency = Histogram(
            "irp_http_request_duration_seconds", "Request latency (body read to response start).", ["endpoint"],
            buckets=(0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.predictions = Counter("irp_predictions", "Records scored, by decision at the operating point.",
                                   ["decision"], registry=r)
        for decision in ("image_seeking", "not_image_seeking"):
            self.predictions.labels(decision=decision)  # both series exist from the start (rates need them)
        self.positive_share = Gauge("irp_positive_decision_share",
                                    "Share of scored records decided image-seeking since start.", registry=r)
        self.switches = Counter("irp_switch_suggestions", "Offers made: records answered with suggest_switch=true.",
                                registry=r)
        self.explored = Counter("irp_offers_explored", "Offers made by the exploration coin (not the score).",
                                registry=r)
        self.feedback = Counter("irp_feedback_events", "Feedback events received, by event.", ["event"], registry=r)
        for event in FEEDBACK_EVENTS:
            self.feedback.labels(event=event)
        self.unmatched = Counter("irp_feedback_unmatched_answers",
                                 "Offer answers for an id this server does not remember offering (other replica, "
                                 "too old, or a repeated answer).", registry=r)
        self.reloads = Counter("irp_model_reloads", "Model reloads by result.", ["result"], registry=r)
        for result in ("ok", "failed"):
            self.reloads.labels(result=result)
        self.model_info = Gauge("irp_model_info", "The served model.", ["version", "runtime"], registry=r)
        self._model_labels = (engine.version, engine.runtime)
        self.model_info.labels(*self._model_labels).set(1)
        self._engine = engine
        self._lock = threading.Lock()
        self._scored = self._positive = 0
        r.register(_LiveCollector(self, live, decision_log, live_tap))

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in ENDPOINTS else "other"  # bounded label values whatever clients request
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint=endpoint, kind="server" if status >= 500 else "client").inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def observe_decisions(self, positive: int, total: int, switches: int, explored: int = 0) -> None:
        self.predictions.labels(decision="image_seeking").inc(positive)
        self.predictions.labels(decision="not_image_seeking").inc(total - positive)
        self.switches.inc(switches)
        if explored:
            self.explored.inc(explored)
        with self._lock:
            self._scored += total
            self._positive += positive
            self.positive_share.set(self._positive / self._scored if self._scored else 0.0)

    def model_swapped(self, engine: Engine) -> None:
        with self._lock:
            try:
                self.model_info.remove(*self._model_labels)
            except KeyError:
                pass
            self._model_labels = (engine.version, engine.runtime)
            self.model_info.labels(*self._model_labels).set(1)
            self._engine = engine
        self.reloads.labels(result="ok").inc()

    @property
    def engine(self) -> Engine:
        return self._engine


class _LiveCollector:
    """Values computed at scrape time: the live-precision windows and the decision log's counters."""

    def __init__(self, metrics: Metrics, live: LivePrecision | None, decision_log: DecisionLog | None,
                 live_tap: LivePrecision | None = None) -> None:
        self.metrics, self.decision_log = metrics, decision_log
        # (metric prefix, window, what one answer is)
        self.windows = [(name, window, what) for name, window, what in (
            ("irp_live_precision", live, "answers to offers (accepted / (accepted + declined))"),
            ("irp_live_tap_precision", live_tap, "taps after offers (tapped / (tapped + not tapped))"))
            if window is not None]

    def describe(self) -> list:
        return []  # collected only at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        promise = self.metrics.engine.promised_precision
        if promise is not None:
            yield GaugeMetricFamily("irp_promised_precision", "Precision the served artifact promises at its "
                                    "operating point (target when reached).", value=promise)
        for name, window, what in self.windows:
            snap = window.snapshot()
            yield GaugeMetricFamily(f"{name}_answers", f"Answers in the live window: {what}.", value=snap["answers"])
            if snap["answers"]:
                yield GaugeMetricFamily(name, f"Live precision over the sliding window: {what}.",
                                        value=snap["precision"])
            yield GaugeMetricFamily(f"{name}_lower", "Wilson 95 % lower bound (0 with no answers).",
                                    value=snap["ci"][0])
            yield GaugeMetricFamily(f"{name}_upper", "Wilson 95 % upper bound (1 with no answers).",
                                    value=snap["ci"][1])
            yield GaugeMetricFamily(f"{name}_window_seconds", "Length of the live window.", value=snap["window_s"])
        log = self.decision_log
        if log is not None:
            written = CounterMetricFamily("irp_decision_log_written", "Events written to the decision log.",
                                          labels=["kind"])
            dropped = CounterMetricFamily("irp_decision_log_dropped", "Events dropped by the decision log (queue "
                                          "full, or a write error).", labels=["kind"])
            for kind, value in log.written.items():
                written.add_metric([kind], value)
            for kind, value in log.dropped.items():
                dropped.add_metric([kind], value)
            yield written
            yield dropped
            yield GaugeMetricFamily("irp_decision_log_queue_depth", "Events queued, not yet written.",
                                    value=log.depth)
            yield CounterMetricFamily("irp_decision_log_files", "Decision-log files completed (renamed).",
                                      value=log.files_completed)
            yield CounterMetricFamily("irp_decision_log_write_errors", "Decision-log write errors.",
                                      value=log.write_errors)


class MetricsMiddleware:
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
