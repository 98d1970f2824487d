"""Prometheus metrics of the service, in the app's own registry (several apps may live in one process).

    irp_http_requests_total{endpoint,status}, irp_http_errors_total{endpoint,kind}, irp_http_request_duration_seconds
    irp_predictions_total{decision}, irp_positive_decision_share, irp_switch_suggestions_total (offers made),
    irp_offers_explored_total                                       offers decided by the exploration coin
    irp_feedback_events_total{event}, irp_feedback_unmatched_answers_total
    irp_offers_total{model_version}                                 offers made, by the model that made them
    irp_offer_answers_total{model_version,event}                    answers to offers, counted once per offer and
                                                                    kind (accept/decline, tap/no tap), by the
                                                                    model version of the offer (any replica's)
    irp_promised_precision{model_version}                           what the served artifact promises
    irp_state_errors_total{operation}, irp_state_up                 the shared state (irp.serve.state)
    irp_decision_log_written_total{kind}, irp_decision_log_dropped_total{kind}, irp_decision_log_queue_depth,
    irp_decision_log_files_total, irp_decision_log_write_errors_total
    irp_model_info{version,runtime,replica}, irp_model_reloads_total{result}

Fleet-wide ratios (live precision of offers, its Wilson interval, answer counts) are not computed here: they are
Prometheus recording rules over the counters summed across replicas (deploy/prometheus/rules.yml). A ratio or
interval per process cannot be added up. Per-process windows stay in GET /v1/model, as this replica's view.

Counters by model version are exact under `increase()`: a version's series are exported at 0 on the first
scrape that shows them and its counts from the next scrape on (`VersionCounts`), because Prometheus takes the
first sample of a new series as its baseline and would lose whatever the series held then.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from irp.serve.decision_log import DecisionLog
    from irp.serve.engine import Engine
    from irp.serve.state import SharedState

ENDPOINTS = ("/v1/predict", "/v1/predict/batch", "/v1/feedback", "/v1/admin/reload", "/healthz", "/readyz",
             "/v1/model", "/metrics", "/docs", "/openapi.json")
FEEDBACK_EVENTS = ("offer_accepted", "offer_declined", "carousel_tap", "no_tap")


class VersionCounts:
    """Counts by (model version, key) that Prometheus can sum exactly across replicas and restarts.

    `declare(version)` makes every key of a version exist at 0; `add` counts. `collect()` (one scrape) publishes
    a version's counts only once the version was shown at 0 by an earlier scrape: the first scrape of a new
    series must read 0, or `increase()` would lose what it held.

    >>> counts = VersionCounts(("a", "b")); counts.add("v1", "a", 3)
    >>> counts.collect(), counts.collect()
    ({('v1', 'a'): 0, ('v1', 'b'): 0}, {('v1', 'a'): 3, ('v1', 'b'): 0})
    """

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self._published: dict[tuple[str, str], int] = {}
        self._pending: dict[tuple[str, str], int] = {}
        self._shown: set[str] = set()
        self._lock = threading.Lock()

    def declare(self, version: str) -> None:
        with self._lock:
            for key in self.keys:
                self._published.setdefault((version, key), 0)
                self._pending.setdefault((version, key), 0)

    def add(self, version: str, key: str, n: int = 1) -> None:
        if n:
            self.declare(version)
            with self._lock:
                self._pending[(version, key)] += n

    def collect(self) -> dict[tuple[str, str], int]:
        """What one scrape shows (and, from now on, every version in it counts as shown)."""
        with self._lock:
            for label, n in self._pending.items():
                if n and label[0] in self._shown:
                    self._published[label] += n
                    self._pending[label] = 0
            self._shown.update(version for version, _ in self._published)
            return dict(self._published)

    def totals(self) -> dict[str, dict[str, int]]:
        """Everything counted (published or not), by version then key: this replica's view, for GET /v1/model."""
        with self._lock:
            out: dict[str, dict[str, int]] = {}
            for (version, key), n in self._published.items():
                out.setdefault(version, {})[key] = n + self._pending.get((version, key), 0)
            return out


