"""Replicas sharing a real Redis (`--state redis://...`): offers and answers add up exactly across replicas, the
session cooldown holds fleet-wide, feedback logged by one replica joins the decision of another, and a Redis that
stops or freezes mid-run costs no 5xx and no offer (propensity 0), and is recovered from by itself.

In-process apps (TestClient) on the tiny artifact, one redis-server subprocess per test (tests/redis_server.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from typer.testing import CliRunner

from conftest import make_records
from irp.logs import join_logs, scan_log_dir
from irp.serve import DecisionLog, Engine, RedisState, ServeSettings, create_app
from test_export import train_tiny, warm_engine
from test_reload import retag
from test_fuzz_serve import FUZZ, check_feedback, encode, feedback_body

EVENTS = ("offer_accepted", "offer_declined", "carousel_tap", "no_tap")


@pytest.fixture(scope="module")
def engine(tiny_backbone: str, tmp_path_factory) -> Engine:
    artifact = train_tiny(tiny_backbone, tmp_path_factory.mktemp("fleet") / "model")
    return warm_engine(artifact)


@pytest.fixture
def offer_everything(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.classifier, "threshold_", 0.0)  # every record image-seeking: offered when eligible


def replica(engine: Engine, url: str, replica_id: str, log_dir: Path | None = None, cooldown_s: float = 600,
            **state: float) -> tuple[TestClient, DecisionLog | None, RedisState]:
    shared = RedisState(url, **state)
    log = DecisionLog(log_dir, flush_interval=0.02, replica_id=replica_id) if log_dir is not None else None
    app = create_app(engine, ServeSettings(cooldown_s=cooldown_s, replica_id=replica_id), log, shared)
    # A loopback client: the admin endpoint of a tokenless server answers loopback clients only.
    return TestClient(app, raise_server_exceptions=False, client=("127.0.0.1", 50000)), log, shared


def scrape(client: TestClient) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def by_version(samples: dict, name: str) -> dict:
    return {dict(labels)["model_version"] if len(labels) == 1 else tuple(v for _, v in labels): value
            for (n, labels), value in samples.items() if n == name}


def test_two_replicas_add_up_exactly_and_share_the_cooldown(engine: Engine, offer_everything: None, redis_server,
                                                             tmp_path: Path) -> None:
    """Requests alternate between replicas A and B, each request's feedback goes to the other one."""
    a, log_a, _ = replica(engine, redis_server.url, "replica-a", tmp_path)
    b, log_b, _ = replica(engine, redis_server.url, "replica-b", tmp_path)
    for client in (a, b):
        scrape(client)  # Prometheus's first scrape: every series at 0
    records = [{k: v for k, v in r.items() if k != "label"} for r in make_records(48, 5)]
    sent = dict.fromkeys(EVENTS, 0)
    offered, answers = [], []
    for i, record in enumerate(records):
        # 12 sessions, each asked 4 times in a row, alternating replicas; every 6th record has no session
        session = None if i % 6 == 5 else f"s{i // 4}"
        first, other = (a, b) if i % 2 == 0 else (b, a)
        answer = first.post("/v1/predict", json={**record, "id": f"r{i}", "session_id": session}).json()
        answers.append((answer, session, first is a))
        events = ["carousel_tap" if i % 3 else "no_tap"]
        if answer["suggest_switch"]:
            offered.append(answer["id"])
            events.append("offer_accepted" if i % 4 else "offer_declined")
        items = [{"id": answer["id"], "event": e} for e in events]
        assert other.post("/v1/feedback", json={"items": items}).status_code == 200
        assert other.post("/v1/feedback", json={"items": items}).status_code == 200  # a client retry: counted once
        for e in events:
            sent[e] += answer["suggest_switch"]  # answers count only after an offer
    # The cooldown is fleet-wide: each session got exactly one offer (its first request, on whichever replica),
    # although its next request went to the other replica.
    sessions = {}
    for answer, session, _ in answers:
        if session is not None:
            sessions.setdefault(session, []).append(answer["suggest_switch"])
    assert all(flags == [True] + [False] * (len(flags) - 1) for flags in sessions.values()), sessions
    assert any(not on_a for (ans, s, on_a) in answers if s is not None and not ans["suggest_switch"])  # refused on B
    assert all(ans["suggest_switch"] for ans, s, _ in answers if s is None)
    # Counters summed over the replicas equal the offers and the answers exactly; nothing is `unknown`.
    ma, mb = scrape(a), scrape(b)
    version = engine.version
    offers = {v: by_version(ma, "irp_offers_total").get(v, 0) + by_version(mb, "irp_offers_total").get(v, 0)
              for v in (version,)}
    assert offers == {version: len(offered)}
    for event in EVENTS:
        key = ("irp_offer_answers_total", (("event", event), ("model_version", version)))
        assert ma[key] + mb[key] == sent[event], event
    for samples in (ma, mb):
        assert {dict(labels).get("model_version") for (n, labels) in samples if n in ("irp_offers_total", "irp_offer_answers_total")} == {version}
        assert samples[("irp_feedback_unmatched_answers_total", ())] == 0
        assert samples[("irp_state_up", ())] == 1
    # Feedback logged by one replica joins the decision logged by the other, exactly.
    log_a.close(), log_b.close()
    names = sorted(p.name for p in tmp_path.rglob("*.parquet"))
    assert any(n.startswith("replica-a-") for n in names) and any(n.startswith("replica-b-") for n in names), names
    decisions, feedback, scan = scan_log_dir(tmp_path)
    assert scan.foreign_files == scan.invalid_lines == 0 and len(decisions) == len(records)
    report, joined = join_logs(tmp_path, None, label="accept")
    assert report.records == len(offered) and report.dropped.get("unknown_feedback", 0) == 0
    expected = {f"r{i}": int(bool(i % 4)) for i in range(len(records)) if f"r{i}" in offered}
    assert {r["id"]: r["accepted"] for r in joined} == expected


