"""Property-based fuzzing of the HTTP endpoints (hypothesis, in-process TestClient): thousands of generated
bodies (arbitrary JSON, near-valid records with hostile values, raw bytes, batches), none may get a 5xx; every
answer is either a well-formed prediction or a 4xx that names a field.

The strategies follow the request schema of the OpenAPI document (RecordIn / ProductIn / BatchIn) and break it
on purpose: wrong types, out-of-range sizes, lone surrogates, NaN / huge numbers, deep nesting, unknown keys.
The default run sends ~2,400 requests; the `slow` variant sends 10x more.

/v1/feedback and /v1/admin/reload get the same treatment (~1,800 more bodies): near-valid events and batches,
reload bodies naming odd paths; their answers are a well-formed 200, a 4xx naming a field, or (reload) a 409
naming the folder that could not be loaded, while the served model stays the same. The server writes a decision
log meanwhile: every line it wrote must read back (nothing torn, nothing the offline reader refuses).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from irp.logs import scan_log_dir
from irp.serve import DecisionLog, Engine, ServeSettings, create_app, load_classifier
from test_export import train_tiny

PREDICTION_KEYS = {"id", "probability", "image_seeking", "suggest_switch", "threshold", "model_version", "replica_id"}
FUZZ = settings(max_examples=600, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
FUZZ_SLOW = settings(FUZZ, max_examples=6000)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz_logs")


@pytest.fixture(scope="module")
def client(tiny_backbone: str, tmp_path_factory, log_dir: Path) -> Iterator[TestClient]:
    artifact = train_tiny(tiny_backbone, tmp_path_factory.mktemp("fuzz") / "model")
    engine = Engine(load_classifier(artifact, "torch"), artifact)
    engine.warm_up()
    app = create_app(engine, ServeSettings(runtime="torch", explore_rate=0.1, seed=0), DecisionLog(log_dir))
    # A loopback client: the admin endpoint of a tokenless server answers loopback clients only.
    with TestClient(app, raise_server_exceptions=False, client=("127.0.0.1", 50000)) as client:
        yield client  # inside `with`: one event loop for all requests (a fresh one per request is ~10x slower)


# ---- strategies -------------------------------------------------------------------------------------------
hostile_text = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec=None, categories=["Cs", "Co", "Cc", "Zs", "So", "Mn"]), max_size=20),
    st.sampled_from(["", " ", "\u0000", "\ud800", "a\udfff b", "\U0001F600", "é" * 600, "x" * 2001, "y" * 513,
                     "[CLS] [SEP] [MASK]", "null", "\n\t"]),
)
numbers = st.one_of(st.integers(min_value=-(10**30), max_value=10**30), st.floats(allow_nan=True, allow_infinity=True))
json_values = st.recursive(
    st.none() | st.booleans() | numbers | hostile_text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(hostile_text, children, max_size=5),
    max_leaves=8,
)
attribute = st.one_of(hostile_text, st.lists(hostile_text, max_size=4), json_values)
product = st.one_of(
    st.fixed_dictionaries(
        {"title": st.one_of(hostile_text, json_values)},
        optional={"brand": attribute, "color": attribute, "style": attribute, "category": attribute,
                  "material": attribute, "price": numbers | json_values, "x-extra": json_values},
    ),
    json_values,
)
record = st.fixed_dictionaries(
    {"utterance": st.one_of(hostile_text, json_values)},
    optional={
        "id": st.one_of(hostile_text, numbers, json_values),
        "intent": st.one_of(st.sampled_from(["search", "buy", "unknown"]), hostile_text, json_values),
        "context": st.one_of(st.lists(hostile_text, max_size=4), json_values),
        "products": st.one_of(
            st.lists(product, max_size=6),
            st.builds(lambda p, n: [p] * n, product, st.integers(49, 52)),  # around the 50-product limit
            json_values,
        ),
        "screen_available": st.one_of(st.booleans(), json_values),
        "session_id": st.one_of(hostile_text, numbers, json_values),
        "label": json_values,
        "true_intent": json_values,
        "unknown_key": json_values,
    },
)


feedback_event = st.one_of(
    st.fixed_dictionaries(
        {"id": st.one_of(hostile_text, numbers, json_values),
         "event": st.one_of(st.sampled_from(["offer_accepted", "offer_declined", "carousel_tap", "no_tap"]),
                            hostile_text, json_values)},
        optional={"ts": st.one_of(numbers, json_values, st.floats(0, 2e12)), "x-extra": json_values},
    ),
    json_values,
)
feedback_body = st.one_of(
    feedback_event,
    st.fixed_dictionaries({"items": st.one_of(st.lists(feedback_event, max_size=6), json_values)}),
    st.builds(lambda e, n: {"items": [e] * n}, feedback_event, st.integers(255, 258)),  # around the batch limit
)
reload_body = st.one_of(
    st.fixed_dictionaries({}, optional={"model": st.one_of(
        hostile_text, json_values, st.sampled_from([".", "/", "..", "/dev/null", "/proc/self", "tests", "/tmp",
                                                    "~", "models/../../etc", "a" * 5000]))}),
    st.dictionaries(hostile_text, json_values, max_size=3),
    json_values,
)


def encode(value: object) -> bytes:
    """JSON as a client would send it; NaN/Infinity literals and lone surrogates (as \\udXXX escapes) included."""
    return json.dumps(value, allow_nan=True).encode()


def check(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    if response.status_code == 200:
        results = body["results"] if "results" in body else [body]
        for result in results:
            assert set(result) == PREDICTION_KEYS
            assert 0.0 <= result["probability"] <= 1.0 and not math.isnan(result["probability"])
            assert result["image_seeking"] == (result["probability"] >= result["threshold"])
    else:
        assert response.status_code in (400, 413, 422), response.status_code
        assert isinstance(body["field"], str) and body["field"] and body["detail"].startswith(body["field"] + ": ")


def check_feedback(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    if response.status_code == 200:
        assert set(body) == {"accepted", "logged", "model_version", "replica_id"} and body["accepted"] == body["logged"]
    else:
        assert response.status_code in (400, 413, 422), response.status_code
        assert isinstance(body["field"], str) and body["field"] and body["detail"].startswith(body["field"] + ": ")


def check_reload(client: TestClient, response, version: str) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    if response.status_code == 200:  # {} or a path to the served folder: reloaded in place
        assert body["model_version"] == version
    else:
        assert response.status_code in (400, 409, 413, 422), response.status_code
        assert isinstance(body["field"], str) and body["field"] and body["detail"].startswith(body["field"] + ": ")
        if response.status_code == 409:
            assert body["field"] == "model" and f"still serving {version}" in body["detail"]


# ---- properties -------------------------------------------------------------------------------------------
def _records(client: TestClient, value: object) -> None:
    check(client.post("/v1/predict", content=encode(value)))


def _batches(client: TestClient, items: object) -> None:
    check(client.post("/v1/predict/batch", content=encode({"items": items})))


def _anything(client: TestClient, path: str, value: object) -> None:
    check(client.post(path, content=encode(value)))


def _raw(client: TestClient, path: str, body: bytes) -> None:
    check(client.post(path, content=body))


@FUZZ
@given(value=record)
def test_fuzz_records(client: TestClient, value: dict) -> None:
    _records(client, value)


@FUZZ
@given(items=st.one_of(st.lists(st.one_of(record, json_values), max_size=4), json_values))
def test_fuzz_batches(client: TestClient, items: object) -> None:
    _batches(client, items)


@FUZZ
@given(path=st.sampled_from(["/v1/predict", "/v1/predict/batch"]), value=json_values)
def test_fuzz_arbitrary_json(client: TestClient, path: str, value: object) -> None:
    _anything(client, path, value)


@FUZZ
@given(path=st.sampled_from(["/v1/predict", "/v1/predict/batch"]),
       body=st.one_of(st.binary(max_size=200), st.builds(lambda b: b'{"utterance": "' + b, st.binary(max_size=50))))
def test_fuzz_raw_bytes(client: TestClient, path: str, body: bytes) -> None:
    _raw(client, path, body)


@FUZZ
@given(body=feedback_body)
def test_fuzz_feedback(client: TestClient, body: object) -> None:
    check_feedback(client.post("/v1/feedback", content=encode(body)))


@FUZZ
@given(body=st.one_of(st.binary(max_size=200), st.builds(lambda b: b'{"id": "a", "event": "' + b, st.binary(max_size=40))))
def test_fuzz_feedback_raw_bytes(client: TestClient, body: bytes) -> None:
    check_feedback(client.post("/v1/feedback", content=body))


@FUZZ
@given(body=reload_body)
def test_fuzz_reload(client: TestClient, body: object) -> None:
    version = client.get("/readyz").json()["model_version"]
    if body == {} or (isinstance(body, dict) and body.get("model") is None and set(body) <= {"model"}):
        return  # a real reload of the served folder (~1 s): covered by tests/test_reload.py
    check_reload(client, client.post("/v1/admin/reload", content=encode(body)), version)
    assert client.post("/v1/predict", json={"utterance": "red dress"}).json()["model_version"] == version


@pytest.mark.slow
@FUZZ_SLOW
@given(value=record)
def test_fuzz_records_long(client: TestClient, value: dict) -> None:
    _records(client, value)


@pytest.mark.slow
@FUZZ_SLOW
@given(items=st.lists(st.one_of(record, json_values), max_size=20))
def test_fuzz_batches_long(client: TestClient, items: list) -> None:
    _batches(client, items)


def test_generated_inputs_reach_the_model(client: TestClient) -> None:
    """Guard against a fuzzer that only ever produces rejects: valid records drawn by the strategy get 200s."""
    valid = st.fixed_dictionaries(
        {"utterance": st.text(st.characters(categories=["L", "N", "Zs"]), min_size=1, max_size=30).filter(str.strip)},
        optional={"products": st.lists(st.fixed_dictionaries({"title": st.just("Red Dress")},
                                                             optional={"color": st.text(max_size=10)}), max_size=5)},
    )
    seen: list[int] = []

    @settings(max_examples=50, deadline=None, database=None)
    @given(value=valid)
    def probe(value: dict) -> None:
        response = client.post("/v1/predict", content=encode(value))
        check(response)
        seen.append(response.status_code)

    probe()
    assert seen.count(200) >= 45, seen


def test_the_fuzzed_decision_log_reads_back(client: TestClient, log_dir: Path) -> None:
    """Runs last: everything the fuzzed server logged (decisions and feedback with hostile ids and texts) is
    valid JSON Lines that the offline reader accepts."""
    client.app.state.decision_log.close()
    decisions, feedback, scan = scan_log_dir(log_dir)
    assert decisions and feedback
    assert scan.torn_lines == scan.invalid_lines == scan.in_progress_files == 0, scan.examples
