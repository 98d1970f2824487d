"""Off-policy estimators against ground truth: brute force on tiny logs, coverage on simulated logs."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import make_records
from irp.data.io import write_records
from irp.logs.policy_eval import PolicyEvalError, evaluate_candidate
from irp.offpolicy import (bootstrap_interval, bootstrap_means, effective_sample_size, ips, ips_weights,
                           policy_estimates, prediction_interval, snips, unsupported)

IRP = [sys.executable, "-m", "irp.cli"]
ENV = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def test_ips_is_exactly_unbiased_by_brute_force() -> None:
    """Enumerate every logged action vector of a 4-record log: E[IPS] equals the candidate's true value."""
    mu = np.array([0.1, 0.5, 0.9, 0.3])  # P(log offers)
    b = np.array([True, False, True, True])  # candidate
    reward = {True: np.array([1.0, 0.0, 1.0, 0.5]), False: np.array([0.0, 0.2, 0.0, 0.0])}  # r_i(action)
    truth = float(np.mean(np.where(b, reward[True], reward[False])))
    expected_ips = expected_offer = 0.0
    for actions in itertools.product([False, True], repeat=4):
        a = np.array(actions)
        prob = float(np.prod(np.where(a, mu, 1 - mu)))
        w = ips_weights(b, a, mu)
        r = np.where(a, reward[True], reward[False])  # only the taken action's reward is observed
        expected_ips += prob * ips(r, w)
        expected_offer += prob * ips(b.astype(float), w)
    assert expected_ips == pytest.approx(truth, abs=1e-12)
    assert expected_offer == pytest.approx(b.mean(), abs=1e-12)


def test_weights_support_and_ess() -> None:
    assert unsupported([True, False], [0.0, 1.0]).tolist() == [True, True]
    with pytest.raises(ValueError, match="no support"):
        ips_weights([True], [False], [0.0])
    w = ips_weights([True, True, False, False], [True, False, False, True], [0.5, 0.5, 0.5, 0.5])
    assert w.tolist() == [2.0, 0.0, 2.0, 0.0]
    assert effective_sample_size(w) == 2.0 and snips([1, 0, 1, 1], w) == 1.0


def _simulated_log(rng: np.random.Generator, n: int, explore: float = 0.2):
    """A logged day with known truth: latent score s, tap y ~ Bernoulli(s), accept ~ Bernoulli(0.1 + 0.6 y)
    if offered. Logging policy: threshold 0.6 on a noisy score + exploration; candidate: threshold 0.45 on s."""
    s = rng.beta(2, 3, n)
    eligible = rng.random(n) < 0.9
    y = (rng.random(n) < s).astype(float)
    would_accept = (rng.random(n) < 0.1 + 0.6 * y).astype(float)  # the counterfactual answer, drawn once
    above = np.clip(s + rng.normal(0, 0.15, n), 0, 1) >= 0.6
    mu = np.where(eligible, (1 - explore) * above + explore * 0.5, 0.0)
    a = rng.random(n) < mu
    accepted = np.where(a, would_accept, np.nan)
    b = eligible & (s >= 0.45)
    truth = {"offer_rate": b.mean(), "precision": y[b].mean(), "accepts_per_1000": 1000 * (b * would_accept).mean(),
             "live_precision": would_accept[b].mean()}
    # Population truth (the expectation the estimators target): E[b y] / E[b] etc. with the known s.
    population = {"offer_rate": b.mean(), "precision": (b * s).sum() / b.sum(),
                  "accepts_per_1000": 1000 * (b * (0.1 + 0.6 * s)).mean(),
                  "live_precision": (b * (0.1 + 0.6 * s)).sum() / b.sum()}
    return b, a, mu, y, accepted, truth, population


def test_estimates_match_the_counterfactual_truth_on_one_large_log() -> None:
    rng = np.random.default_rng(0)
    b, a, mu, y, accepted, truth, _ = _simulated_log(rng, 40_000)
    est = policy_estimates(b, a, mu, y, accepted, n_boot=300, seed=1)
    assert est["offer_rate"]["exact"] == pytest.approx(truth["offer_rate"])
    for metric in ("offer_rate", "precision", "accepts_per_1000", "live_precision"):
        for method in ("ips", "snips"):
            lo, hi = est[metric][f"{method}_ci"]
            assert lo <= est[metric][method] <= hi
            assert lo - 0.01 * abs(truth[metric]) <= truth[metric] <= hi + 0.01 * abs(truth[metric]), (metric, method)
    assert est["logging"]["offer_rate"]["value"] == pytest.approx(a.mean())
    assert est["logging"]["precision"]["value"] == pytest.approx(y[a].mean())
    assert est["logging"]["live_precision"]["value"] == pytest.approx(np.nanmean(accepted[a]))
    assert 0 < est["ess_offers"] < est["ess"] <= len(b)


