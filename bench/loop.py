"""The whole serving loop on loopback, with simulated users who know the truth of every counterfactual.

    .venv/bin/python bench/loop.py --out DIR [--n-log 24000] [--n-fresh 12000] [--backbone minilm-l6]

1. Simulate a small training log; train model A (few steps).
2. Latency: two servers of A side by side, one with `--log-dir` (and exploration), one without; p50 of
   single /v1/predict requests, interleaved in rounds, in the same run.
3. Serve A with `--explore-rate 0.2 --log-dir --cooldown 0`; send `--n-log` simulated requests (batches)
   and the users' feedback (`irp.data.simulate.reactions`); SIGTERM the server.
4. `irp logs join`; split the joined log by session into B's train / valid and a held-out evaluation part.
5. Train model B on the joined log; `irp policy-eval` B on the held-out part of A's logs.
6. A fresh server of A without exploration; under concurrency 16, hot-swap A -> B -> A -> B with
   `/v1/admin/reload` (every answer must be a 200).
7. B serves `--n-fresh` fresh simulated requests from the same simulated users (the later sessions of the
   same simulation) without exploration: its true live precision (accepted / offers, the number the
   service's dashboard shows), the precision of its offers on the tap label (what the artifact promises)
   and its accepts per 1,000 requests, measured; compared with the off-policy estimates of step 5.
   The population truth of B: B scores, offline in batch, `--n-population` further simulated records of
   the same users (later sessions of the same simulation, `population_records`), whose every counterfactual
   (tap label, `would_accept`) the simulator knows: the same three quantities there.
   Two questions, two intervals (docs/loop.md): the estimation interval (`*_ci`, session-clustered
   bootstrap) should cover the population value; the prediction interval (`*_pi`) adds the sampling noise
   of a live sample of the size served and should cover the live measurement (`within_ci`).
   One run is one draw: `bench/loop_seeds.py` says how often the intervals cover over several seeds.
8. dropped_events: decisions and feedback answered by the servers minus the lines in their log folders.
9. SIGKILL: a server of A with a decision log is killed (-9) under load; every file left in its folder must
   read back whole (after the recovery the next server runs), and the loss (answered - logged) is measured
   against the writer's queue bound.

Writes DIR/loop.json (and keeps the logs, models and joined files under DIR; `--reevaluate` redoes only
step 5's estimate and the comparison on a finished DIR, e.g. after a change to the estimator). The cooldown
is 0 so that eligibility (screen available, not in cooldown) is the same under A and B: policy-eval takes it
from the log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IRP = [sys.executable, "-m", "irp.cli"]
LATENT = ("label", "true_intent", "true_category", "user_id")
LOG_DIRS = ("logs_latency", "logs_a", "logs_b", "logs_sigkill")  # the decision-log folders a run writes in DIR
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200",
                    "NO_PROXY": "*", "no_proxy": "*"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def irp(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    started = time.perf_counter()
    proc = subprocess.run(IRP + list(args), capture_output=True, text=True, env=env or ENV)
    if proc.returncode != 0:
        raise SystemExit(f"irp {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    log(f"irp {args[0]} {args[1] if len(args) > 1 and not args[1].startswith('-') else ''} "
        f"({time.perf_counter() - started:.0f} s)")
    return proc


def request_body(record: dict) -> dict:
    """The request a client sends: the record without the simulator's latent fields and the label."""
    return {k: v for k, v in record.items() if k not in LATENT}


