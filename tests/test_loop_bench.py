"""bench/loop.py and bench/loop_seeds.py: the comparison of the off-policy estimate with the truth (pure logic)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_bench

from irp.offpolicy import policy_estimates, prediction_interval

loop, loop_seeds = load_bench("loop"), load_bench("loop_seeds")


def _ope(rng: np.random.Generator, n: int = 4000) -> dict:
    """A policy-eval report of a candidate on a simulated log (shape of `irp policy-eval --json`)."""
    s = rng.beta(2, 3, n)
    y = (rng.random(n) < s).astype(float)
    acc = (rng.random(n) < 0.05 + 0.55 * y).astype(float)
    mu = 0.8 * (s > 0.5) + 0.1
    a = rng.random(n) < mu
    report = policy_estimates(s > 0.45, a, mu, y, np.where(a, acc, np.nan), n_boot=100, seed=0,
                              clusters=np.arange(n) // 3, cluster_name="session_id")
    return report | {"threshold": 0.45}


def test_measured_values_of_a_sample() -> None:
    m = loop.measured(np.array([True, True, False, True]), np.array([1, 0, 1, 1]), np.array([1, 0, 0, 0]))
    assert m == {"n": 4, "offers": 3, "offer_rate": 0.75, "precision": pytest.approx(2 / 3),
                 "accepts_per_1000": 250.0, "live_precision": pytest.approx(1 / 3)}


def test_compare_names_every_quantity_and_checks_the_intervals() -> None:
    ope = _ope(np.random.default_rng(0))
    inside = {q: ope[q]["snips"] for q in ("offer_rate", "precision", "accepts_per_1000", "live_precision")}
    truth = {"live": inside, "population": inside, "exact_on_eval": inside}
    out = loop.compare(ope, truth, 10_000)
    for name in ("precision", "tap_precision", "accepts_per_1000"):
        assert out[f"within_ci_{name}"] and out[f"population_within_ci_{name}"], name
        lo, hi = out[f"ope_{name}_pi"]
        assert lo < out[f"ope_{name}"] < hi and out[f"abs_error_{name}"] == 0.0
    # "precision" is the live precision of offers (accepted / offers); "tap_precision" the tap label's
    assert out["ope_precision"] == ope["live_precision"]["snips"]
    assert out["ope_tap_precision"] == ope["precision"]["snips"] and out["within_ci"] is True
    # the prediction interval of a share of offers uses B's expected live offers, with the logging design effect
    pi = out["prediction_interval"]["precision"]
    assert pi["n_live"] == pytest.approx(ope["offer_rate"]["exact"] * 10_000)
    expected = prediction_interval(ope["live_precision"]["snips"], ope["live_precision"]["snips_se"], pi["n_live"],
                                   pi["design_effect"])
    assert out["ope_precision_pi"] == pytest.approx(list(expected))
    far = {k: dict(v) for k, v in truth.items()}
    far["live"]["live_precision"] = out["ope_precision_pi"][1] + 0.01
    missed = loop.compare(ope, far, 10_000)
    assert missed["within_ci"] is False and missed["within_ci_tap_precision"] is True


def test_loop_seeds_summary(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    runs = []
    for seed in range(3):
        ope = _ope(rng)
        values = {q: ope[q]["snips"] for q in ("offer_rate", "precision", "accepts_per_1000", "live_precision")}
        truth = {"live": dict(values), "population": dict(values), "exact_on_eval": dict(values)}
        truth["live"]["live_precision"] += 0.01 * (seed - 1)  # errors -0.01, 0, +0.01: mean 0
        result = {"seed": seed, "n_requests": 20_000, "truth": truth} | loop.compare(ope, truth, 10_000)
        (tmp_path / f"s{seed}").mkdir()
        (tmp_path / f"s{seed}" / "loop.json").write_text(json.dumps(result))
        runs.append(tmp_path / f"s{seed}")
    assert loop_seeds.main([*map(str, runs), "--out", str(tmp_path / "seeds.json"), "--plot",
                            str(tmp_path / "seeds.png")]) == 0
    assert (tmp_path / "seeds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "seeds.json").read_text())["summary"]
    assert summary["runs"] == 3 and summary["precision"]["live_in_pi"] == "3 of 3"
    assert summary["precision"]["signed_error_live_minus_ope"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert summary["precision"]["error_live_sample"]["sd"] == pytest.approx(0.01)
    assert summary["tap_precision"]["z_live"]["mean"] == 0.0
    assert loop_seeds.main([str(tmp_path / "missing")]) == 2
