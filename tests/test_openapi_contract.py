"""The OpenAPI document is the contract: its request schemas are generated from the rules irp.serve.checks
enforces, it describes this server (auth and its 401 only with a token; /metrics is text), and Schemathesis
(`--checks all`, bounded examples, fixed seed) finds no disagreement against a live `irp serve`, with and
without a token. The edge cases that once disagreed are pinned here in-process (schema and checks side by side).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient

from irp.serve import (
    Engine,
    Limits,
    RequestError,
    ServeSettings,
    check_batch,
    check_feedback,
    check_record,
    check_reload,
    create_app,
)
from irp.serve.openapi import WHITESPACE, request_schemas
from test_export import train_tiny, warm_engine
from test_serve_process import Served

ROOT = Path(__file__).resolve().parents[1]
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
EXAMPLES, SEED = 8, 20261206  # per operation; with the coverage phase ~550 cases a run, 10-16 s
TOKEN = "contract-test-token"


@pytest.fixture(scope="module")
def artifact(tiny_backbone: str, tmp_path_factory) -> Path:
    return train_tiny(tiny_backbone, tmp_path_factory.mktemp("contract") / "model")


@pytest.fixture(scope="module")
def engine(artifact: Path) -> Engine:
    return warm_engine(artifact)


def document(engine: Engine, **settings: Any) -> dict:
    return TestClient(create_app(engine, ServeSettings(runtime="torch", **settings))).get("/openapi.json").json()


# ---- the document ------------------------------------------------------------------------------------------
def test_whitespace_class_is_what_strip_removes() -> None:
    """The patterns spell out the characters str.strip() removes; checked over all of Unicode."""
    spelled = re.compile(f"[{WHITESPACE}]")
    every = "".join(map(chr, range(sys.maxunicode + 1)))
    assert {c for c in every if c.isspace()} == set(spelled.findall(every))


@pytest.mark.parametrize("token", [None, TOKEN])
def test_the_document_describes_this_server(engine: Engine, token: str | None) -> None:
    doc = document(engine, token=token)
    operations = {(path, method): op for path, item in doc["paths"].items() for method, op in item.items()}
    protected = {("/v1/predict", "post"), ("/v1/predict/batch", "post"), ("/v1/feedback", "post"),
                 ("/v1/admin/reload", "post"), ("/v1/model", "get"), ("/metrics", "get")}
    assert protected < set(operations)
    for key, op in operations.items():
        guarded = token is not None and key in protected
        assert ("security" in op) == guarded, key
        assert ("401" in op["responses"]) == guarded, key
        if guarded:
            assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
    reload = operations[("/v1/admin/reload", "post")]
    assert ("403" in reload["responses"]) == (token is None)  # tokenless: loopback clients only
    assert reload["requestBody"]["required"] is True
    metrics = operations[("/metrics", "get")]["responses"]
    assert list(metrics["200"]["content"]) == ["text/plain"]  # Prometheus text, not JSON
    assert list(metrics.get("401", {"content": {"application/json": 0}})["content"]) == ["application/json"]
    assert list(operations[("/readyz", "get")]["responses"]) == ["200", "503"]
    assert ("securitySchemes" in doc.get("components", {})) == (token is not None)


def test_the_schemas_follow_the_servers_limits(engine: Engine) -> None:
    limits = Limits(max_batch=8, max_value_chars=40, max_list_items=3, max_id_chars=12)
    schemas = document(engine, limits=limits)["components"]["schemas"]
    assert schemas["BatchIn"]["properties"]["items"]["maxItems"] == 8
    assert schemas["FeedbackBatchIn"]["properties"]["items"]["maxItems"] == 8
    attribute = schemas["ProductIn"]["additionalProperties"]["anyOf"]
    assert attribute[0]["maxLength"] == 40 and attribute[1]["maxItems"] == 3
    assert schemas["FeedbackIn"]["properties"]["id"]["anyOf"][0]["maxLength"] == 12


# ---- schema and checks agree on the edge cases (the ones Schemathesis once found, and their neighbours) ----
def schema_accepts(name: str, body: object, limits: Limits = Limits()) -> bool:
    root = {"$ref": f"#/components/schemas/{name}", "components": {"schemas": request_schemas(limits)}}
    return jsonschema.Draft202012Validator(root).is_valid(body)


def checks_accept(check: Callable[[object], object], body: object) -> bool:
    try:
        check(body)
        return True
    except RequestError as e:
        assert 400 <= e.status < 500 and e.field
        return False


RECORD = {"utterance": "red dress"}
EVENT = {"id": "r1", "event": "no_tap"}
EDGES = [  # (schema component, the check, body, accepted)
    ("RecordIn", check_record, {"utterance": " " + "x" * 2000}, True),  # 2,000 after strip
    ("RecordIn", check_record, {"utterance": " " + "x" * 2001}, False),
    ("RecordIn", check_record, {"utterance": "\u3000x\u2029"}, True),
    ("RecordIn", check_record, {"utterance": "\u3000\u2029\x1c"}, False),  # whitespace-only (Unicode)
    ("RecordIn", check_record, RECORD | {"id": ""}, False),
    ("RecordIn", check_record, RECORD | {"id": " \t"}, False),
    ("RecordIn", check_record, RECORD | {"session_id": " "}, False),
    ("RecordIn", check_record, RECORD | {"intent": "  "}, False),
    ("RecordIn", check_record, RECORD | {"intent": " " + "i" * 512 + " "}, True),
    ("RecordIn", check_record, RECORD | {"id": 7.0, "session_id": -3}, True),  # JSON does not tell 7 from 7.0
    ("RecordIn", check_record, RECORD | {"id": 7.5}, False),
    ("RecordIn", check_record, RECORD | {"id": 2**63 - 1}, True),
    ("RecordIn", check_record, RECORD | {"id": 2**63}, False),
    ("RecordIn", check_record, RECORD | {"id": True}, False),
    ("RecordIn", check_record, RECORD | {"label": 1.0, "true_intent": 0}, True),
    ("RecordIn", check_record, RECORD | {"label": True}, False),
    ("RecordIn", check_record, RECORD | {"products": [{"title": "t", "color": ["c" * 512] * 16}]}, True),
    ("RecordIn", check_record, RECORD | {"products": [{"title": "t", "color": ["c"] * 17}]}, False),
    ("RecordIn", check_record, RECORD | {"products": [{"title": "\t"}]}, False),
    ("RecordIn", check_record, RECORD | {"products": [{"title": "t", "price": None, "x": None}]}, True),
    ("RecordIn", check_record, RECORD | {"products": [{"title": "t"}] * 51}, False),
    ("RecordIn", check_record, RECORD | {"anything": {"nested": [1, None]}}, True),  # records keep unknown keys
    ("BatchIn", check_batch, {"items": [RECORD]}, True),
    ("BatchIn", check_batch, {"items": [RECORD], "extra": 1}, False),
    ("FeedbackBodyIn", check_feedback, EVENT | {"ts": 1e11}, True),
    ("FeedbackBodyIn", check_feedback, EVENT | {"ts": 1e11 + 1}, False),
    ("FeedbackBodyIn", check_feedback, EVENT | {"ts": None}, True),
    ("FeedbackBodyIn", check_feedback, {"id": " ", "event": "no_tap"}, False),
    ("FeedbackBodyIn", check_feedback, {"id": 12.0, "event": "no_tap"}, True),
    ("FeedbackBodyIn", check_feedback, EVENT | {"timestamp": 1}, False),
    ("FeedbackBodyIn", check_feedback, {"items": [EVENT], "id": "x"}, False),
    ("FeedbackBodyIn", check_feedback, {"items": [EVENT] * 256}, True),
    ("ReloadIn", check_reload, {}, True),
    ("ReloadIn", check_reload, {"model": None}, True),
    ("ReloadIn", check_reload, {"model": " models/B"}, True),
    ("ReloadIn", check_reload, {"model": " "}, False),
    ("ReloadIn", check_reload, {"model": "a\x00b"}, False),
    ("ReloadIn", check_reload, {"model": "m", "": 1}, False),
    ("ReloadIn", check_reload, {"modle": "m"}, False),
]


@pytest.mark.parametrize(("name", "check", "body", "accepted"), EDGES,
                         ids=[f"{i}-{e[0]}-{'ok' if e[3] else 'no'}" for i, e in enumerate(EDGES)])
def test_schema_and_checks_agree(name: str, check: Callable, body: object, accepted: bool) -> None:
    assert schema_accepts(name, body) is accepted
    assert checks_accept(check, body) is accepted


def test_a_reload_needs_a_body(engine: Engine) -> None:
    client = TestClient(create_app(engine, ServeSettings(runtime="torch")), client=("127.0.0.1", 5000))
    response = client.post("/v1/admin/reload", content=b"")
    assert response.status_code == 400 and response.json()["field"] == "body"
    assert client.get("/v1/model").json()["reloads"] == []  # nothing was reloaded


# ---- Schemathesis against a live server --------------------------------------------------------------------
@pytest.mark.parametrize("token", [None, TOKEN], ids=["no-token", "token"])
def test_schemathesis_finds_no_disagreement(artifact: Path, tmp_path: Path, token: str | None) -> None:
    if not SCHEMATHESIS.exists():
        pytest.fail(f"{SCHEMATHESIS} missing: pip install -e '.[dev]' (schemathesis==4.32.5)")
    server = Served(artifact, tmp_path / "logs", *(["--token", token] if token else []))
    try:
        command = [str(SCHEMATHESIS), "--config-file", str(ROOT / "schemathesis.toml"), "run",
                   f"{server.url}/openapi.json", "--checks", "all", "--max-examples", str(EXAMPLES),
                   "--seed", str(SEED), "--workers", "1", "--request-timeout", "30",
                   "--suppress-health-check", "too_slow",  # data generation timed on a busy machine, not the API
                   *(["--header", f"Authorization: Bearer {token}"] if token else [])]
        env = os.environ | {"NO_COLOR": "1", "NO_PROXY": "*", "no_proxy": "*", "COLUMNS": "160"}
        done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    finally:
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(60)
    summary = done.stdout[done.stdout.find("SUMMARY"):] if "SUMMARY" in done.stdout else done.stdout[-3000:]
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-3000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert cases and int(cases[1]) == int(cases[2]) >= 100, summary  # it really ran, and every case passed