# ---- servers -----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`irp serve` as a child process on a free loopback port."""

    def __init__(self, model: Path, log_dir: Path | None = None, explore_rate: float = 0.0, seed: int = 0,
                 workers: int = 2, name: str = "server", stderr_dir: Path = Path(".")) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = name
        self.log_dir = log_dir
        args = ["serve", "--model", str(model), "--port", str(self.port), "--cooldown", "0",
                "--workers", str(workers), "--threads", "1", "--runtime", "torch"]
        if log_dir is not None:
            args += ["--log-dir", str(log_dir), "--explore-rate", str(explore_rate), "--seed", str(seed)]
        self.stderr_path = stderr_dir / f"server-{name}.stderr"
        with open(self.stderr_path, "w") as err:  # a file, not a pipe: a chatty server never blocks on it
            self.proc = subprocess.Popen(IRP + args, stdout=err, stderr=subprocess.STDOUT, text=True,
                                         env=ENV | {"OMP_NUM_THREADS": "1"})

    def wait_ready(self, timeout: float = 300.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.stderr_path.read_text()[-3000:]
                raise SystemExit(f"{self.name} exited ({self.proc.returncode}):\n{tail}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise SystemExit(f"{self.name} not ready after {timeout:.0f} s")

    def stop(self) -> int:
        """SIGTERM and wait: the server flushes its decision log on the way out."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


# ---- traffic -----------------------------------------------------------------------------------------


class Counts:
    """What the servers answered, to compare with what their logs hold."""

    def __init__(self) -> None:
        self.decisions = 0
        self.feedback = 0
        self.failed = 0


async def send_traffic(url: str, records: list[dict], seed: int, counts: Counts, batch: int = 64,
                       concurrency: int = 4, feedback: bool = True) -> list[dict]:
    """Score `records` in /v1/predict/batch calls and post the simulated users' feedback; the answers in order."""
    import httpx

    from irp.data.simulate import reactions

    answers: list[dict | None] = [None] * len(records)
    chunks = iter(range(0, len(records), batch))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120.0) as client:

        async def worker() -> None:
            for start in chunks:
                part = records[start:start + batch]
                response = await client.post("/v1/predict/batch", json={"items": [request_body(r) for r in part]})
                if response.status_code != 200:
                    counts.failed += len(part)
                    continue
                results = response.json()["results"]
                counts.decisions += len(results)
                events = []
                for i, (record, result) in enumerate(zip(part, results)):
                    answers[start + i] = result
                    events += [{"id": result["id"], "event": e, "ts": time.time()}
                               for e in reactions(record, bool(result["suggest_switch"]), seed)]
                for j in range(0, len(events) if feedback else 0, 256):
                    fb = await client.post("/v1/feedback", json={"items": events[j:j + 256]})
                    if fb.status_code != 200:
                        raise SystemExit(f"/v1/feedback answered {fb.status_code}: {fb.text[:500]}")
                    counts.feedback += int(fb.json()["accepted"])

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    if any(a is None for a in answers):
        raise SystemExit(f"{sum(a is None for a in answers)} requests to {url} got no answer")
    return answers  # type: ignore[return-value]


def single_latency(urls: dict[str, str], records: list[dict], rounds: int, per_round: int) -> dict[str, list[float]]:
    """Milliseconds of sequential single /v1/predict requests, the servers taking turns in rounds (so load
    drift on a shared machine hits both alike)."""
    import httpx

    out: dict[str, list[float]] = {name: [] for name in urls}
    clients = {name: httpx.Client(base_url=url, timeout=60.0) for name, url in urls.items()}
    try:
        for name, client in clients.items():  # warm the connections and the models
            for r in records[:20]:
                client.post("/v1/predict", json=request_body(r)).raise_for_status()
        k = 0
        for _ in range(rounds):
            for name, client in clients.items():
                for _ in range(per_round):
                    body = request_body(records[k % len(records)])
                    body["id"] = f"lat-{k}"
                    k += 1
                    started = time.perf_counter()
                    client.post("/v1/predict", json=body).raise_for_status()
                    out[name].append((time.perf_counter() - started) * 1000)
    finally:
        for client in clients.values():
            client.close()
    return out


async def swap_under_load(url: str, records: list[dict], models: list[Path], concurrency: int = 16,
                          seconds_between: float = 4.0) -> dict[str, Any]:
    """Single requests from `concurrency` clients while the server reloads `models` in turn; every answer
    must be a 200 from one of the models."""
    import httpx

    status: dict[str, int] = {}
    versions: dict[str, int] = {}
    failed = 0
    done = asyncio.Event()
    queue = iter(range(10**9))
    limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120.0) as client:

        async def worker() -> None:
            nonlocal failed
            for k in queue:
                if done.is_set():
                    return
                body = request_body(records[k % len(records)])
                body["id"] = f"swap-{k}"
                try:
                    response = await client.post("/v1/predict", json=body)
                    code = response.status_code
                except httpx.TransportError:
                    code = -1
                status[str(code)] = status.get(str(code), 0) + 1
                if code != 200:
                    failed += 1
                else:
                    v = response.json()["model_version"]
                    versions[v] = versions.get(v, 0) + 1

        swaps = []

        async def swapper() -> None:
            await asyncio.sleep(seconds_between)
            for model in models:
                started = time.perf_counter()
                response = await client.post("/v1/admin/reload", json={"model": str(model)})
                swaps.append({"model": str(model), "status": response.status_code,
                              "seconds": round(time.perf_counter() - started, 2), "answer": response.json()})
                if response.status_code != 200:
                    raise SystemExit(f"/v1/admin/reload answered {response.status_code}: {response.text[:500]}")
                await asyncio.sleep(seconds_between)
            done.set()

        await asyncio.gather(swapper(), *(worker() for _ in range(concurrency)))
    return {"swaps": swaps, "status_counts": status, "answers_by_model_version": versions,
            "requests": sum(status.values()), "swap_failed_requests": failed, "concurrency": concurrency}