def test_interval_coverage_on_repeated_simulated_logs() -> None:
    """95 % bootstrap intervals of SNIPS precision and IPS accepts cover the population truth in most of 60 logs."""
    hits = {"precision.snips": 0, "accepts_per_1000.ips": 0, "accepts_per_1000.snips": 0, "live_precision.snips": 0}
    reps = 60
    for rep in range(reps):
        rng = np.random.default_rng(100 + rep)
        b, a, mu, y, accepted, _, population = _simulated_log(rng, 3000)
        est = policy_estimates(b, a, mu, y, accepted, n_boot=200, seed=rep)
        for key in hits:
            metric, method = key.split(".")
            lo, hi = est[metric][f"{method}_ci"]
            hits[key] += lo <= population[metric] <= hi
    for key, h in hits.items():
        assert h / reps >= 0.85, (key, h)  # nominal 0.95; 60 logs give a binomial spread of ~0.03


def test_bootstrap_interval_of_a_mean() -> None:
    x = np.random.default_rng(3).random((5000, 1))
    lo, hi = bootstrap_interval(x, lambda m: m[..., 0], n_boot=400)
    assert lo < 0.5 < hi and hi - lo == pytest.approx(2 * 1.96 * np.sqrt(1 / 12 / 5000), rel=0.25)


