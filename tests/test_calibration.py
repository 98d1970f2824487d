"""Calibration maps against scikit-learn and plain-numpy references; temperature scaling fixes over-confidence."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import brier_score_loss

from irp.calibration import (
    brier_score,
    calibrate_logits,
    expected_calibration_error,
    fit_calibration,
    fit_temperature,
    reliability_bins,
    sigmoid,
)
from irp.metrics import average_precision


def overconfident(n: int = 5000, scale: float = 5.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true logits, labels drawn from them, logits scaled x `scale`): a model that is too sure of itself."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-0.5, 1.5, n)
    y = (rng.random(n) < sigmoid(z)).astype(float)
    return z, y, scale * z


def ece_reference(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """ECE with a plain loop over equal-width bins [k/bins, (k+1)/bins), the last bin closed."""
    total = 0.0
    for k in range(bins):
        lo, hi = k / bins, (k + 1) / bins
        inside = (p >= lo) & ((p < hi) if k < bins - 1 else (p <= hi))
        if inside.any():
            total += inside.mean() * abs(y[inside].mean() - p[inside].mean())
    return total


def test_temperature_scaling_lowers_ece_of_an_overconfident_model() -> None:
    _, y, z = overconfident()
    cal = fit_calibration("temperature", z, y)
    assert cal["temperature"] == pytest.approx(5.0, rel=0.1)  # it undoes the x5
    before = expected_calibration_error(y, sigmoid(z))
    after = expected_calibration_error(y, calibrate_logits(cal, z))
    assert before > 0.1 and after < 0.03 and after < before / 4
    assert brier_score(y, calibrate_logits(cal, z)) < brier_score(y, sigmoid(z))


def test_temperature_is_the_nll_minimum() -> None:
    _, y, z = overconfident(2000, 3.0, seed=1)
    t = fit_temperature(z, y)

    def nll(temp: float) -> float:
        p = np.clip(sigmoid(z / temp), 1e-12, 1 - 1e-12)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    grid = np.exp(np.linspace(np.log(0.2), np.log(20), 2001))
    assert t == pytest.approx(grid[np.argmin([nll(g) for g in grid])], rel=0.01)


def test_isotonic_matches_sklearn_on_new_logits() -> None:
    _, y, z = overconfident(1500, seed=2)
    cal = fit_calibration("isotonic", z, y)
    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(sigmoid(z), y)
    # exactly sklearn's values on the validation scores (the threshold is chosen on these) ...
    np.testing.assert_allclose(calibrate_logits(cal, z), reference.predict(sigmoid(z)), atol=1e-6)
    # ... and close elsewhere: only the cliffs rising into a plateau are 1e-4 (in logit) shorter
    new = np.random.default_rng(3).normal(0, 8, 500)
    np.testing.assert_allclose(calibrate_logits(cal, new), reference.predict(sigmoid(new)), atol=2e-3)
    assert expected_calibration_error(y, calibrate_logits(cal, z)) < 0.02  # in-sample isotonic is nearly exact


def test_isotonic_plateaus_are_robust_to_runtime_float_noise() -> None:
    """A repeated query scores exactly at a plateau's first knot; torch vs ONNX noise (~1e-6 in logit) must not
    move it off the plateau (and across a threshold set at the plateau's value)."""
    rng = np.random.default_rng(5)
    z = np.round(rng.normal(0, 2, 400), 2)  # many repeated scores, as repeated queries give
    y = (rng.random(400) < sigmoid(z)).astype(float)
    cal = fit_calibration("isotonic", z, y)
    p = calibrate_logits(cal, z)
    for noise in (-1e-6, 1e-6, -3e-5):
        np.testing.assert_array_equal(calibrate_logits(cal, z + noise), p)


@pytest.mark.parametrize("method", ["temperature", "isotonic", "none"])
def test_maps_are_monotone_json_able_and_float32(method: str) -> None:
    _, y, z = overconfident(800, seed=4)
    cal = json.loads(json.dumps(fit_calibration(method, z, y)))  # what config.json stores
    p = calibrate_logits(cal, z)
    assert p.dtype == np.float32 and p.shape == z.shape and ((p >= 0) & (p <= 1)).all()
    order = np.argsort(z)
    assert (np.diff(p[order]) >= 0).all()  # monotone: never reorders
    if method != "isotonic":  # strictly monotone: AP unchanged (isotonic may merge ties, which can move AP)
        assert average_precision(y, p) == pytest.approx(average_precision(y, sigmoid(z)), abs=1e-6)
    meta = {"threshold": {"value": 0.5}, "calibration": cal}
    np.testing.assert_array_equal(calibrate_logits(meta, z), p)  # whole config.json meta works too


def test_missing_calibration_is_plain_sigmoid_and_bad_ones_are_refused() -> None:
    z = np.array([-3.0, 0.0, 2.5])
    expected = sigmoid(z).astype(np.float32)
    for meta in (None, {}, {"threshold": {}}, {"calibration": None}, {"calibration": {"method": "none"}}):
        np.testing.assert_array_equal(calibrate_logits(meta, z), expected)
    with pytest.raises(ValueError, match="unknown calibration method"):
        calibrate_logits({"method": "platt"}, z)
    with pytest.raises(ValueError, match="positive finite"):
        calibrate_logits({"method": "temperature", "temperature": 0.0}, z)
    with pytest.raises(ValueError, match="knots"):
        calibrate_logits({"method": "isotonic", "x": [], "y": []}, z)


def test_fit_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="both classes"):
        fit_calibration("temperature", [0.1, 2.0], [1, 1])
    with pytest.raises(ValueError, match="both classes"):
        fit_calibration("isotonic", [0.1, 2.0], [0, 0])
    with pytest.raises(ValueError, match="must be one of"):
        fit_calibration("platt", [0.1, 2.0], [0, 1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no examples"):
        fit_calibration("temperature", [], [])
    with pytest.raises(ValueError, match="finite"):
        fit_calibration("temperature", [np.nan, 1.0], [0, 1])
    with pytest.raises(ValueError, match="differ in length"):
        fit_calibration("none", [0.0, 1.0], [0])


probabilities = st.integers(1, 200).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n),
        st.lists(st.floats(0, 1, allow_nan=False), min_size=n, max_size=n),
    )
)


@settings(max_examples=150, deadline=None)
@given(probabilities, st.sampled_from([1, 2, 10, 15]))
def test_ece_and_brier_match_references(data: tuple[list[int], list[float]], bins: int) -> None:
    y, p = np.array(data[0], dtype=float), np.array(data[1])
    assert expected_calibration_error(y, p, bins) == pytest.approx(ece_reference(y, p, bins), abs=1e-12)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    b = reliability_bins(y, p, bins)
    assert b["count"].sum() == len(y) and len(b["edges"]) == bins + 1


def test_probability_range_is_checked() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([0, 1], [0.5, 1.5])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        brier_score([0, 1], [-0.1, 0.5])