async def answer_until_gone(url: str, records: list[dict], answered: list[str], concurrency: int = 4,
                            batch: int = 16) -> None:
    """Batches until the server disappears; the ids it answered are appended to `answered`."""
    import httpx

    chunks = iter(range(0, 10**9, batch))
    async with httpx.AsyncClient(base_url=url, timeout=60.0) as client:

        async def worker() -> None:
            for start in chunks:
                items = []
                for j in range(batch):
                    body = request_body(records[(start + j) % len(records)])
                    body["id"] = f"kill-{start + j}"
                    items.append(body)
                try:
                    response = await client.post("/v1/predict/batch", json={"items": items})
                except httpx.TransportError:
                    return
                if response.status_code == 200:
                    answered.extend(r["id"] for r in response.json()["results"])

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def sigkill_run(model: Path, log_dir: Path, records: list[dict], seed: int, out: Path, seconds: float = 8.0,
                queue: int = 100_000) -> dict[str, Any]:
    """SIGKILL a logging server under load; what its folder holds afterwards, and what was lost."""
    import threading

    from irp.serve import recover_orphans

    server = Server(model, log_dir, 0.2, seed, name="sigkill", stderr_dir=out)
    server.wait_ready()
    answered: list[str] = []
    runner = threading.Thread(target=lambda: asyncio.run(answer_until_gone(server.url, records, answered)))
    runner.start()
    time.sleep(seconds)
    server.proc.kill()
    server.proc.wait()
    runner.join(60)
    before = log_lines(log_dir)  # without recovery: only the files that were complete at the kill
    recovered = recover_orphans(log_dir)  # what the next server on this folder does first
    after = log_lines(log_dir)
    lost = len(answered) - after["decisions"]
    return {"answered": len(answered), "logged_complete_files_at_kill": before["decisions"],
            "logged_after_recovery": after["decisions"], "lost": lost, "queue_bound": queue,
            "flush_interval_s": 0.1, "files_whole": after["torn_lines"] == 0 and after["invalid_lines"] == 0
            and after["in_progress_files"] == 0, "recovered": recovered,
            "lost_within_queue_bound": 0 <= lost <= queue}


