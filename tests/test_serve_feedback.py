"""Serving with a decision log: logged decisions (exact propensity), /v1/feedback (validation, batch, auth),
the live precision of offers, and the Prometheus signals. In-process (TestClient) on a tiny artifact."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest import make_records
from irp.logs import scan_log_dir
from irp.serve import DecisionLog, Engine, ServeSettings, create_app, wilson_interval
from test_export import train_tiny, warm_engine


@pytest.fixture(scope="module")
def engine(tiny_backbone: str, tmp_path_factory) -> Engine:
    artifact = train_tiny(tiny_backbone, tmp_path_factory.mktemp("feedback") / "model")
    return warm_engine(artifact)


def served(engine: Engine, folder: Path | None, **settings) -> tuple[TestClient, DecisionLog | None]:
    log = DecisionLog(folder, flush_interval=0.02) if folder is not None else None
    client = TestClient(create_app(engine, ServeSettings(**settings), log), raise_server_exceptions=False)
    return client, log


def metric_samples(client: TestClient) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_every_answer_is_logged_with_the_exact_propensity(engine: Engine, tmp_path: Path) -> None:
    client, log = served(engine, tmp_path, explore_rate=0.4, seed=3, cooldown_s=0)
    records = [dict(r, session_id=f"s{i % 5}", screen_available=None if i % 4 else False)
               for i, r in enumerate(make_records(40, 9))]
    answers = client.post("/v1/predict/batch", json={"items": records[:30]}).json()["results"]
    answers += [client.post("/v1/predict", json=r).json() for r in records[30:]]
    log.close()
    decisions, _, scan = scan_log_dir(tmp_path)
    assert scan.torn_lines == scan.invalid_lines == 0 and len(decisions) == 40
    by_id = {d["id"]: d for d in decisions}
    for record, answer in zip(records, answers):
        d = by_id[answer["id"]]
        assert d["probability"] == answer["probability"] and d["suggest_switch"] == answer["suggest_switch"]
        assert d["model_version"] == engine.version and d["record"]["utterance"] == record["utterance"]
        assert d["session_id"] == record["session_id"] and "label" not in d["record"]
        assert d["policy"] == {"name": "threshold+cooldown+explore", "cooldown_s": 0.0, "explore_rate": 0.4}
        if record["screen_available"] is False:
            assert not d["eligible"] and d["propensity"] == 0.0 and not d["suggest_switch"]
        else:  # (1 - E) [p >= t] + E / 2
            assert d["eligible"] and d["propensity"] == pytest.approx(0.6 * d["image_seeking"] + 0.2)
    assert any(d["explored"] for d in decisions)


def test_exploration_is_reproducible_with_a_seed(engine: Engine) -> None:
    records = [dict(r, session_id=None) for r in make_records(30, 4)]

    def offers(seed: int) -> list[bool]:
        client, _ = served(engine, None, explore_rate=0.5, seed=seed)
        return [a["suggest_switch"] for a in client.post("/v1/predict/batch", json={"items": records}).json()["results"]]

    assert offers(7) == offers(7)


def test_feedback_single_and_batch_are_logged(engine: Engine, tmp_path: Path) -> None:
    client, log = served(engine, tmp_path)
    one = client.post("/v1/feedback", json={"id": "a1", "event": "offer_accepted", "ts": 1_700_000_000.5})
    assert one.status_code == 200 and one.json() == {"accepted": 1, "logged": 1, "model_version": engine.version,
                                                     "replica_id": one.json()["replica_id"]}
    items = [{"id": f"b{i}", "event": e} for i, e in enumerate(["carousel_tap", "no_tap", "offer_declined"] * 3)]
    batch = client.post("/v1/feedback", json={"items": items})
    assert batch.status_code == 200 and batch.json()["accepted"] == 9
    assert client.post("/v1/feedback", json={"items": []}).json()["accepted"] == 0
    assert client.post("/v1/feedback", json={"id": 42, "event": "no_tap"}).status_code == 200  # int ids, as records
    log.close()
    _, feedback, scan = scan_log_dir(tmp_path)
    assert len(feedback) == 11 and scan.invalid_lines == 0
    assert feedback[0] == {"schema": 2, "kind": "feedback", "id": "a1", "event": "offer_accepted",
                           "ts": 1_700_000_000.5, "received_ts": feedback[0]["received_ts"]}
    assert feedback[-1]["id"] == "42" and feedback[1]["ts"] == feedback[1]["received_ts"]  # ts defaults to receipt


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"event": "no_tap"}, "id"),
        ({"id": "", "event": "no_tap"}, "id"),
        ({"id": ["a"], "event": "no_tap"}, "id"),
        ({"id": True, "event": "no_tap"}, "id"),
        ({"id": "x" * 257, "event": "no_tap"}, "id"),
        ({"id": "a"}, "event"),
        ({"id": "a", "event": "tap"}, "event"),
        ({"id": "a", "event": 1}, "event"),
        ({"id": "a", "event": "no_tap", "ts": "yesterday"}, "ts"),
        ({"id": "a", "event": "no_tap", "ts": -1}, "ts"),
        ({"id": "a", "event": "no_tap", "ts": 1_700_000_000_000}, "ts"),  # milliseconds
        ({"id": "a", "event": "no_tap", "ts": True}, "ts"),
        ([{"id": "a", "event": "no_tap"}], "body"),
        ({"items": {"id": "a"}}, "items"),
        ({"items": [{"id": "a", "event": "no_tap"}, {"id": "b", "event": "nope"}]}, "items[1].event"),
        ({"items": [{"id": "a", "event": "no_tap"}] * 257}, "items"),
        ({"items": [7]}, "items[0]"),
        ({"id": " ", "event": "no_tap"}, "id"),
        ({"id": 2**63, "event": "no_tap"}, "id"),
        ({"id": "a", "event": "no_tap", "timestamp": 1}, "timestamp"),  # a typo is not silently ignored
        ({"items": [{"id": "a", "event": "no_tap"}], "id": "b"}, "id"),
        ({"items": [{"id": "a", "event": "no_tap", "x": 1}]}, "items[0].x"),
    ],
)
def test_bad_feedback_gets_422_naming_the_field(engine: Engine, tmp_path: Path, body: object, field: str) -> None:
    client, log = served(engine, tmp_path)
    response = client.post("/v1/feedback", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field and response.json()["detail"].startswith(f"{field}: ")
    log.close()
    assert not scan_log_dir(tmp_path)[1]  # a rejected body logs nothing, not even its valid items


def test_feedback_needs_the_token(engine: Engine) -> None:
    client, _ = served(engine, None, token="s3cret")
    assert client.post("/v1/feedback", json={"id": "a", "event": "no_tap"}).status_code == 401
    ok = client.post("/v1/feedback", json={"id": "a", "event": "no_tap"}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200


def test_live_precision_of_offers_in_model_info_and_metrics(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.classifier, "threshold_", 0.0)  # every record offered
    client, _ = served(engine, None, cooldown_s=0)
    ids = [r["id"] for r in client.post("/v1/predict/batch", json={"items": make_records(10, 3)}).json()["results"]]
    events = [{"id": i, "event": "offer_accepted" if k < 7 else "offer_declined"} for k, i in enumerate(ids)]
    events += [{"id": ids[0], "event": "offer_accepted"}, {"id": "stranger", "event": "offer_declined"},
               {"id": ids[1], "event": "carousel_tap"}, {"id": ids[1], "event": "carousel_tap"},
               {"id": ids[2], "event": "no_tap"}, {"id": "stranger", "event": "carousel_tap"}]
    assert client.post("/v1/feedback", json={"items": events}).status_code == 200
    info = client.get("/v1/model").json()
    live = info["live_precision"]
    # 7 accepted of the 10 offers, the repeated answer counted once, the stranger's decline not counted (no offer
    # remembered: no model version to hold it against)
    assert (live["answers"], live["accepted"]) == (10, 7)
    assert live["ci"] == pytest.approx(list(wilson_interval(7, 10)))
    assert info["live_precision_current_model"]["answers"] == 10
    assert info["live_precision_current_model"]["precision"] == pytest.approx(0.7)
    assert "promised_precision" in info and "promise" in info
    # taps after this server's offers: ids[1] tapped (its retry counted once), ids[2] did not; the stranger's
    # tap follows no offer of this server and is not counted
    tap = info["live_tap_precision"]
    assert (tap["answers"], tap["accepted"], tap["precision"]) == (2, 1, 0.5)
    assert info["live_tap_precision_current_model"]["answers"] == 2
    v = engine.version
    assert info["counts"] == {"offers": {v: 10}, "answers": {v: {"offer_accepted": 7, "offer_declined": 3,
                                                                 "carousel_tap": 1, "no_tap": 1}}}
    first = metric_samples(client)  # a version's series read 0 on their first scrape (Prometheus's baseline)
    assert first[("irp_offers_total", (("model_version", v),))] == 0
    assert first[("irp_offer_answers_total", (("event", "offer_accepted"), ("model_version", v)))] == 0
    samples = metric_samples(client)
    assert samples[("irp_offers_total", (("model_version", v),))] == 10
    answers = {e: samples[("irp_offer_answers_total", (("event", e), ("model_version", v)))]
               for e in ("offer_accepted", "offer_declined", "carousel_tap", "no_tap")}
    assert answers == {"offer_accepted": 7, "offer_declined": 3, "carousel_tap": 1, "no_tap": 1}
    assert not any(name.startswith("irp_live") for name, _ in samples)  # ratios are recording rules, not gauges
    assert samples[("irp_switch_suggestions_total", ())] == 10
    assert samples[("irp_feedback_events_total", (("event", "offer_accepted"),))] == 8
    assert samples[("irp_feedback_events_total", (("event", "carousel_tap"),))] == 3
    assert samples[("irp_feedback_unmatched_answers_total", ())] == 1
    if info["promised_precision"] is not None:
        assert samples[("irp_promised_precision", (("model_version", v),))] == pytest.approx(info["promised_precision"])


def test_a_full_log_queue_drops_counts_and_still_answers(engine: Engine, tmp_path: Path) -> None:
    log = DecisionLog(tmp_path, max_queue=2, flush_interval=30.0)  # tiny; the writer wakes only when half full
    client = TestClient(create_app(engine, ServeSettings(), log), raise_server_exceptions=False)
    batch = client.post("/v1/predict/batch", json={"items": make_records(5, 1)})
    assert batch.status_code == 200 and len(batch.json()["results"]) == 5
    fb = client.post("/v1/feedback", json={"items": [{"id": "a", "event": "no_tap"}] * 5})
    assert fb.status_code == 200 and fb.json()["accepted"] == 5 and fb.json()["logged"] <= 2
    fb_dropped = 5 - fb.json()["logged"]
    samples = metric_samples(client)
    assert samples[("irp_decision_log_dropped_total", (("kind", "decision"),))] == 3
    assert samples[("irp_decision_log_dropped_total", (("kind", "feedback"),))] == fb_dropped
    assert client.get("/v1/model").json()["decision_log"]["dropped"] == {"decision": 3, "feedback": fb_dropped}
    assert log.close()["written"] == {"decision": 2, "feedback": 5 - fb_dropped}


def test_shutdown_closes_the_log(engine: Engine, tmp_path: Path) -> None:
    log = DecisionLog(tmp_path, flush_interval=30.0)
    with TestClient(create_app(engine, ServeSettings(), log)) as client:  # `with`: lifespan startup/shutdown
        client.post("/v1/predict/batch", json={"items": make_records(7, 2)})
        assert not scan_log_dir(tmp_path)[0]
    assert log.closed and len(scan_log_dir(tmp_path)[0]) == 7 and not any(
        p.name.startswith(".") for p in tmp_path.iterdir())


def test_the_alert_rules_name_metrics_the_server_exports(engine: Engine, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy/prometheus/rules.yml parses, and every irp_* series it queries is one that /metrics exposes (the
    recorded series, `level:irp_...:window`, are the rules' own)."""
    import re

    yaml = pytest.importorskip("yaml")
    rules = yaml.safe_load((Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "rules.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    alerts = [rule["expr"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule]
    for window in ("irp_live_precision", "irp_live_tap_precision"):  # one rule per label the promise can be on
        assert any(f"model_version:{window}_upper:1h" in e and "irp_promised_precision" in e for e in alerts), window
    monkeypatch.setattr(engine.classifier, "threshold_", 0.0)  # every record offered
    client, log = served(engine, tmp_path, cooldown_s=0)
    assert client.post("/v1/predict", json={"id": "r1", "utterance": "red dress"}).json()["suggest_switch"]
    client.post("/v1/feedback", json={"items": [{"id": "r1", "event": "offer_declined"},
                                                {"id": "r1", "event": "carousel_tap"}]})  # both windows exposed
    client.post("/v1/predict", json={"utterance": "red dress"})
    client.post("/v1/predict", json={"utterance": ""})  # an error response: irp_http_errors_total exists
    names = {name for name, _ in metric_samples(client)}
    log.close()
    assert engine.promised_precision is not None and "irp_promised_precision" in names
    for expr in exprs:
        for name in re.findall(r"(?<![:\w])irp_[a-z_]+", expr):
            assert name in names, (name, sorted(names))
