"""A fleet on loopback, all real parts: Redis, 3 `irp serve` replicas, HAProxy, Prometheus with the shipped rules.

    .venv/bin/python bench/fleet.py --out DIR [--requests 20000] [--concurrency 16] [--cooldown 30]

1. Models: a tiny randomly initialised encoder (the tests' `build_tiny_encoder`, 2 layers, hidden 32) trained a
   few steps on `irp simulate` records: model A, and model B (another seed: another version); both exported to
   ONNX fp32 (`irp export-onnx`), served with `--runtime onnx-fp32`. Small on purpose: the run measures the
   fleet (state, balancer, metrics, logs), not the model.
2. Latency of the shared state: two more replicas of A, one `--state memory`, one `--state redis://` (the same
   Redis), each alone at concurrency 1, single /v1/predict requests with a session, interleaved in rounds:
   p50 of each, same run.
3. The fleet: Redis; replicas r1..r3 (`--state redis://`, `--log-dir` one shared folder, `--replica-id`);
   HAProxy (round robin, no affinity, health checks on /readyz, retry + redispatch on connection failure); a
   Prometheus server scraping the replicas every second with deploy/prometheus/rules.yml.
4. `--requests` simulated requests through HAProxy at `--concurrency`, each followed by its feedback (tap or
   no tap; accepted or declined when offered), also through HAProxy. Sessions come back within the cooldown.
   At 30 % of the requests: a rolling reload A -> B (`irp.serve.rolling`, one replica at a time). At 60 %:
   r3 is SIGKILLed (its in-flight requests read from HAProxy's stats socket just before) and restarted with
   the same replica id.
5. After the traffic (and 3 s of scrapes): Prometheus's fleet-wide numbers from its HTTP query API (the
   recording rules) against `irp logs join` over the shared log folder (every replica's files).

Writes DIR/fleet.json; keeps the logs, configs and the joined files under DIR/run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
IRP = [sys.executable, "-m", "irp.cli"]
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200",
                    "NO_PROXY": "*", "no_proxy": "*"}
LATENT = ("label", "true_intent", "true_category", "user_id")
LOG_QUEUE = 10_000  # --log-queue of every replica: the bound of what a SIGKILL can lose from its decision log
SCRAPE_S = 1


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def irp(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(IRP + list(args), capture_output=True, text=True, env=ENV)
    if done.returncode != 0:
        raise SystemExit(f"irp {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited ({proc.returncode})")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} not ready within {timeout} s")


class Replica:
    """`irp serve` as a child process; `start` again after a kill reuses the port and the replica id."""

    def __init__(self, name: str, model: Path, state: str, log_dir: Path | None, run: Path, cooldown: float,
                 port: int | None = None, cpus: str | None = None) -> None:
        self.name, self.model, self.state, self.log_dir, self.run = name, model, state, log_dir, run
        self.cooldown, self.cpus = cooldown, cpus
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, model: Path | None = None) -> Replica:
        self.model = model or self.model
        args = ["serve", "--model", str(self.model), "--port", str(self.port), "--runtime", "onnx-fp32",
                "--state", self.state, "--replica-id", self.name, "--cooldown", str(self.cooldown),
                "--workers", "2", "--threads", "1"]
        if self.log_dir is not None:
            args += ["--log-dir", str(self.log_dir), "--log-queue", str(LOG_QUEUE)]
        prefix = ["taskset", "-c", self.cpus] if self.cpus else []
        with open(self.run / f"{self.name}.stderr", "a") as err:
            self.proc = subprocess.Popen(prefix + IRP + args, stdout=err, stderr=subprocess.STDOUT, env=ENV)
        return self

    def wait_ready(self) -> None:
        assert self.proc is not None
        wait_http(self.url + "/readyz", self.proc, self.name)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


def start_redis(run: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--loglevel", "warning"], stdout=open(run / "redis.log", "w"),
                            stderr=subprocess.STDOUT)
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return proc, f"redis://127.0.0.1:{port}/0"
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def start_haproxy(run: Path, replicas: list[Replica]) -> tuple[subprocess.Popen, str, Path]:
    """The shipped deploy/haproxy/haproxy.cfg with this run's ports, plus a stats socket."""
    port, sock = free_port(), run / "haproxy.sock"
    cfg = (ROOT / "deploy" / "haproxy" / "haproxy.cfg").read_text()
    cfg = cfg.replace("bind 127.0.0.1:8080", f"bind 127.0.0.1:{port}")
    cfg = cfg.replace("    maxconn 4096", f"    maxconn 4096\n    stats socket {sock} mode 600 level admin"
                      "\n    log stdout format raw local0")
    # One line per request (REQUEST_LOG): which replica, when it was sent there, when it ended, how.
    cfg = cfg.replace("defaults\n", "defaults\n    log global\n    log-format \"REQ %s %Ts%ms %TR %Tw %Tc %Ta %ST %tsc %HU\"\n", 1)
    lines = [line for line in cfg.splitlines() if not line.strip().startswith("server r")]
    lines += [f"    server {r.name} 127.0.0.1:{r.port} check" for r in replicas]
    (run / "haproxy.cfg").write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(run / "haproxy.cfg")], stdout=open(run / "haproxy.log", "w"),
                            stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}", sock