def test_redis_stopped_or_frozen_no_5xx_no_offers_and_back_by_itself(engine: Engine, offer_everything: None,
                                                                    redis_server, tmp_path: Path) -> None:
    client, log, shared = replica(engine, redis_server.url, "r1", tmp_path, cooldown_s=0, retry_after_s=0.3)
    records = [{k: v for k, v in r.items() if k != "label"} for r in make_records(10, 7)]
    n = [0]

    def ask(k: int = 6) -> list[tuple[int, bool, float]]:
        out = []
        for _ in range(k):
            n[0] += 1
            started = time.perf_counter()
            response = client.post("/v1/predict", json={**records[n[0] % 10], "id": f"q{n[0]}", "session_id": "s"})
            fb = client.post("/v1/feedback", json={"id": f"q{n[0]}", "event": "offer_accepted"})
            assert fb.status_code == 200, fb.text
            out.append((response.status_code, response.json()["suggest_switch"], time.perf_counter() - started))
        return out

    assert all(offer for _, offer, _ in ask(3))  # cooldown 0: every request offered while the store is up
    scrape(client)  # the first scrape: series at 0
    for outage, start, end in (("stopped", redis_server.stop, redis_server.start),
                               ("frozen", redis_server.freeze, redis_server.thaw)):
        offered = client.post("/v1/predict", json={**records[0], "id": f"before-{outage}", "session_id": None})
        assert offered.json()["suggest_switch"]
        start()
        # The answer to an offer made before the outage cannot be attributed now: it waits, and counts once back.
        assert client.post("/v1/feedback", json={"id": f"before-{outage}", "event": "no_tap"}).status_code == 200
        during = ask(8)
        assert all(status == 200 and not offer for status, offer, _ in during), (outage, during)
        # Within the state timeout (50 ms) plus the model's own time; never the client library's 5 s default.
        assert max(seconds for _, _, seconds in during) < 1.0, (outage, during)
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["state"]["ok"] is False, ready.text
        assert ready.json()["state"]["error"], ready.text
        info = client.get("/v1/model").json()["state"]
        assert info["ok"] is False and info["errors"]["decide"] >= 1
        end()
        deadline = time.monotonic() + 10
        while not any(offer for _, offer, _ in ask(1)):  # offers resume by themselves
            assert time.monotonic() < deadline, f"no offer 10 s after Redis was {outage} and back"
            time.sleep(0.1)
        assert client.get("/readyz").json()["state"]["ok"] is True
        assert client.get("/readyz").json()["state"]["feedback_waiting"] == 0  # counted with the next feedback
    scrape(client)  # the restarted Redis forgot which series were exported: they read 0 once more
    samples = scrape(client)
    # The frozen Redis kept the offer record and its answer counted once it was back (the timed-out call that ran
    # late is recognised by its token); the stopped one restarted empty (no persistence): nothing to attribute to.
    assert samples[("irp_offer_answers_total", (("event", "no_tap"), ("model_version", engine.version)))] == 1
    assert samples[("irp_state_errors_total", (("operation", "decide"),))] >= 2
    assert not [k for k, v in samples.items() if k[0] == "irp_http_errors_total" and ("kind", "server") in k[1] and v]
    # The log stays exact for off-policy evaluation: what could not be offered was not eligible, propensity 0.
    log.close()
    decisions, _, _ = scan_log_dir(tmp_path)
    assert decisions and all(d["suggest_switch"] == (d["propensity"] == 1.0) for d in decisions)
    assert all(not d["eligible"] and d["propensity"] == 0.0 for d in decisions if not d["suggest_switch"])


