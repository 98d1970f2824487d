"""POST /v1/admin/reload: a good folder swaps with no failed request, a broken one answers 409 and the old model
keeps serving, auth, ONNX parity before the swap. In-process (TestClient) on tiny artifacts."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest import make_records
from irp.serve import Engine, ServeSettings, create_app, load_classifier
from test_export import copy_artifact, train_tiny

LOOPBACK = ("127.0.0.1", 50123)
RECORD = {"utterance": "show me a red dress", "products": [{"title": "Red Dress", "color": "red"}]}


def retag(artifact: Path, dst: Path, sha: str) -> Path:
    """A copy of `artifact` whose model_version differs (the version is the training-data fingerprint + step)."""
    copy_artifact(artifact, dst)
    meta = json.loads((dst / "config.json").read_text())
    meta.setdefault("data", {}).setdefault("train", {})["sha256"] = sha * 8
    (dst / "config.json").write_text(json.dumps(meta))
    return dst


@pytest.fixture(scope="module")
def artifacts(tiny_backbone: str, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reload")
    a = train_tiny(tiny_backbone, root / "a")
    broken = copy_artifact(a, root / "broken")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    no_config = copy_artifact(a, root / "no_config")
    (no_config / "config.json").unlink()
    return {"a": a, "b": retag(a, root / "b", "bbbbbbbb"), "broken": broken, "no_config": no_config}


def serve(artifact: Path, client: tuple[str, int] = LOOPBACK, **settings) -> TestClient:
    engine = Engine(load_classifier(artifact, "torch"), artifact)
    engine.warm_up()
    app = create_app(engine, ServeSettings(runtime="torch", **settings))
    return TestClient(app, raise_server_exceptions=False, client=client)


def version(client: TestClient) -> str:
    response = client.post("/v1/predict", json=RECORD)
    assert response.status_code == 200, response.text
    return response.json()["model_version"]


def test_good_folder_swaps_and_every_answer_names_its_model(artifacts: dict[str, Path]) -> None:
    client = serve(artifacts["a"])
    version_a = version(client)
    response = client.post("/v1/admin/reload", json={"model": str(artifacts["b"])})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["previous_model_version"] == version_a and body["model_version"] != version_a
    assert body["parity"] is None and body["runtime"] == "torch"  # torch: no ONNX parity to check
    assert version(client) == body["model_version"]
    batch = client.post("/v1/predict/batch", json={"items": make_records(3, 1)}).json()
    assert {r["model_version"] for r in batch["results"]} == {batch["model_version"]} == {body["model_version"]}
    info = client.get("/v1/model").json()
    assert info["model_version"] == body["model_version"] and info["model_dir"] == str(artifacts["b"])
    assert [r["model_version"] for r in info["reloads"]] == [body["model_version"]]
    assert client.get("/readyz").json()["model_version"] == body["model_version"]
    again = client.post("/v1/admin/reload", json={})  # {} re-reads the folder being served (as SIGHUP does)
    assert again.status_code == 200 and again.json()["model_dir"] == str(artifacts["b"])
    metrics = client.get("/metrics").text
    assert 'irp_model_reloads_total{result="ok"} 2.0' in metrics
    replica = client.get("/readyz").json()["replica_id"]
    assert f'irp_model_info{{replica="{replica}",runtime="torch",version="{body["model_version"]}"}} 1.0' in metrics
    assert f',version="{version_a}"' not in metrics  # irp_model_info follows the swap (counters keep their label)


@pytest.mark.parametrize("folder", ["broken", "no_config", "missing"])
def test_a_failing_folder_answers_409_and_the_old_model_keeps_serving(artifacts: dict[str, Path], tmp_path: Path,
                                                                      folder: str) -> None:
    client = serve(artifacts["a"])
    before = version(client)
    path = artifacts.get(folder, tmp_path / "nowhere")
    response = client.post("/v1/admin/reload", json={"model": str(path)})
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["field"] == "model" and str(path) in body["detail"] and f"still serving {before}" in body["detail"]
    assert version(client) == before and client.get("/readyz").status_code == 200
    assert 'irp_model_reloads_total{result="failed"} 1.0' in client.get("/metrics").text


def test_reload_bodies_are_checked(artifacts: dict[str, Path]) -> None:
    client = serve(artifacts["a"])
    for body, field in (({"model": 3}, "model"), ({"model": ""}, "model"), ({"model": "a\u0000b"}, "model"),
                        ({"modle": "x"}, "modle"), ([], "body"), ({"model": "x" * 5000}, "model")):
        response = client.post("/v1/admin/reload", json=body)
        assert response.status_code == 422 and response.json()["field"] == field, (body, response.text)
    assert client.post("/v1/admin/reload", content=b"{").status_code == 400
    empty = client.post("/v1/admin/reload", content=b"")  # {} reloads the served folder; nothing at all is a 400
    assert empty.status_code == 400 and empty.json()["field"] == "body"


def test_reload_needs_the_token_or_loopback(artifacts: dict[str, Path]) -> None:
    body = {"model": str(artifacts["b"])}
    with_token = serve(artifacts["a"], client=("10.0.0.7", 4000), token="s3cret")
    assert with_token.post("/v1/admin/reload", json=body).status_code == 401
    wrong = with_token.post("/v1/admin/reload", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    ok = with_token.post("/v1/admin/reload", json=body, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200  # with a token, from anywhere
    tokenless_remote = serve(artifacts["a"], client=("10.0.0.7", 4000))
    refused = tokenless_remote.post("/v1/admin/reload", json=body)
    assert refused.status_code == 403 and refused.json()["field"] == "client"
    assert tokenless_remote.post("/v1/predict", json=RECORD).status_code == 200  # only admin is loopback-only


def test_swaps_under_concurrent_requests_fail_none(artifacts: dict[str, Path]) -> None:
    client = serve(artifacts["a"])
    versions = {version(client)}
    statuses: list[int] = []
    seen: set[str] = set()
    stop = threading.Event()
    lock = threading.Lock()

    def worker(k: int) -> None:
        i = 0
        while not stop.is_set():
            response = client.post("/v1/predict", json=dict(RECORD, id=f"{k}-{i}"))
            i += 1
            with lock:
                statuses.append(response.status_code)
                if response.status_code == 200:
                    seen.add(response.json()["model_version"])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    try:
        for folder in ("b", "a", "b"):
            response = client.post("/v1/admin/reload", json={"model": str(artifacts[folder])})
            assert response.status_code == 200, response.text
            versions.add(response.json()["model_version"])
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert statuses and set(statuses) == {200}
    assert seen <= versions and len(seen) == 2


def test_onnx_parity_is_checked_before_the_swap(artifacts: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from irp.export import export_onnx

    exported = copy_artifact(artifacts["b"], tmp_path / "b_onnx")
    export_onnx(exported, data=None, max_records=40)
    engine = Engine(load_classifier(artifacts["a"], "torch"), artifacts["a"])
    engine.warm_up()
    client = TestClient(create_app(engine, ServeSettings(runtime="onnx-fp32")), client=LOOPBACK,
                        raise_server_exceptions=False)
    ok = client.post("/v1/admin/reload", json={"model": str(exported)})
    assert ok.status_code == 200, ok.text
    parity = ok.json()["parity"]
    assert ok.json()["runtime"] == "onnx-fp32" and parity["passed"] and parity["max_abs_diff"] <= 1e-4
    # An export whose own parity check failed (installed with --force) is refused, the served model stays.
    info_path = exported / "onnx" / "export.json"
    info = json.loads(info_path.read_text())
    info["parity"]["fp32"]["passed"] = False
    info_path.write_text(json.dumps(info))
    refused = client.post("/v1/admin/reload", json={"model": str(exported)})
    assert refused.status_code == 409 and "parity" in refused.json()["detail"]
    assert version(client) == ok.json()["model_version"]