REQUEST_LOG = re.compile(r"^REQ (\S+) (\d+) (-?\d+) (-?\d+) (-?\d+) (-?\d+) (-?\d+) (\S+) (\S+)$")


def inflight_from_request_log(log_path: Path, server: str, sent_before: float, ended_after: float) -> dict[str, int]:
    """Requests HAProxy had sent to `server` before the kill (`sent_before`, s) and that ended after it
    (`ended_after`): in flight at the kill, from HAProxy's own per-request timings (accept + TR + Tw + Tc = sent,
    accept + Ta = ended; ms). Predictions and all requests; and how many requests to `server` failed (5xx)."""
    out = {"predict": 0, "all": 0, "failed_on_server": 0}
    for line in log_path.read_text(errors="replace").splitlines():
        m = REQUEST_LOG.match(line)
        if m is None or m.group(1) != server:
            continue
        accept, tr, tw, tc, ta, status = (int(m.group(i)) for i in range(2, 8))
        if min(tr, tw, tc, ta) < 0:  # never connected to it (retried elsewhere) or aborted before
            out["failed_on_server"] += status >= 500
            continue
        sent, ended = (accept + tr + tw + tc) / 1000, (accept + ta) / 1000
        if sent <= sent_before and ended >= ended_after:
            out["all"] += 1
            out["predict"] += m.group(9).startswith("/v1/predict")
        out["failed_on_server"] += status >= 500
    return out