def test_rolling_swap_one_replica_at_a_time(engine: Engine, redis_server, tmp_path: Path) -> None:
    """A -> B on two replicas, one at a time, requests and feedback flowing throughout: every answer names the
    version that scored it, the mixed period shows offers and answers per version, a bad folder stops the roll."""
    from irp.serve.rolling import RollError, rolling_reload

    model_b = retag(engine.model_dir, tmp_path / "b", "bbbbbbbb")
    r1, _, _ = replica(engine, redis_server.url, "r1", cooldown_s=0)
    r2, _, _ = replica(engine, redis_server.url, "r2", cooldown_s=0)
    for client in (r1, r2):
        scrape(client)
    records = [{k: v for k, v in r.items() if k != "label"} for r in make_records(60, 11)]
    offers: dict = {}
    accepted: dict = {}
    served: list[tuple[str, str]] = []  # (replica, version) per answer

    def traffic(part: list[dict], tag: str) -> None:
        for i, record in enumerate(part):
            first, other = (r1, r2) if i % 2 == 0 else (r2, r1)
            answer = first.post("/v1/predict", json={**record, "id": f"{tag}{i}"})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            served.append((body["replica_id"], body["model_version"]))
            if body["suggest_switch"]:
                offers[body["model_version"]] = offers.get(body["model_version"], 0) + 1
                accepted[body["model_version"]] = accepted.get(body["model_version"], 0) + 1
                assert other.post("/v1/feedback", json={"id": body["id"], "event": "offer_accepted"}).status_code == 200

    traffic(records[:20], "a")
    version_a = engine.version
    [first] = rolling_reload([r1], str(model_b))
    version_b = first["model_version"]
    assert version_b != version_a and first["replica_id"] == "r1"
    traffic(records[20:40], "m")  # the mixed period: r1 serves B, r2 still A
    assert {v for r, v in served[20:40] if r == "r1"} == {version_b}
    assert {v for r, v in served[20:40] if r == "r2"} == {version_a}
    with pytest.raises(RollError, match="r2|50000|testserver|409"):
        rolling_reload([r2], str(tmp_path / "missing"))  # a bad folder: stopped, r2 still serves A
    assert r2.get("/readyz").json()["model_version"] == version_a
    rolling_reload([r2], str(model_b))
    traffic(records[40:], "b")
    assert {v for _, v in served[40:]} == {version_b}
    # Prometheus's view of the mixed period: offers and answers per version, summed over the replicas.
    scrape(r1), scrape(r2)  # B's series read 0 on their first scrape (Prometheus's baseline), counts from the next
    s1, s2 = scrape(r1), scrape(r2)
    for version in (version_a, version_b):
        key = ("irp_offers_total", (("model_version", version),))
        assert s1.get(key, 0) + s2.get(key, 0) == offers.get(version, 0), version
        key = ("irp_offer_answers_total", (("event", "offer_accepted"), ("model_version", version)))
        assert s1.get(key, 0) + s2.get(key, 0) == accepted.get(version, 0), version
    assert offers.get(version_a) and offers.get(version_b)  # both versions made offers


def test_counts_survive_a_restarted_replica(engine: Engine, offer_everything: None, redis_server) -> None:
    """With Redis the counters live in the store: a replica killed after counting (nothing scraped since) and
    restarted with its id exports every count, with no reset and nothing lost."""
    r1, _, _ = replica(engine, redis_server.url, "r1", cooldown_s=0)
    scrape(r1)  # series shown at 0
    ids = [r1.post("/v1/predict", json={"id": f"k{i}", "utterance": "red dress"}).json()["id"] for i in range(5)]
    r1.post("/v1/feedback", json={"items": [{"id": i, "event": "offer_accepted"} for i in ids]})
    del r1  # killed before any scrape saw these counts
    again, _, _ = replica(engine, redis_server.url, "r1", cooldown_s=0)
    samples = scrape(again)
    assert samples[("irp_offers_total", (("model_version", engine.version),))] == 5
    assert samples[("irp_offer_answers_total", (("event", "offer_accepted"), ("model_version", engine.version)))] == 5


def test_unusable_state_exits_2_naming_the_flag(tmp_path: Path) -> None:
    from irp.cli import app

    runner = CliRunner()
    for value in ("mongodb://x:1/0", "redis://127.0.0.1:notaport/0", "redis:///0", "redis://h:1/zero", "nothing"):
        result = runner.invoke(app, ["serve", "--model", str(tmp_path), "--state", value])
        assert result.exit_code == 2, (value, result.output)
        assert "--state" in result.output, (value, result.output)
    result = runner.invoke(app, ["serve", "--model", str(tmp_path), "--replica-id", "a/b"])
    assert result.exit_code == 2 and "--replica-id" in result.output


@pytest.fixture(scope="module")
def redis_client(engine: Engine, tmp_path_factory):
    from redis_server import RedisServer

    server = RedisServer().start()
    app = create_app(engine, ServeSettings(replica_id="fuzz"), DecisionLog(tmp_path_factory.mktemp("fuzzlog")),
                     RedisState(server.url))
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client
    finally:
        server.stop()


@settings(FUZZ, max_examples=300)
@given(body=feedback_body)
def test_fuzz_feedback_with_redis_state(redis_client: TestClient, body: object) -> None:
    check_feedback(redis_client.post("/v1/feedback", content=encode(body)))