def population_records(traffic: list[dict], n_traffic: int, sim_seed: int, n: int) -> list[dict]:
    """`n` records of LATER sessions of the users of `simulate(SimConfig(n=n_traffic, seed=sim_seed))`.

    The simulator draws its users (per-user tap propensity, screen) from (seed, n) and each chunk of records
    from (seed, chunk index), so the chunks after the traffic's last one, with the traffic's users, are more
    sessions of the same population (ids and sessions continue after the traffic's). Uses the simulator's
    internals on purpose: `simulate(n=n_traffic + n)` would draw a different set of users.
    """
    import math

    from irp.data import simulate as sm

    config = sm.SimConfig(n=n_traffic, seed=sim_seed)
    user_rng = np.random.default_rng([config.seed, 0])  # exactly as sm._chunks draws the users
    n_users = max(20, config.n // 10)
    user_prop = user_rng.normal(0.0, config.user_sd, n_users)
    user_screen = user_rng.random(n_users) < config.screen_rate
    world = sm._world(config.catalog_seed)
    retriever = sm.CachedRetriever(world.index, config.k)
    first_id = n_traffic
    first_session = int(traffic[-1]["session_id"].rsplit("-s", 1)[1]) + 1
    index = math.ceil(n_traffic / sm.CHUNK)
    out: list[dict] = []
    while len(out) < n:
        m = min(sm.CHUNK, n - len(out))
        rng = np.random.default_rng([config.seed, 1, index])
        chunk = sm._chunk(world, config, rng, retriever, first_id, first_session, m, user_prop, user_screen)
        out += sm._records(chunk, config)
        first_id += m
        first_session = int(chunk.session[-1]) + 1
        index += 1
    return out


def population_truth(clf: Any, threshold: float, records: list[dict], reaction_seed: int, n_boot: int,
                     seed: int) -> dict[str, Any]:
    """B's exact precision of offers and accepts per 1,000 on `records` (offline batch scoring, cooldown 0:
    B offers iff screen_available is not false and p >= threshold), with session-clustered bootstrap SEs
    (the population value itself is a finite sample)."""
    from irp.data.simulate import would_accept
    from irp.offpolicy import bootstrap_means

    started = time.perf_counter()
    p = clf.predict_proba(records, batch_size=256)
    scoring_s = time.perf_counter() - started
    eligible = np.array([r.get("screen_available") is not False for r in records])
    offer = eligible & (p >= threshold)
    tap = np.array([r["label"] for r in records], dtype=float)
    acc = np.array([would_accept(r, reaction_seed) for r in records], dtype=float)
    cols = np.column_stack([offer * tap, offer, offer * acc])
    boot = bootstrap_means(cols, n_boot, seed, clusters=[r["session_id"] for r in records])
    # Diagnostic the log cannot give: the simulator's users span sessions (a persistent tap propensity, heavy
    # users), so resampling users shows how much of a finite sample's spread the session bootstrap misses.
    by_user = bootstrap_means(cols, n_boot, seed, clusters=[r["user_id"] for r in records])
    by_record = bootstrap_means(cols, n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = {name: {"precision": float(np.nanstd(m[:, 0] / m[:, 1], ddof=1)),
                     "accepts_per_1000": 1000.0 * float(np.std(m[:, 2], ddof=1)),
                     "live_precision": float(np.nanstd(m[:, 2] / m[:, 1], ddof=1))}
              for name, m in (("session", boot), ("user", by_user), ("record", by_record))}
    return {**measured(offer, tap, acc),
            **{f"{k}_se": v for k, v in se["session"].items()},
            "se_by_resampling_unit": se,
            "users": len({r["user_id"] for r in records}),
            "sessions": len({r["session_id"] for r in records}), "scoring_seconds": round(scoring_s, 1),
            "records_per_second": round(len(records) / max(scoring_s, 1e-9), 1)}


# The quantities compared: the key loop.json gives each, its scale, and whether it is a share of B's offers
# (its live sample is the offers, not the requests). "precision" is the live precision of offers
# (accepted / offers, the dashboard's number); "tap_precision" is the precision of the label the artifact
# promises (carousel taps among offers).
QUANTITIES = (("live_precision", "precision", 1.0, True), ("precision", "tap_precision", 1.0, True),
              ("accepts_per_1000", "accepts_per_1000", 1000.0, False))

def measured(offer: np.ndarray, tap: np.ndarray, accept: np.ndarray) -> dict[str, Any]:
    """B's exact values on a sample whose every answer is known: `offer` (n,) bool, `tap` and `accept` (n,) 0/1."""
    offer, tap, accept = np.asarray(offer, bool), np.asarray(tap, float), np.asarray(accept, float)
    return {"n": int(len(offer)), "offers": int(offer.sum()), "offer_rate": float(offer.mean()),
            "precision": float(tap[offer].mean()), "accepts_per_1000": 1000.0 * float((offer * accept).mean()),
            "live_precision": float(accept[offer].mean())}


def compare(ope: dict[str, Any], truth: dict[str, Any], n_live_requests: int) -> dict[str, Any]:
    """The off-policy estimates (SNIPS; IPS beside) against B's truth, per quantity of QUANTITIES.

    Two questions, two intervals (docs/loop.md): the estimation interval (`*_ci`) should cover the population
    value (`population_within_ci_*`); the prediction interval (`*_pi`: the estimate's own SE plus the sampling
    noise of a live measurement of the size served, `irp.offpolicy.prediction_interval`) should cover the live
    value (`within_ci_*`). `within_ci` is the issue's check: live precision (accepted / offers).
    """
    from irp.offpolicy import prediction_interval

    live, pop, cf = truth["live"], truth["population"], truth["exact_on_eval"]
    deff = ope.get("design_effect", {})
    out: dict[str, Any] = {"n_ope_eval": ope["n"], "ope_offer_rate_exact": ope["offer_rate"]["exact"],
                           "ess": ope["ess"], "ess_offers": ope["ess_offers"], "logging_policy_A": ope["logging"],
                           "threshold_B": ope["threshold"], "ope_resampled": ope["resampled"],
                           "ope_n_resampled_units": ope["n_resampled_units"], "ope_design_effect": deff,
                           "prediction_interval": {}}
    for metric, name, scale, per_offer in QUANTITIES:
        est = ope[metric]
        # the live sample: B's expected offers (a share of offers) or the requests; its design effect is the
        # one the session bootstrap measured on the logging policy's own value of the same quantity
        n_live = ope["offer_rate"]["exact"] * n_live_requests if per_offer else n_live_requests
        d = max(1.0, float(deff.get(f"logging.{metric}", 1.0)))
        pi = list(prediction_interval(est["snips"], est["snips_se"], n_live, d, scale=scale))
        ci = est["snips_ci"]
        out |= {f"ope_{name}": est["snips"], f"ope_{name}_ci": ci, f"ope_{name}_pi": pi,
                f"ope_{name}_ips": est["ips"], f"ope_{name}_ips_ci": est["ips_ci"],
                f"true_{name}_B": live[metric], f"population_{name}_B": pop[metric],
                f"counterfactual_{name}_B_on_eval": cf[metric],
                f"within_ci_{name}": pi[0] <= live[metric] <= pi[1],
                f"population_within_ci_{name}": ci[0] <= pop[metric] <= ci[1],
                f"within_ci_counterfactual_on_eval_{name}": ci[0] <= cf[metric] <= ci[1],
                f"abs_error_{name}": abs(est["snips"] - live[metric]),
                f"abs_error_{name}_vs_population": abs(est["snips"] - pop[metric]),
                f"abs_error_{name}_vs_counterfactual_on_eval": abs(est["snips"] - cf[metric])}
        out["prediction_interval"][name] = {"ope_se": est["snips_se"], "n_live": n_live, "design_effect": d,
                                            "scale": scale}
    out["prediction_interval"]["formula"] = (
        "estimate +- 1.96 sqrt(se_ope^2 + deff * scale^2 q (1 - q) / n_live), q = estimate / scale; n_live = B's "
        "expected offers (offer_rate_exact on the log x live requests) for the shares of offers, the live "
        "requests for accepts per 1,000; deff = clustered / record bootstrap variance of the logging policy's "
        "measured value of the same quantity (floored at 1)")
    out["within_ci"] = bool(out["within_ci_precision"])
    return out


def run_policy_eval(out: Path, model_b: Path, n_boot: int, seed: int) -> dict[str, Any]:
    """`irp policy-eval` of B on the held-out part of A's log (DIR/ope_eval.jsonl) -> its JSON report."""
    irp("policy-eval", "--logs", str(out / "ope_eval.jsonl"), "--model", str(model_b), "--json",
        str(out / "policy_eval.json"), "--n-boot", str(n_boot), "--seed", str(seed))
    return json.loads((out / "policy_eval.json").read_text())


def write_result(out: Path, result: dict[str, Any]) -> None:
    tmp = out / ".loop.json.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out / "loop.json")
    f = lambda k: "in " if result[f"within_ci_{k}"] else "OUT"  # noqa: E731
    log(f"live precision (accepted / offers): ope {result['ope_precision']:.4f} pi "
        f"[{result['ope_precision_pi'][0]:.4f}, {result['ope_precision_pi'][1]:.4f}] vs live "
        f"{result['true_precision_B']:.4f} {f('precision')} (population {result['population_precision_B']:.4f}); "
        f"tap precision: ope {result['ope_tap_precision']:.4f} vs live {result['true_tap_precision_B']:.4f} "
        f"{f('tap_precision')}; accepts/1000: ope {result['ope_accepts_per_1000']:.1f} vs live "
        f"{result['true_accepts_per_1000_B']:.1f} {f('accepts_per_1000')}; swap failures "
        f"{result.get('swap_failed_requests')}; dropped {result.get('dropped_events')}; -> {out / 'loop.json'}")


def reevaluate(out: Path, n_boot: int) -> int:
    """Redo the off-policy side of a finished run (policy-eval of its model B on its held-out log, and the
    comparison) with the current code; `compare` rewrites its own keys, everything measured is kept as it was."""
    loop = json.loads((out / "loop.json").read_text())
    if "truth" not in loop or "seed" not in loop:
        raise SystemExit(f"{out / 'loop.json'} predates `truth` and `seed`: rerun that seed with this bench")
    ope = run_policy_eval(out, out / "model_b", n_boot, loop["seed"])
    write_result(out, loop | compare(ope, loop["truth"], loop["n_fresh_requests"]) | {
        "reevaluated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return 0


def log_lines(log_dir: Path) -> dict[str, int]:
    """Complete decision / feedback lines in a log folder, and the files still being written (dot-files)."""
    from irp.logs import scan_log_dir

    decisions, feedback, scan = scan_log_dir(log_dir)
    return {"decisions": len(decisions), "feedback": len(feedback), "in_progress_files": scan.in_progress_files,
            "torn_lines": scan.torn_lines, "invalid_lines": scan.invalid_lines}


# ---- the loop ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n-train-a", type=int, default=2000, help="records of A's training log")
    parser.add_argument("--n-log", type=int, default=24_000, help="requests served by A (logged, explored)")
    parser.add_argument("--n-fresh", type=int, default=12_000, help="fresh requests served by B")
    parser.add_argument("--explore-rate", type=float, default=0.2)
    parser.add_argument("--backbone", default="minilm-l6")
    parser.add_argument("--steps-a", type=int, default=40)
    parser.add_argument("--steps-b", type=int, default=80)
    parser.add_argument("--latency-rounds", type=int, default=10)
    parser.add_argument("--latency-per-round", type=int, default=40)
    parser.add_argument("--eval-share", type=float, default=0.3, help="sessions of A's log held out for policy-eval")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--n-population", type=int, default=15_000,
                        help="later simulated records of the same users, scored offline by B: its population truth")
    parser.add_argument("--seed", type=int, default=0, help="traffic, split and bootstrap seed")
    parser.add_argument("--kill-after", type=float, default=8.0, help="seconds of load before the SIGKILL")
    parser.add_argument("--reevaluate", action="store_true",
                        help="redo only the off-policy side of the finished run in --out with the current code")
    args = parser.parse_args(argv)
    if args.reevaluate:
        return reevaluate(args.out.resolve(), args.n_boot)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in LOG_DIRS:  # an earlier run's decision logs in DIR would be joined with this run's
        shutil.rmtree(out / stale, ignore_errors=True)
    started = time.perf_counter()

    from irp.data.io import load_records, write_records
    from irp.data.simulate import SimConfig, simulate, would_accept

    # 1. data and model A
    sim = lambda n, seed: list(simulate(SimConfig(n=n, seed=seed)))  # noqa: E731
    train_a = sim(args.n_train_a, 1000 + args.seed)
    write_records(out / "a_train.jsonl", train_a[: int(0.75 * len(train_a))])
    write_records(out / "a_valid.jsonl", train_a[int(0.75 * len(train_a)):])
    # One population of users: A's logged traffic is the first sessions, B's fresh traffic the later ones.
    traffic = sim(args.n_log + args.n_fresh, 2000 + args.seed)
    population = population_records(traffic, len(traffic), 2000 + args.seed, args.n_population)
    cut = args.n_log
    while cut < len(traffic) and traffic[cut]["session_id"] == traffic[cut - 1]["session_id"]:
        cut += 1  # no session on both sides
    logged, fresh = traffic[:cut], traffic[cut:]
    truth_by_id = {r["id"]: r for r in logged}
    train_common = ["--backbone", args.backbone, "--batch-size", "32", "--device", "cpu", "--seed", str(args.seed)]
    model_a, model_b = out / "model_a", out / "model_b"
    irp("train", "--train", str(out / "a_train.jsonl"), "--valid", str(out / "a_valid.jsonl"), "--out", str(model_a),
        "--max-steps", str(args.steps_a), *train_common)

    # 2. logging on vs off, same run, same model
    lat_logs = out / "logs_latency"
    on = Server(model_a, lat_logs, args.explore_rate, args.seed, name="latency-on", stderr_dir=out)
    off = Server(model_a, name="latency-off", stderr_dir=out)
    on.wait_ready(), off.wait_ready()
    lat = single_latency({"on": on.url, "off": off.url}, fresh, args.latency_rounds, args.latency_per_round)
    lat_sent = 20 + args.latency_rounds * args.latency_per_round
    on.stop(), off.stop()
    p50_on, p50_off = float(np.median(lat["on"])), float(np.median(lat["off"]))
    log(f"p50 single request: logging on {p50_on:.2f} ms, off {p50_off:.2f} ms")

    # 3. A serves with exploration and a decision log; the simulated users answer
    a_logs = out / "logs_a"
    server = Server(model_a, a_logs, args.explore_rate, args.seed, name="A", stderr_dir=out)
    server.wait_ready()
    counts_a = Counts()
    t0 = time.perf_counter()
    asyncio.run(send_traffic(server.url, logged, args.seed, counts_a))
    log(f"A served {counts_a.decisions:,} requests and {counts_a.feedback:,} feedback events "
        f"in {time.perf_counter() - t0:.0f} s")
    server.stop()

    # 4. join and split (by session)
    joined = out / "joined.jsonl"
    irp("logs", "join", "--log-dir", str(a_logs), "--out", str(joined), "--json", str(out / "join_report.json"))
    irp("validate", str(joined))
    irp("split", str(joined), "--fraction", str(args.eval_share), "--seed", str(args.seed),
        "--out-first", str(out / "ope_eval.jsonl"), "--out-second", str(out / "b_pool.jsonl"))
    irp("split", str(out / "b_pool.jsonl"), "--fraction", "0.75", "--seed", str(args.seed),
        "--out-first", str(out / "b_train.jsonl"), "--out-second", str(out / "b_valid.jsonl"))

    # 5. model B on the joined log; off-policy estimate on the held-out part of A's log
    irp("train", "--train", str(out / "b_train.jsonl"), "--valid", str(out / "b_valid.jsonl"), "--out", str(model_b),
        "--max-steps", str(args.steps_b), *train_common)
    ope = run_policy_eval(out, model_b, args.n_boot, args.seed)

    # The exact counterfactual on the same held-out records (the simulator knows every answer).
    eval_records = load_records(out / "ope_eval.jsonl")
    from irp.predict import IRPClassifier

    clf_b = IRPClassifier.load(model_b)
    b_version = clf_b.version
    p_b = clf_b.predict_proba(eval_records)
    truth_eval = [truth_by_id[r["id"]] for r in eval_records]
    exact_on_eval = measured(np.array([r["eligible"] for r in eval_records]) & (p_b >= ope["threshold"]),
                             np.array([t["label"] for t in truth_eval]),
                             np.array([would_accept(t, args.seed) for t in truth_eval]))
    # B's population truth: a large fresh sample of the same users, every counterfactual known.
    pop = population_truth(clf_b, ope["threshold"], population, args.seed, args.n_boot, args.seed)
    log(f"population truth of B on {pop['n']:,} records ({pop['records_per_second']:.0f} records/s): precision "
        f"{pop['precision']:.4f}, accepts/1000 {pop['accepts_per_1000']:.1f}, live precision "
        f"{pop['live_precision']:.4f}")
    del clf_b

    # 6. hot swaps under load, then 7. B on fresh traffic without exploration
    b_logs = out / "logs_b"
    server = Server(model_a, b_logs, 0.0, args.seed, name="swap", stderr_dir=out)
    server.wait_ready()
    swap = asyncio.run(swap_under_load(server.url, fresh, [model_b, model_a, model_b]))
    log(f"swaps: {swap['requests']:,} requests under concurrency 16, {swap['swap_failed_requests']} failed")
    counts_b = Counts()
    answers = asyncio.run(send_traffic(server.url, fresh, args.seed, counts_b))
    server.stop()
    versions = sorted({a["model_version"] for a in answers})
    live = measured(np.array([bool(a["suggest_switch"]) for a in answers]), np.array([r["label"] for r in fresh]),
                    np.array([would_accept(r, args.seed) for r in fresh]))

    # 8. nothing lost between the answers and the log files
    lines = {name: log_lines(d) for name, d in (("latency", lat_logs), ("A", a_logs), ("B", b_logs))}
    expected = {"latency": (lat_sent, 0), "A": (counts_a.decisions, counts_a.feedback),
                "B": (swap["requests"] - swap["swap_failed_requests"] + counts_b.decisions, counts_b.feedback)}
    dropped = sum(max(0, expected[k][0] - lines[k]["decisions"]) + max(0, expected[k][1] - lines[k]["feedback"])
                  for k in expected)

    # 9. SIGKILL under load
    kill = sigkill_run(model_a, out / "logs_sigkill", fresh, args.seed, out, seconds=args.kill_after)
    log(f"SIGKILL: answered {kill['answered']}, logged {kill['logged_after_recovery']}, lost {kill['lost']}, "
        f"files whole {kill['files_whole']}")

    truth = {"live": live, "population": {k: pop[k] for k in live}, "exact_on_eval": exact_on_eval}
    result = {
        "seed": args.seed,
        "n_requests": counts_a.decisions,
        "n_fresh_requests": counts_b.decisions,
        "explore_rate": args.explore_rate,
        "cooldown_s": 0.0,
        "backbone": args.backbone,
        "truth": truth,
        "population": pop,
        "true_offer_rate_B": live["offer_rate"],
        "fresh_answers_model_versions": versions,
        "model_b_version": b_version,
        "swap_failed_requests": swap["swap_failed_requests"],
        "swap": swap,
        "dropped_events": dropped,
        "log_lines": lines,
        "expected_lines": {k: {"decisions": v[0], "feedback": v[1]} for k, v in expected.items()},
        "p50_ms_logging_on": p50_on,
        "p50_ms_logging_off": p50_off,
        "p50_overhead_ms": p50_on - p50_off,
        "latency_requests_each": len(lat["on"]),
        "sigkill": kill,
        "join_report": json.loads((out / "join_report.json").read_text()),
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_result(out, result | compare(ope, truth, counts_b.decisions))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