class Metrics:
    """The service's counters and gauges; the decision log and the live window are read at scrape time."""

    def __init__(self, engine: Engine, decision_log: DecisionLog | None = None, state: SharedState | None = None,
                 replica_id: str = "") -> None:
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
                                 "Offer answers for an id the fleet does not remember offering (older than the "
                                 "offer records live, never offered, or the shared state was down).", registry=r)
        self.offers = VersionCounts(("offers",))  # irp_offers_total{model_version}
        self.answers = VersionCounts(FEEDBACK_EVENTS)  # irp_offer_answers_total{model_version,event}
        self.offers.declare(engine.version)
        self.answers.declare(engine.version)
        self.replica_id = replica_id
        self.reloads = Counter("irp_model_reloads", "Model reloads by result.", ["result"], registry=r)
        for result in ("ok", "failed"):
            self.reloads.labels(result=result)
        self.model_info = Gauge("irp_model_info", "The served model (replica: --replica-id).",
                                ["version", "runtime", "replica"], registry=r)
        self._model_labels = (engine.version, engine.runtime, replica_id)
        self.model_info.labels(*self._model_labels).set(1)
        self._engine = engine
        self._lock = threading.Lock()
        self._scored = self._positive = 0
        r.register(_ScrapeCollector(self, decision_log, state))

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = path if path in ENDPOINTS else "other"  # bounded label values whatever clients request
        self.requests.labels(endpoint=endpoint, status=str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint=endpoint, kind="server" if status >= 500 else "client").inc()
        self.latency.labels(endpoint=endpoint).observe(seconds)

    def observe_decisions(self, positive: int, total: int, switches: int, explored: int = 0,
                          model_version: str = "") -> None:
        self.offers.add(model_version or self._engine.version, "offers", switches)
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
            self._model_labels = (engine.version, engine.runtime, self.replica_id)
            self.model_info.labels(*self._model_labels).set(1)
            self._engine = engine
        self.offers.declare(engine.version)
        self.answers.declare(engine.version)
        self.reloads.labels(result="ok").inc()

    @property
    def engine(self) -> Engine:
        return self._engine


class _ScrapeCollector:
    """Values read at scrape time: the counts by model version, the promise, the shared state and the decision
    log's counters."""

    def __init__(self, metrics: Metrics, decision_log: DecisionLog | None, state: SharedState | None) -> None:
        self.metrics, self.decision_log, self.state = metrics, decision_log, state

    def describe(self) -> list:
        return []  # collected only at scrape time; nothing to check at registration

    def _counts(self, family: Any) -> Iterator[Any]:
        """irp_offers_total and irp_offer_answers_total: from the shared store when it keeps them (Redis: they
        survive a SIGKILL), else from this process (VersionCounts). Nothing when the store cannot be read now
        (a gap in a counter loses nothing)."""
        offers, answers = self.metrics.offers.collect(), self.metrics.answers.collect()
        if self.state is not None:
            from irp.serve.state import StateError

            try:
                stored = self.state.counts(set(offers) | set(answers))
            except StateError:
                return
            if stored is not None:
                offers = {k: n for k, n in stored.items() if k[1] == "offers"}
                answers = {k: n for k, n in stored.items() if k[1] != "offers"}
        by_version = family("irp_offers", "Offers made (suggest_switch=true), by the model version that made them.",
                            labels=["model_version"])
        for (version, _), n in sorted(offers.items()):
            by_version.add_metric([version], n)
        yield by_version
        answered = family("irp_offer_answers", "Answers to offers received by this replica, by the model version of "
                          "the offer (whichever replica made it) and event; each offer's first answer of each kind "
                          "only.", labels=["model_version", "event"])
        for (version, event), n in sorted(answers.items()):
            answered.add_metric([version, event], n)
        yield answered

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        yield from self._counts(CounterMetricFamily)
        engine = self.metrics.engine
        if engine.promised_precision is not None:
            promise = GaugeMetricFamily("irp_promised_precision", "Precision the served artifact promises at its "
                                        "operating point (target when reached).", labels=["model_version"])
            promise.add_metric([engine.version], engine.promised_precision)
            yield promise
        if self.state is not None:
            errors = CounterMetricFamily("irp_state_errors", "Calls that could not use the shared state (failed, "
                                         "or skipped during the back-off after a failure), by operation.",
                                         labels=["operation"])
            for operation, n in self.state.errors.items():
                errors.add_metric([operation], n)
            yield errors
            yield GaugeMetricFamily("irp_state_up", "1 when the last call to the shared state succeeded.",
                                    value=float(self.state.ok))
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
