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
from irp.offpolicy import (bootstrap_interval, effective_sample_size, ips, ips_weights, policy_estimates, snips,
                           unsupported)

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
    truth = {"offer_rate": b.mean(), "precision": y[b].mean(), "accepts_per_1000": 1000 * (b * would_accept).mean()}
    # Population truth (the expectation the estimators target): E[b y] / E[b] etc. with the known s.
    population = {"offer_rate": b.mean(), "precision": (b * s).sum() / b.sum(),
                  "accepts_per_1000": 1000 * (b * (0.1 + 0.6 * s)).mean()}
    return b, a, mu, y, accepted, truth, population


def test_estimates_match_the_counterfactual_truth_on_one_large_log() -> None:
    rng = np.random.default_rng(0)
    b, a, mu, y, accepted, truth, _ = _simulated_log(rng, 40_000)
    est = policy_estimates(b, a, mu, y, accepted, n_boot=300, seed=1)
    assert est["offer_rate"]["exact"] == pytest.approx(truth["offer_rate"])
    for metric in ("offer_rate", "precision", "accepts_per_1000"):
        for method in ("ips", "snips"):
            lo, hi = est[metric][f"{method}_ci"]
            assert lo <= est[metric][method] <= hi
            assert lo - 0.01 * abs(truth[metric]) <= truth[metric] <= hi + 0.01 * abs(truth[metric]), (metric, method)
    assert est["logging"]["offer_rate"]["value"] == pytest.approx(a.mean())
    assert est["logging"]["precision"]["value"] == pytest.approx(y[a].mean())
    assert 0 < est["ess_offers"] < est["ess"] <= len(b)


def test_interval_coverage_on_repeated_simulated_logs() -> None:
    """95 % bootstrap intervals of SNIPS precision and IPS accepts cover the population truth in most of 60 logs."""
    hits = {"precision.snips": 0, "accepts_per_1000.ips": 0, "accepts_per_1000.snips": 0}
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


def _joined(n: int, explore: float, seed: int = 0) -> list[dict]:
    """Records shaped like `irp logs join` output; the logging policy offered where its (random) score passed."""
    rng = np.random.default_rng(seed)
    records = make_records(n, seed=seed)
    for r in records:
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
    for metric in ("offer_rate", "precision", "accepts_per_1000"):
        assert {"ips", "ips_ci", "snips", "snips_ci"} <= set(report[metric]) and metric in report["logging"]
    assert report["n"] == 300 and "ess" in report and report["support"]["unsupported"] == 0

    write_records(tmp_path / "greedy.jsonl", _joined(300, explore=0.0))
    proc = subprocess.run(IRP + ["policy-eval", "--logs", str(tmp_path / "greedy.jsonl"), "--model", str(candidate),
                                 "--threshold", "0"], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 1 and "no support" in proc.stderr

    write_records(tmp_path / "plain.jsonl", make_records(20))  # not a joined log
    proc = subprocess.run(IRP + ["policy-eval", "--logs", str(tmp_path / "plain.jsonl"), "--model", str(candidate)],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 2 and "logs join" in proc.stderr
