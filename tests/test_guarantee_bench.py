"""bench/guarantee.py: session-disjoint draws and the coverage bookkeeping (pure logic, no model)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_bench

g = load_bench("guarantee")


def _codes(rng: np.random.Generator, sessions: int = 300) -> np.ndarray:
    sizes = rng.integers(1, 7, sessions)
    return rng.permutation(np.repeat(np.arange(sessions), sizes))


def test_draw_split_n_valid_is_exact_and_session_disjoint():
    rng = np.random.default_rng(0)
    codes = _codes(rng)
    for _ in range(20):
        v, t = g.draw_split(codes, rng, n_valid=200)
        assert v.size == 200 and len(np.intersect1d(v, t)) == 0
        # at most one session is cut, and none of its records goes to test
        assert not set(codes[v].tolist()) & set(codes[t].tolist())
        left_out = codes.size - v.size - t.size
        assert 0 <= left_out < 6


def test_draw_split_session_fraction_uses_every_record():
    rng = np.random.default_rng(1)
    codes = _codes(rng)
    v, t = g.draw_split(codes, rng, session_fraction=0.5)
    assert v.size + t.size == codes.size
    assert len(np.unique(codes[v])) == 150 and not set(codes[v].tolist()) & set(codes[t].tolist())
    with pytest.raises(ValueError):
        g.draw_split(codes, rng)


def test_certified_rule_covers_and_point_rule_does_not_on_a_synthetic_pool():
    """Precision declines smoothly through the target (0.97 in the top 5 %, 0.8 at the top 28 %): the point rule
    sits at the crossing (the winner's curse: about half the trials miss), the certified rule above it."""
    rng = np.random.default_rng(2)
    n = 30_000
    s = rng.random(n)
    y = (rng.random(n) < s**1.5).astype(np.int64)
    codes = np.arange(n)
    res = g.run_trials(y, s, codes, trials=50, target=0.8, confidence=0.9, seed=0, n_valid=2000)
    summary = g.summarize(res, 0.8)
    assert summary["coverage_guaranteed"] >= 0.8 and summary["fallback_rate_guaranteed"] <= 0.05
    assert summary["coverage_point"] <= 0.75
    assert summary["median_recall_guaranteed"] < summary["median_recall_point"]
    assert summary["violation_rate_guaranteed"] <= 0.2 and summary["violation_rate_guaranteed_pool"] <= 0.2
    assert summary["fallback_rate_point"] == 0.0
    # one record per session: the grouped rule is the certified rule (design effect exactly 1)
    assert np.array_equal(res["grouped"].threshold, res["guaranteed"].threshold)
    assert summary["median_design_effect_grouped"] == 1.0


def test_doctests():
    import doctest

    assert doctest.testmod(g).failed == 0


def test_empty_test_prediction_counts_as_not_covered():
    t = g.Trials(np.array([np.nan, 0.9]), np.array([0.0, 0.5]), np.array([0, 5]), np.array([False, False]),
                 np.zeros(2), np.zeros(2), np.array([0.85, 0.85]), np.full(2, np.nan))
    s = g.summarize({"guaranteed": t}, 0.8)
    assert s["coverage_guaranteed"] == 0.5 and s["empty_test_guaranteed"] == 1