def haproxy_current_sessions(sock: Path, server: str) -> int | None:
    """HAProxy's `scur` of one backend server: requests it holds open right now."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return None
    lines = data.decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(",")))
        if row.get("svname") == server:
            return int(row["scur"] or 0)
    return None


def start_prometheus(run: Path, replicas: list[Replica]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    prom = run / "prometheus"
    prom.mkdir(exist_ok=True)
    shutil.copy(ROOT / "deploy" / "prometheus" / "rules.yml", prom / "rules.yml")
    targets = ", ".join(f'"127.0.0.1:{r.port}"' for r in replicas)
    (prom / "prometheus.yml").write_text(
        f"global:\n  scrape_interval: {SCRAPE_S}s\n  evaluation_interval: {SCRAPE_S}s\n"
        f"rule_files: [rules.yml]\nscrape_configs:\n  - job_name: irp\n"
        f"    static_configs:\n      - targets: [{targets}]\n")
    proc = subprocess.Popen(["prometheus", f"--config.file={prom / 'prometheus.yml'}",
                             f"--storage.tsdb.path={prom / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=open(run / "prometheus.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/-/ready", proc, "prometheus", timeout=60)
    return proc, url


def prom_query(url: str, expr: str) -> list[dict]:
    body = httpx.get(url + "/api/v1/query", params={"query": expr}, timeout=30).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


# ---- models ------------------------------------------------------------------------------------------------
def build_models(run: Path, seed: int) -> tuple[Path, Path, Path]:
    from irp.model.encoder import build_tiny_encoder

    backbone = build_tiny_encoder(run / "tiny_backbone")
    data = run / "sim.jsonl"
    irp("simulate", "--n", "6000", "--seed", str(seed), "--out", str(data))
    records = [json.loads(line) for line in data.read_text().splitlines()]
    for name, part in (("train", records[:2000]), ("valid", records[2000:3000])):
        (run / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    models = []
    for name, model_seed, steps in (("model_a", seed, 40), ("model_b", seed + 1, 50)):  # versions differ: the step
        irp("train", "--train", str(run / "train.jsonl"), "--valid", str(run / "valid.jsonl"), "--out",
            str(run / name), "--backbone", str(backbone), "--max-steps", str(steps), "--batch-size", "32", "--device",
            "cpu", "--seed", str(model_seed))
        irp("export-onnx", "--model", str(run / name))
        models.append(run / name)
    return models[0], models[1], data


def request_body(record: dict, rid: str, session: str | None) -> dict:
    body = {k: v for k, v in record.items() if k not in LATENT}
    body.update(id=rid, session_id=session)
    body.pop("screen_available", None)
    return body


# ---- step 2: p50 with and without the shared state -----------------------------------------------------------
def state_latency(run: Path, model: Path, redis_url: str, records: list[dict], rounds: int, per_round: int) -> dict:
    servers = {"memory": Replica("lat-memory", model, "memory", None, run, 30.0),
               "redis": Replica("lat-redis", model, redis_url, None, run, 30.0)}
    for s in servers.values():
        s.start()
    for s in servers.values():
        s.wait_ready()
    times: dict[str, list[float]] = {k: [] for k in servers}
    try:
        with httpx.Client(timeout=30) as client:
            for k, s in servers.items():  # warm-up
                for i in range(50):
                    client.post(s.url + "/v1/predict", json=request_body(records[i], f"w{k}{i}", f"ws{i}"))
            for r in range(rounds):
                for k, s in (servers.items() if r % 2 == 0 else reversed(servers.items())):
                    for i in range(per_round):
                        j = r * per_round + i
                        body = request_body(records[j % len(records)], f"l{k}{j}", f"ls{j % 50}")
                        started = time.perf_counter()
                        response = client.post(s.url + "/v1/predict", json=body)
                        times[k].append(time.perf_counter() - started)
                        assert response.status_code == 200, response.text
    finally:
        for s in servers.values():
            s.stop()
    p50 = {k: float(np.median(v) * 1000) for k, v in times.items()}
    return {"p50_ms_state_memory": round(p50["memory"], 4), "p50_ms_state_redis": round(p50["redis"], 4),
            "p50_added_by_redis_ms": round(p50["redis"] - p50["memory"], 4),
            "p99_ms_state_memory": round(float(np.percentile(times["memory"], 99) * 1000), 3),
            "p99_ms_state_redis": round(float(np.percentile(times["redis"], 99) * 1000), 3),
            "latency_requests_each": len(times["memory"])}


# ---- step 4: traffic ----------------------------------------------------------------------------------------
class Traffic:
    def __init__(self, n: int) -> None:
        self.n, self.next, self.inflight = n, 0, 0
        self.answers: list[dict] = []  # {id, replica, version, offer, t}
        self.failed: list[dict] = []  # {t0, t1, what}
        self.feedback_sent = 0
        self.feedback_other = 0
        self.feedback_failed: list[dict] = []
        self.events: dict[str, float] = {}


async def send(url: str, records: list[dict], traffic: Traffic, concurrency: int, sessions: int, seed: int) -> None:
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def worker() -> None:
            while traffic.next < traffic.n:
                i = traffic.next
                traffic.next += 1
                record = records[i % len(records)]
                body = request_body(record, f"q{i}", f"s{rng.randrange(sessions)}")
                t0 = time.time()
                traffic.inflight += 1
                try:
                    response = await client.post("/v1/predict", json=body)
                except httpx.HTTPError as e:
                    traffic.failed.append({"t0": t0, "t1": time.time(), "what": type(e).__name__})
                    continue
                finally:
                    traffic.inflight -= 1
                if response.status_code != 200:
                    traffic.failed.append({"t0": t0, "t1": time.time(), "what": f"HTTP {response.status_code}"})
                    continue
                answer = response.json()
                traffic.answers.append({"id": answer["id"], "replica": answer["replica_id"], "t": t0,
                                        "version": answer["model_version"], "offer": answer["suggest_switch"]})
                # The simulated user: taps the carousel as the log's label says; accepts an offer when the
                # intent is visual, 70 % of the time.
                items = [{"id": answer["id"], "event": "carousel_tap" if record["label"] else "no_tap"}]
                if answer["suggest_switch"]:
                    accepted = record.get("true_intent", record["label"]) == 1 and rng.random() < 0.7
                    items.append({"id": answer["id"], "event": "offer_accepted" if accepted else "offer_declined"})
                try:
                    fb = await client.post("/v1/feedback", json={"items": items})
                except httpx.HTTPError as e:
                    traffic.feedback_failed.append({"t0": t0, "what": type(e).__name__})
                    continue
                if fb.status_code != 200:
                    traffic.feedback_failed.append({"t0": t0, "what": f"HTTP {fb.status_code}"})
                    continue
                traffic.feedback_sent += 1
                traffic.feedback_other += fb.json()["replica_id"] != answer["replica_id"]

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def control(traffic: Traffic, replicas: list[Replica], model_b: Path, sock: Path) -> None:
    """The rolling reload at 30 % of the requests, the SIGKILL of r3 at 60 %."""
    from irp.serve.rolling import rolling_reload

    while traffic.next < 0.3 * traffic.n:
        await asyncio.sleep(0.05)
    traffic.events["reload_start"] = time.time()
    clients = [httpx.Client(base_url=r.url) for r in replicas]
    try:
        traffic.events["reloads"] = await asyncio.to_thread(rolling_reload, clients, str(model_b))  # type: ignore[assignment]
    finally:
        for c in clients:
            c.close()
    traffic.events["reload_end"] = time.time()
    log(f"rolling reload done in {traffic.events['reload_end'] - traffic.events['reload_start']:.1f} s")
    while traffic.next < 0.6 * traffic.n:
        await asyncio.sleep(0.05)
    victim = replicas[-1]
    traffic.events["inflight_at_kill"] = haproxy_current_sessions(sock, victim.name)  # type: ignore[assignment]
    traffic.events["client_inflight_at_kill"] = traffic.inflight
    traffic.events["kill_started"] = time.time()
    victim.proc.kill()  # type: ignore[union-attr]
    traffic.events["kill"] = time.time()
    victim.proc.wait()  # type: ignore[union-attr]
    log(f"SIGKILL {victim.name} (HAProxy scur {traffic.events['inflight_at_kill']}, client in flight "
        f"{traffic.events['client_inflight_at_kill']}); restarting")
    victim.start(model_b)  # the same port and replica id: it recovers its own log files
    await asyncio.to_thread(victim.wait_ready)
    traffic.events["restarted"] = time.time()
    log(f"{victim.name} back after {traffic.events['restarted'] - traffic.events['kill']:.1f} s")


# ---- step 5: the two sources ----------------------------------------------------------------------------------
def prometheus_numbers(url: str) -> dict[str, Any]:
    """The recorded series (deploy/prometheus/rules.yml) now, fleet-wide and by model version."""
    out: dict[str, Any] = {"per_version": {}}
    for label, name in (("accept", "irp_live_precision"), ("tap", "irp_live_tap_precision")):
        for level in ("fleet", "model_version"):
            for what in ("answers", "positive", "", "lower", "upper"):
                metric = f"{level}:{name}{'_' + what if what else ''}:1h"
                for sample in prom_query(url, metric):
                    value = float(sample["value"][1])
                    key = what or "precision"
                    if level == "fleet":
                        out.setdefault(label, {})[key] = value
                    else:
                        version = sample["metric"]["model_version"]
                        out["per_version"].setdefault(version, {}).setdefault(label, {})[key] = value
    offers = {s["metric"]["model_version"]: float(s["value"][1]) for s in prom_query(url, "model_version:irp_offers:increase1h")}
    for version, n in offers.items():
        out["per_version"].setdefault(version, {})["offers"] = n
    return out


def exact_counts(url: str, metric: str, span_s: int) -> dict[tuple[str, ...], float]:
    """Every raw sample Prometheus holds for `metric` over the run (an instant query of a range selector: no
    extrapolation), summed per (model_version, event) as increases with counter resets (a restarted replica)."""
    out: dict[tuple[str, ...], float] = {}
    for series in prom_query(url, f"{metric}[{span_s}s]"):
        values = [float(v) for _, v in series["values"]]
        increase = sum(b - a if b >= a else b for a, b in zip(values, values[1:]))
        key = (series["metric"].get("model_version", ""), series["metric"].get("event", ""))
        out[key] = out.get(key, 0.0) + increase
    return out


def join_numbers(run: Path, log_dir: Path) -> dict[str, Any]:
    """`irp logs join` over every replica's files: answers to offers, by label and model version."""
    out: dict[str, Any] = {"per_version": {}}
    for label in ("accept", "tap"):
        joined = run / f"joined_{label}.jsonl"
        irp("logs", "join", "--log-dir", str(log_dir), "--out", str(joined), "--label", label, "--require-feedback")
        records = [json.loads(line) for line in joined.read_text().splitlines()]
        answered = [r for r in records if r["offered"]]  # answers to offers (tap: taps after an offer)
        for scope, rows in [("fleet", answered)] + [
                (v, [r for r in answered if r["model_version"] == v]) for v in sorted({r["model_version"] for r in answered})]:
            n, k = len(rows), sum(r["label"] for r in rows)
            entry = {"answers": n, "positive": k, "precision": k / n if n else None}
            if scope == "fleet":
                out[label] = entry
            else:
                out["per_version"].setdefault(scope, {})[label] = entry
    return out