def _clustered_sample(rng: np.random.Generator, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Values with a strong cluster effect (population mean 0): cluster g of 1..9 records, each
    value = u_g + e_i with u_g ~ N(0, 1), e_i ~ N(0, 0.5^2)."""
    sizes = rng.integers(1, 10, n_clusters)
    codes = np.repeat(np.arange(n_clusters), sizes)
    values = rng.normal(0.0, 1.0, n_clusters)[codes] + rng.normal(0.0, 0.5, len(codes))
    return values, codes


def test_cluster_bootstrap_is_wider_and_covers_at_the_nominal_rate() -> None:
    """On clustered data the record bootstrap's 95 % interval of a mean is far too narrow (it treats ~5
    correlated records as 5 independent ones); resampling clusters gives wider intervals that cover the
    truth (0) at about the nominal rate."""
    reps, n_boot = 200, 200
    width = {"record": [], "cluster": []}
    hits = {"record": 0, "cluster": 0}
    for rep in range(reps):
        values, codes = _clustered_sample(np.random.default_rng(500 + rep), 60)
        for unit, clusters in (("record", None), ("cluster", codes)):
            m = bootstrap_means(values[:, None], n_boot, seed=rep, clusters=clusters)[:, 0]
            lo, hi = np.quantile(m, [0.025, 0.975])
            width[unit].append(hi - lo)
            hits[unit] += lo <= 0.0 <= hi
    assert np.mean(width["cluster"]) > 1.6 * np.mean(width["record"])
    assert 0.88 <= hits["cluster"] / reps <= 0.99, hits  # nominal 0.95 (binomial sd 0.015; small-G bootstrap ~0.93)
    assert hits["record"] / reps < 0.8, hits


def _clustered_log(rng: np.random.Generator, n_sessions: int, explore: float = 0.2):
    """Like `_simulated_log` in sessions of 1..8 records: the candidate's score s is per record, the tap
    probability clip(s + u_g) shares a session effect u_g ~ N(0, 0.25^2) (a user's own propensity)."""
    sizes = rng.integers(1, 9, n_sessions)
    codes = np.repeat(np.arange(n_sessions), sizes)
    n = len(codes)
    s = rng.beta(2, 3, n)
    y = (rng.random(n) < np.clip(s + rng.normal(0, 0.25, n_sessions)[codes], 0, 1)).astype(float)
    would_accept = (rng.random(n) < 0.1 + 0.6 * y).astype(float)
    above = np.clip(s + rng.normal(0, 0.15, n), 0, 1) >= 0.6
    mu = (1 - explore) * above + explore * 0.5
    a = rng.random(n) < mu
    return s >= 0.45, a, mu, y, np.where(a, would_accept, np.nan), codes


def test_session_clustered_policy_estimates_cover_the_population_truth() -> None:
    rng = np.random.default_rng(9)
    s = rng.beta(2, 3, 400_000)
    tap = np.clip(s + rng.normal(0, 0.25, len(s)), 0, 1)  # the marginal tap probability of a record
    b = s >= 0.45
    truth = {"precision": float(tap[b].mean()), "accepts_per_1000": 1000 * float((b * (0.1 + 0.6 * tap)).mean())}
    reps = 40
    hits = {"precision": 0, "accepts_per_1000": 0}
    deff = []
    for rep in range(reps):
        b, a, mu, y, accepted, codes = _clustered_log(np.random.default_rng(700 + rep), 400)
        est = policy_estimates(b, a, mu, y, accepted, n_boot=150, seed=rep, clusters=codes, cluster_name="session_id")
        assert est["resampled"] == "session_id" and est["n_resampled_units"] == 400
        for metric in hits:
            lo, hi = est[metric]["snips_ci"]
            hits[metric] += lo <= truth[metric] <= hi
        deff.append(est["design_effect"]["logging.precision"])
    assert np.median(deff) > 1.1  # taps correlate within sessions: resampling records understates the variance
    for metric, h in hits.items():
        assert 0.85 <= h / reps <= 1.0, (metric, h)  # nominal 0.95 (binomial sd 0.035 over 40 logs)
    flat = policy_estimates(b, a, mu, y, accepted, n_boot=50)
    assert flat["resampled"] == "record" and "design_effect" not in flat


def test_prediction_interval_adds_the_live_noise() -> None:
    lo, hi = prediction_interval(0.7, 0.02, 2000)
    live = 1.959964 * np.sqrt(0.7 * 0.3 / 2000)
    assert hi - 0.7 == pytest.approx(np.hypot(1.959964 * 0.02, live), rel=1e-6) and 0.7 - lo == pytest.approx(hi - 0.7)
    assert prediction_interval(0.7, 0.02, 2000, design_effect=2.0)[1] > hi
    # coverage: estimate ~ N(p, se^2), live ~ Binomial(n, p) / n, independent -> about 95 % of live values inside
    rng = np.random.default_rng(0)
    p, se, n = 0.7, 0.015, 1900
    inside = 0
    for _ in range(2000):
        estimate = rng.normal(p, se)
        lo, hi = prediction_interval(estimate, se, n)
        inside += lo <= rng.binomial(n, p) / n <= hi
    assert 0.93 <= inside / 2000 <= 0.97


def _joined(n: int, explore: float, seed: int = 0) -> list[dict]:
    """Records shaped like `irp logs join` output; the logging policy offered where its (random) score passed."""
    rng = np.random.default_rng(seed)
    records = make_records(n, seed=seed)
    for i, r in enumerate(records):
        r["session_id"] = f"js{i // 3}"  # sessions of three requests
        above = bool(rng.random() < 0.3)
        mu = (1 - explore) * above + explore * 0.5
        offered = bool(rng.random() < mu)
        r.update(tap=r["label"], offered=offered, propensity=mu, eligible=True, explored=offered != above,
                 accepted=(r["label"] if offered else None), logged_probability=0.5, logged_threshold=0.5,
                 model_version="A", ts=0.0)
    return records


def test_unsupported_candidate_is_refused() -> None:
    records = _joined(200, explore=0.0)
    probs = np.linspace(0, 1, 200)
    with pytest.raises(PolicyEvalError, match="no support"):
        evaluate_candidate(records, probs, 0.5)
    ok = evaluate_candidate(_joined(200, explore=0.3), probs, 0.5, n_boot=50)
    assert ok["support"]["unsupported"] == 0 and ok["candidate_offers"] == 100
    assert ok["resampled"] == "session_id" and ok["n_resampled_units"] == 67 and "design_effect" in ok
    partial = _joined(200, explore=0.3)
    del partial[5]["session_id"]  # one record without a session: fall back to records, and say so
    flat = evaluate_candidate(partial, probs, 0.5, n_boot=50)
    assert flat["resampled"] == "record" and "session_id" in flat["resampled_note"]
    by_record = evaluate_candidate(_joined(200, explore=0.3), probs, 0.5, n_boot=50, resample="record")
    assert by_record["resampled"] == "record"


@pytest.fixture(scope="module")
def candidate(tiny_backbone: str, small_log: dict[str, Path], tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("candidate")
    proc = subprocess.run(IRP + ["train", "--train", str(small_log["train"]), "--valid", str(small_log["valid"]),
                                 "--out", str(out), "--backbone", tiny_backbone, "--max-steps", "6", "--batch-size",
                                 "16", "--lr", "3e-3", "--device", "cpu", "--no-cache"],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr
    return out


def test_policy_eval_cli(candidate: Path, tmp_path: Path) -> None:
    write_records(tmp_path / "explored.jsonl", _joined(300, explore=0.2))
    proc = subprocess.run(IRP + ["policy-eval", "--logs", str(tmp_path / "explored.jsonl"), "--model", str(candidate),
                                 "--json", str(tmp_path / "pe.json"), "--n-boot", "100"],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "pe.json").read_text())
    for metric in ("offer_rate", "precision", "accepts_per_1000", "live_precision"):
        assert {"ips", "ips_ci", "snips", "snips_ci"} <= set(report[metric]) and metric in report["logging"]
    assert report["n"] == 300 and "ess" in report and report["support"]["unsupported"] == 0
    assert report["resampled"] == "session_id" and report["n_resampled_units"] == 100
    assert "resampling sessions" in proc.stdout and "live precision (accepted / offers)" in proc.stdout

    write_records(tmp_path / "greedy.jsonl", _joined(300, explore=0.0))
    proc = subprocess.run(IRP + ["policy-eval", "--logs", str(tmp_path / "greedy.jsonl"), "--model", str(candidate),
                                 "--threshold", "0"], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 1 and "no support" in proc.stderr

    write_records(tmp_path / "plain.jsonl", make_records(20))  # not a joined log
    proc = subprocess.run(IRP + ["policy-eval", "--logs", str(tmp_path / "plain.jsonl"), "--model", str(candidate)],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2 and "logs join" in proc.stderr


def test_policy_eval_streams_jsonl_and_joined_parquet_with_scores(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from irp.cli import app
    from irp.data.nested import encode_product
    from irp.logs.duck import JOINED_SCHEMA
    from irp.logs.policy_eval import STREAM_ROWS, evaluate_arrays, stream_log

    records = _joined(900, explore=0.3, seed=4)
    probs = np.round(np.random.default_rng(1).random(900), 6)
    want = evaluate_candidate(records, probs, 0.5, n_boot=60)
    write_records(tmp_path / "joined.jsonl", records)
    rows = [{**r, "products": [encode_product(p) for p in r["products"]]} for r in records]
    pq.write_table(pa.Table.from_pylist(rows, schema=JOINED_SCHEMA), tmp_path / "joined.parquet", row_group_size=128)
    pq.write_table(pa.table({"id": [r["id"] for r in records], "probability": probs}), tmp_path / "scores.parquet")
    by_id = dict(zip([r["id"] for r in records], probs))
    for logs, kwargs in ((tmp_path / "joined.parquet", {"scores": tmp_path / "scores.parquet"}),  # typed columns
                         (tmp_path / "joined.jsonl", {"scores": tmp_path / "scores.parquet"}),
                         (tmp_path / "joined.jsonl", {"score": lambda rs: np.array([by_id[r["id"]] for r in rs])})):
        streamed = stream_log(logs, **kwargs)
        got = evaluate_arrays(streamed.logs, streamed.probabilities, 0.5, streamed.sessions, n_boot=60)
        assert got == want and streamed.n == 900 < STREAM_ROWS * 2
    pq.write_table(pa.table({"id": [r["id"] for r in records][::-1], "probability": probs}), tmp_path / "wrong.parquet")
    with pytest.raises(ValueError, match="does not match the log row by row: row 1"):
        stream_log(tmp_path / "joined.parquet", scores=tmp_path / "wrong.parquet")
    runner = CliRunner()
    base = ["policy-eval", "--logs", str(tmp_path / "joined.parquet"), "--scores", str(tmp_path / "scores.parquet")]
    done = runner.invoke(app, [*base, "--threshold", "0.5", "--n-boot", "60", "--json", str(tmp_path / "pe.json")])
    assert done.exit_code == 0, done.output
    report = json.loads((tmp_path / "pe.json").read_text())
    assert report["precision"]["snips"] == pytest.approx(want["precision"]["snips"]) and report["n"] == 900
    assert runner.invoke(app, base).exit_code == 2  # --scores needs --threshold
