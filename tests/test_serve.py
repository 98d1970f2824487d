"""The HTTP service in-process (FastAPI TestClient) on a tiny artifact: answers, limits, auth, policy, metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import make_records
from irp.serve import Engine, Limits, ServeSettings, check_record, create_app, is_loopback
from test_export import train_tiny, warm_engine

RECORD = {"utterance": "show me a red dress", "intent": "search", "session_id": "s1",
          "products": [{"title": "Red Floral Dress", "brand": "acme", "color": ["red"], "category": "dress"}]}
PREDICTION_KEYS = {"id", "probability", "image_seeking", "suggest_switch", "threshold", "model_version", "replica_id"}


@pytest.fixture(scope="module")
def artifact(tiny_backbone: str, tmp_path_factory) -> Path:
    return train_tiny(tiny_backbone, tmp_path_factory.mktemp("serve") / "model")


@pytest.fixture(scope="module")
def engine(artifact: Path) -> Engine:
    return warm_engine(artifact)


def client_for(engine: Engine, **settings) -> TestClient:
    return TestClient(create_app(engine, ServeSettings(**settings)), raise_server_exceptions=False)


@pytest.fixture()
def client(engine: Engine) -> TestClient:
    return client_for(engine)


def assert_names_field(response, status: int, field: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["field"] == field and body["detail"].startswith(f"{field}: "), body


# ---- answers ----------------------------------------------------------------------------------------------
def test_predict_answers_the_contract(client: TestClient, engine: Engine) -> None:
    response = client.post("/v1/predict", json=RECORD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == PREDICTION_KEYS
    expected = engine.classifier.predict_proba([check_record(RECORD)])[0]
    assert body["probability"] == pytest.approx(float(expected), abs=1e-6)
    assert body["image_seeking"] == (body["probability"] >= body["threshold"])
    assert body["threshold"] == engine.threshold and body["model_version"] == engine.version


def test_batch_matches_single_answers_in_order(client: TestClient) -> None:
    items = [dict(r, session_id=None) for r in make_records(12, 5)]
    batch = client.post("/v1/predict/batch", json={"items": items})
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert [r["id"] for r in results] == [r["id"] for r in items]
    singles = [client.post("/v1/predict", json=r).json()["probability"] for r in items]
    assert np.allclose([r["probability"] for r in results], singles, atol=1e-5)  # padding changes nothing
    assert client.post("/v1/predict/batch", json={"items": []}).json()["results"] == []


def test_concurrent_requests_get_their_own_answers(client: TestClient) -> None:
    """Featurization is shared state; answers under concurrency must equal the sequential ones."""
    items = [dict(r, session_id=None) for r in make_records(16, 8)]
    expected = {r["id"]: client.post("/v1/predict", json=r).json()["probability"] for r in items}
    got: dict[str, float] = {}
    lock = threading.Lock()

    def worker(chunk: list[dict]) -> None:
        for record in chunk:
            p = client.post("/v1/predict", json=record).json()["probability"]
            with lock:
                got[record["id"]] = p

    threads = [threading.Thread(target=worker, args=(items[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == pytest.approx(expected, abs=1e-6)


def test_health_readiness_and_model_info(engine: Engine, client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    info = client.get("/v1/model").json()
    assert info["model_version"] == engine.version and info["runtime"] == "torch"
    assert info["limits"]["max_batch"] == 256 and info["policy"]["cooldown_s"] == 600
    assert info["validation_metrics"]["ap"] > 0
    cold = Engine(engine.classifier)  # not warmed up yet
    assert client_for(cold).get("/readyz").status_code == 503


# ---- limits: a 4xx that names the field -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"utterance": "x" * 2001}, "utterance"),
        ({"utterance": "   "}, "utterance"),
        ({"utterance": 7}, "utterance"),
        ({"products": [{"title": "t"}] * 51}, "products"),
        ({"products": [{"title": "t", "brand": "b" * 513}]}, "products[0].brand"),
        ({"products": [{"title": "t" * 513}]}, "products[0].title"),
        ({"products": [{"title": "t", "style": ["s"] * 17}]}, "products[0].style"),
        ({"products": [{"title": "t", "style": ["s", "s" * 513]}]}, "products[0].style[1]"),
        ({"products": [{"title": " "}]}, "products[0].title"),
        ({"id": " "}, "id"),
        ({"id": 2**63}, "id"),
        ({"session_id": ""}, "session_id"),
        ({"session_id": -(2**63) - 1}, "session_id"),
        ({"intent": " \t"}, "intent"),
        ({"products": [{"title": "t", "price": -2}]}, "products[0].price"),
        ({"products": [{"color": "red"}]}, "products[0].title"),
        ({"screen_available": "yes"}, "screen_available"),
        ({"session_id": "s" * 257}, "session_id"),
        ({"context": ["hi", 3]}, "context[1]"),
        ({"intent": "i" * 513}, "intent"),
    ],
)
def test_invalid_records_get_422_naming_the_field(client: TestClient, change: dict, field: str) -> None:
    assert_names_field(client.post("/v1/predict", json=RECORD | change), 422, field)
    batch = {"items": [RECORD, RECORD | change]}
    assert_names_field(client.post("/v1/predict/batch", json=batch), 422, f"items[1].{field}")


def test_limits_accept_the_maximum(client: TestClient) -> None:
    at_limit = RECORD | {"utterance": " " + "x" * 2000 + "\n", "id": 2**63 - 1, "session_id": 7.0,
                         "products": [{"title": "t" * 512, "brand": "b" * 512, "style": ["s" * 512] * 16}] * 50}
    answer = client.post("/v1/predict", json=at_limit)
    assert answer.status_code == 200 and answer.json()["id"] == str(2**63 - 1)
    assert client.post("/v1/predict/batch", json={"items": [{"utterance": "hi"}] * 256}).status_code == 200


def test_unreadable_bodies(client: TestClient) -> None:
    assert_names_field(client.post("/v1/predict", content=b'{"utterance": '), 400, "body")
    assert_names_field(client.post("/v1/predict", content=b""), 400, "body")
    assert_names_field(client.post("/v1/predict", content=b"\xff\xfe{}"), 400, "body")
    assert_names_field(client.post("/v1/predict", content=b"[" * 100_000), 400, "body")  # nesting bomb
    assert_names_field(client.post("/v1/predict", content=b'{"id": ' + b"9" * 5000 + b"}"), 400, "body")
    assert_names_field(client.post("/v1/predict", content=b'{"utterance": "a \\ud800 b"}'), 422, "utterance")
    assert_names_field(client.post("/v1/predict", json=[RECORD]), 422, "body")
    assert_names_field(client.post("/v1/predict/batch", json=[RECORD]), 422, "body")
    assert_names_field(client.post("/v1/predict/batch", json={"items": RECORD}), 422, "items")
    assert_names_field(client.post("/v1/predict/batch", json={"items": [1]}), 422, "items[0]")
    assert_names_field(client.post("/v1/predict/batch", json={"items": [RECORD] * 257}), 422, "items")
    assert_names_field(client.post("/v1/predict/batch", json={"items": [RECORD], "itmes": []}), 422, "itmes")


def test_body_over_one_megabyte_is_413(client: TestClient) -> None:
    big = json.dumps(RECORD | {"padding": "x" * 1_000_000}).encode()
    assert_names_field(client.post("/v1/predict", content=big), 413, "body")

    def chunks():  # no Content-Length: the limit must hold on the stream too
        for _ in range(40):
            yield b" " * 50_000

    assert_names_field(client.post("/v1/predict", content=chunks()), 413, "body")
    assert client.post("/v1/predict", content=json.dumps(RECORD).encode() + b" " * 900_000).status_code == 200


def test_unknown_routes_and_methods_are_4xx(client: TestClient) -> None:
    assert client.get("/v1/predict").status_code == 405
    assert client.post("/v2/whatever", json={}).status_code == 404


# ---- auth -------------------------------------------------------------------------------------------------
def test_bearer_token_auth(engine: Engine) -> None:
    client = client_for(engine, token="s3cret")
    for path, method in (("/v1/predict", "post"), ("/v1/predict/batch", "post"), ("/v1/model", "get"),
                         ("/metrics", "get")):
        response = getattr(client, method)(path)
        assert_names_field(response, 401, "authorization")
        assert response.headers["www-authenticate"] == "Bearer"
    wrong = client.post("/v1/predict", json=RECORD, headers={"Authorization": "Bearer s3cre"})
    assert_names_field(wrong, 401, "authorization")
    basic = client.post("/v1/predict", json=RECORD, headers={"Authorization": "Basic s3cret"})
    assert basic.status_code == 401
    ok = client.post("/v1/predict", json=RECORD, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200  # probes open


def test_without_token_only_loopback_binds(artifact: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.com")
    env = {k: v for k, v in os.environ.items() if k != "IRP_SERVE_TOKEN"} | {"COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "irp.cli", "serve", "--model", str(artifact), "--host", "0.0.0.0"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "without auth" in done.stderr


# ---- policy through the API -------------------------------------------------------------------------------
def test_suggest_switch_follows_policy(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.classifier, "threshold_", 0.0)  # every record image-seeking
    client = client_for(engine, cooldown_s=600)

    def switch(**fields) -> bool:
        body = client.post("/v1/predict", json={"utterance": "show me dresses"} | fields).json()
        assert body["image_seeking"]
        return body["suggest_switch"]

    assert switch(session_id="a")
    assert not switch(session_id="a")  # same session inside the cooldown
    assert switch(session_id="b")
    assert not switch(session_id="c", screen_available=False)
    assert switch(session_id="c", screen_available=True)  # the blocked query started no cooldown
    assert switch() and switch()  # no session: nothing to remember
    batch = client.post("/v1/predict/batch", json={"items": [{"utterance": "x", "session_id": "d"}] * 3}).json()
    assert [r["suggest_switch"] for r in batch["results"]] == [True, False, False]
    no_cooldown = client_for(engine, cooldown_s=0)
    assert all(no_cooldown.post("/v1/predict", json={"utterance": "x", "session_id": "a"}).json()["suggest_switch"]
               for _ in range(3))


# ---- metrics ----------------------------------------------------------------------------------------------
def test_metrics_count_requests_errors_latency_and_positive_share(engine: Engine,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    client = client_for(engine)
    monkeypatch.setattr(engine.classifier, "threshold_", 0.0)
    client.post("/v1/predict", json=RECORD)
    monkeypatch.setattr(engine.classifier, "threshold_", 1.01)
    client.post("/v1/predict/batch", json={"items": [RECORD] * 3})
    client.post("/v1/predict", json={"utterance": ""})
    client.get("/nope")
    samples = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert samples[("irp_http_requests_total", (("endpoint", "/v1/predict"), ("status", "200")))] == 1
    assert samples[("irp_http_requests_total", (("endpoint", "/v1/predict"), ("status", "422")))] == 1
    assert samples[("irp_http_requests_total", (("endpoint", "other"), ("status", "404")))] == 1
    assert samples[("irp_http_errors_total", (("endpoint", "/v1/predict"), ("kind", "client")))] == 1
    assert samples[("irp_http_request_duration_seconds_count", (("endpoint", "/v1/predict/batch"),))] == 1
    assert samples[("irp_predictions_total", (("decision", "image_seeking"),))] == 1
    assert samples[("irp_predictions_total", (("decision", "not_image_seeking"),))] == 3
    assert samples[("irp_positive_decision_share", ())] == pytest.approx(0.25)


def test_check_record_limits_are_configurable() -> None:
    from irp.serve import RequestError

    with pytest.raises(RequestError, match="max 10"):
        check_record({"utterance": "x", "products": [{"title": "t" * 11}]}, Limits(max_value_chars=10))


def test_engine_renews_its_featurizer_without_changing_answers(engine: Engine) -> None:
    records = [check_record(r) for r in make_records(30, 11)]
    small = Engine(engine.classifier, max_values=8, renew_after=5)  # renews every few requests
    first = small._featurizer
    got = np.concatenate([small.predict_proba(records[i : i + 3]) for i in range(0, 30, 3)])
    assert small._featurizer is not first
    assert np.allclose(got, engine.predict_proba(records), atol=1e-6)