def cooldown_check(log_dir: Path, cooldown: float) -> dict[str, Any]:
    from irp.logs import scan_log_dir

    decisions, feedback, scan = scan_log_dir(log_dir)
    offers: dict[str, list[float]] = {}
    for d in decisions:
        if d["suggest_switch"] and d["session_id"] is not None:
            offers.setdefault(d["session_id"], []).append(d["ts"])
    gaps = [b - a for ts in offers.values() for a, b in zip(sorted(ts), sorted(ts)[1:])]
    # A decision's `ts` is read by its replica a few ms before the Redis call that checks and starts the cooldown:
    # gaps are compared with a 10 ms tolerance for that (the minimum gap is reported as measured).
    return {"cooldown_violations": sum(g < cooldown - 0.01 for g in gaps),
            "cooldown_violation_tolerance_s": 0.01,
            "min_gap_between_offers_s": min(gaps) if gaps else None, "offer_gaps_checked": len(gaps),
            "sessions_offered_twice_or_more": sum(len(t) > 1 for t in offers.values()),
            "decisions_logged": len(decisions), "feedback_logged": len(feedback), "log_files": scan.decision_files + scan.feedback_files,
            "decision_ids": {d["id"] for d in decisions}}


def capacity(run: Path, model: Path, redis_url: str, records: list[dict], seconds: float) -> dict[str, Any]:
    """One replica pinned to one core (taskset -c 0, --workers 1 is not needed: the pin bounds it), closed-loop
    clients at growing concurrency: requests/s and p99 at each; the best rate with p99 <= 50 ms."""
    replica = Replica("cap", model, redis_url, None, run, 30.0, cpus="0").start()
    replica.wait_ready()
    steps = []
    try:
        for concurrency in (1, 2, 4, 8):
            lat: list[float] = []

            async def go() -> None:
                deadline = time.monotonic() + seconds
                async with httpx.AsyncClient(base_url=replica.url, timeout=30) as client:
                    async def worker(w: int) -> None:
                        i = 0
                        while time.monotonic() < deadline:
                            body = request_body(records[(w * 1000 + i) % len(records)], f"c{concurrency}-{w}-{i}", f"cs{i % 100}")
                            t0 = time.perf_counter()
                            r = await client.post("/v1/predict", json=body)
                            lat.append(time.perf_counter() - t0)
                            assert r.status_code == 200
                            i += 1
                    await asyncio.gather(*(worker(w) for w in range(concurrency)))

            started = time.monotonic()
            asyncio.run(go())
            elapsed = time.monotonic() - started
            steps.append({"concurrency": concurrency, "requests_per_s": round(len(lat) / elapsed, 1),
                          "p50_ms": round(float(np.median(lat) * 1000), 2),
                          "p99_ms": round(float(np.percentile(lat, 99) * 1000), 2)})
            log(f"capacity c={concurrency}: {steps[-1]}")
    finally:
        replica.stop()
    ok = [s for s in steps if s["p99_ms"] <= 50]
    return {"cores": 1, "pinned": "taskset -c 0 (the load generator shares the machine's other core)",
            "steps": steps, "requests_per_s_at_p99_le_50ms_per_core": max((s["requests_per_s"] for s in ok), default=None)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--cooldown", type=float, default=30.0)
    parser.add_argument("--sessions", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-rounds", type=int, default=20)
    parser.add_argument("--capacity-seconds", type=float, default=8.0, help="per concurrency step (0: skip)")
    parser.add_argument("--only-latency", action="store_true",
                        help="step 2 only (p50 with --state memory vs redis), written to DIR/fleet_state_latency.json")
    parser.add_argument("--models-from", type=Path, default=None,
                        help="reuse model_a, model_b and sim.jsonl of an earlier run folder (DIR/run) with the same seed")
    args = parser.parse_args(argv)
    for binary in ("redis-server", "haproxy", "prometheus"):
        if shutil.which(binary) is None and not Path("/usr/sbin", binary).exists():
            raise SystemExit(f"{binary} is missing: run `make system-deps`")
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin"
    ENV["PATH"] = os.environ["PATH"]
    run = args.out / "run"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    started = time.time()
    if args.models_from is not None:
        for name in ("model_a", "model_b"):
            shutil.copytree(args.models_from / name, run / name)
        shutil.copy(args.models_from / "sim.jsonl", run / "sim.jsonl")
        model_a, model_b, data = run / "model_a", run / "model_b", run / "sim.jsonl"
        log(f"models reused from {args.models_from}")
    else:
        log("models (tiny encoder, ONNX fp32)")
        model_a, model_b, data = build_models(run, args.seed)
    records = [json.loads(line) for line in data.read_text().splitlines()][3000:]
    redis_proc, redis_url = start_redis(run)
    procs: list[subprocess.Popen] = [redis_proc]
    replicas: list[Replica] = []
    try:
        log("p50 with --state memory vs --state redis, one replica each, concurrency 1")
        latency = state_latency(run, model_a, redis_url, records, args.latency_rounds, 50)
        log(f"latency: {latency}")
        if args.only_latency:
            from irp.fileio import write_json_atomic

            write_json_atomic(args.out / "fleet_state_latency.json", {**latency, "rounds": args.latency_rounds,
                              "requests_per_round": 50}, allow_nan=False, default=None)
            return 0
        import redis

        redis.Redis.from_url(redis_url).flushdb()  # the fleet starts from an empty store
        log_dir = run / "logs"
        replicas = [Replica(f"r{k}", model_a, redis_url, log_dir, run, args.cooldown) for k in (1, 2, 3)]
        for r in replicas:
            r.start()
        for r in replicas:
            r.wait_ready()
        haproxy, lb_url, sock = start_haproxy(run, replicas)
        procs.append(haproxy)
        wait_http(lb_url + "/readyz", haproxy, "haproxy", timeout=30)
        prometheus, prom_url = start_prometheus(run, replicas)
        procs.append(prometheus)
        time.sleep(3 * SCRAPE_S)  # every series scraped at 0 first
        log(f"traffic: {args.requests} requests + feedback through HAProxy at concurrency {args.concurrency}")
        traffic = Traffic(args.requests)

        async def both() -> None:
            await asyncio.gather(send(lb_url, records, traffic, args.concurrency, args.sessions, args.seed),
                                 control(traffic, replicas, model_b, sock))

        t0 = time.time()
        asyncio.run(both())
        traffic_s = time.time() - t0
        log(f"traffic done in {traffic_s:.0f} s: {len(traffic.answers)} answered, {len(traffic.failed)} failed")
        time.sleep(4 * SCRAPE_S)  # the last increments scraped and recorded
        prom = prometheus_numbers(prom_url)
        span = int(time.time() - t0) + 30
        raw_answers = exact_counts(prom_url, "irp_offer_answers_total", span)
        raw_offers = exact_counts(prom_url, "irp_offers_total", span)
        state_errors = {s["metric"]["operation"]: float(s["value"][1])
                        for s in prom_query(prom_url, "sum by (operation) (irp_state_errors_total)")}
        for r in replicas:
            r.stop()  # SIGTERM: every queued event written
        join = join_numbers(run, log_dir)
        cooldown = cooldown_check(log_dir, args.cooldown)
        cap = capacity(run, model_a, redis_url, records, args.capacity_seconds) if args.capacity_seconds > 0 else None
    finally:
        for r in replicas:
            r.stop()
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()

    ev = traffic.events
    during_reload = [f for f in traffic.failed if ev["reload_start"] <= f["t1"] and f["t0"] <= ev["reload_end"]]
    during_kill = [f for f in traffic.failed if ev["kill"] - 1 <= f["t1"] and f["t0"] <= ev["restarted"] + 5]
    killed = replicas[-1].name
    inflight = inflight_from_request_log(run / "haproxy.log", killed, ev["kill"], ev["kill_started"])
    answered_by_killed = {a["id"] for a in traffic.answers if a["replica"] == killed}
    lost_ids = answered_by_killed - cooldown.pop("decision_ids")
    per_version: dict[str, Any] = {}
    for version in sorted(set(prom["per_version"]) | set(join["per_version"])):
        p, j = prom["per_version"].get(version, {}), join["per_version"].get(version, {})
        per_version[version] = {
            "offers_prometheus": p.get("offers"),
            "offers_answered_by_clients": sum(a["offer"] for a in traffic.answers if a["version"] == version),
            **{f"{label}_{source}": src.get(label) for label in ("accept", "tap") for source, src in (("prometheus", p), ("join", j))}}
    events = {"accept": ("offer_accepted", "offer_declined"), "tap": ("carousel_tap", "no_tap")}

    def raw(label: str, version: str | None = None) -> dict[str, Any]:
        pos, neg = (sum(n for (v, e), n in raw_answers.items() if e == ev and version in (None, v)) for ev in events[label])
        return {"answers": int(round(pos + neg)), "positive": int(round(pos)),
                "precision": pos / (pos + neg) if pos + neg else None}

    for version, entry in per_version.items():
        entry["offers_prometheus_samples"] = raw_offers.get((version, ""), 0.0)
        for label in events:
            entry[f"{label}_prometheus_samples"] = raw(label, version)
    answers_prom = {label: raw(label)["answers"] for label in events}
    answers_join = {label: join[label]["answers"] for label in ("accept", "tap")}
    result = {
        "replicas": len(replicas),
        "model": "tiny randomly initialised encoder (2 layers, hidden 32; the tests' build_tiny_encoder) trained on "
                 "2,000 `irp simulate` records, A 40 steps seed %d, B 50 steps seed %d, ONNX fp32 (`irp export-onnx`)" % (args.seed, args.seed + 1),
        "requests": args.requests, "answered": len(traffic.answers), "concurrency": args.concurrency,
        "traffic_seconds": round(traffic_s, 1), "requests_per_s": round(len(traffic.answers) / traffic_s, 1),
        "failed_requests": len(traffic.failed), "failed_examples": traffic.failed[:10],
        "failed_feedback": len(traffic.feedback_failed),
        "failed_requests_during_rolling_reload": len(during_reload),
        "rolling_reload_seconds": round(ev["reload_end"] - ev["reload_start"], 2),
        "rolling_reload": [{k: r[k] for k in ("replica_id", "previous_model_version", "model_version", "seconds")}
                           for r in ev["reloads"]],  # type: ignore[union-attr]
        "failed_requests_during_kill": len(during_kill), "inflight_at_kill": inflight["predict"],
        "inflight_at_kill_source": "HAProxy's request log: /v1/predict requests sent to the killed replica before the "
                                   "SIGKILL that ended after it (accept + TR + Tw + Tc <= kill <= accept + Ta)",
        "inflight_at_kill_all_requests": inflight["all"],
        "requests_failed_on_killed_replica_haproxy": inflight["failed_on_server"],
        "inflight_at_kill_scur": ev["inflight_at_kill"],
        "client_inflight_at_kill": ev["client_inflight_at_kill"],
        "killed_replica_back_after_s": round(ev["restarted"] - ev["kill"], 2),
        "decisions_lost_in_kill": len(lost_ids), "killed_replica_queue_bound": LOG_QUEUE,
        "feedback_on_other_replica_share": round(traffic.feedback_other / max(traffic.feedback_sent, 1), 4),
        "answers_prometheus": answers_prom, "answers_join": answers_join,
        "answers_prometheus_source": "every raw sample of irp_offer_answers_total over the run from Prometheus's query "
                                     "API (`metric[span]`), increases summed with counter resets, all replicas",
        "answers_prometheus_recording_rule": {label: prom.get(label, {}).get("answers") for label in ("accept", "tap")},
        "live_precision_prometheus": {label: raw(label)["precision"] for label in events},
        "live_precision_prometheus_recording_rule": {label: prom.get(label, {}).get("precision") for label in events},
        "state_errors_prometheus": state_errors,
        "live_precision_join": {label: join[label]["precision"] for label in ("accept", "tap")},
        "wilson_95_prometheus": {label: [prom.get(label, {}).get("lower"), prom.get(label, {}).get("upper")]
                                 for label in ("accept", "tap")},
        "per_version": per_version,
        "cooldown_s": args.cooldown, "sessions": args.sessions, **cooldown,
        **latency,
        "capacity_one_replica": cap,
        "state_timeout_ms": 50,
        "scrape_interval_s": SCRAPE_S,
        "seconds": round(time.time() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    from irp.fileio import write_json_atomic

    write_json_atomic(args.out / "fleet.json", result, allow_nan=False, default=None)
    print(json.dumps({k: v for k, v in result.items() if k not in ("failed_examples",)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
