"""Metrics against scikit-learn and against a naive bootstrap loop; degenerate cases; plots."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    average_precision_score,
    fbeta_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from irp import metrics
from irp.metrics import (
    UndefinedMetricWarning,
    average_precision,
    confusion_counts,
    evaluation_report,
    nan_to_none,
    paired_bootstrap,
    precision_at_recall,
    precision_recall_f05,
    roc_auc,
)

REPORT_KEYS = {"precision", "recall", "f05", "ap", "roc_auc", "threshold", "n", "positives", "ci"}
CI_KEYS = {"precision", "recall", "f05", "ap", "roc_auc"}


def _data(n: int, seed: int, levels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n,) at ~25 % positives and informative scores; `levels` rounds scores to force ties."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(int)
    s = rng.random(n) + 0.6 * y
    if levels:
        s = np.round(s * levels) / levels
    return y, s


# Small labelled samples with heavy score ties: both classes present.
labelled = st.integers(2, 60).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda y: 0 < sum(y) < len(y)),
        st.lists(st.integers(0, 6).map(lambda v: v / 6), min_size=n, max_size=n),
    )
)


@settings(max_examples=100, deadline=None)
@given(labelled, st.sampled_from([0.0, 1 / 6, 0.5, 4 / 6, 1.0]))
def test_threshold_metrics_match_sklearn(data: tuple[list[int], list[float]], threshold: float) -> None:
    y, s = np.array(data[0]), np.array(data[1])
    pred = (s >= threshold).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, r, f = precision_recall_f05(y, s, threshold)
    assert r == pytest.approx(recall_score(y, pred))
    if pred.sum():
        assert p == pytest.approx(precision_score(y, pred))
        assert f == pytest.approx(fbeta_score(y, pred, beta=0.5))
    else:
        assert math.isnan(p)  # sklearn says 0 with a warning; we say undefined
        assert f == 0.0  # no true positive while positives exist: F is 0, as in sklearn


@settings(max_examples=100, deadline=None)
@given(labelled)
def test_ranking_metrics_match_sklearn_with_ties(data: tuple[list[int], list[float]]) -> None:
    y, s = np.array(data[0]), np.array(data[1])
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s))
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))


@pytest.mark.parametrize("levels", [None, 20])
def test_large_sample_matches_sklearn(levels: int | None) -> None:
    y, s = _data(5000, seed=1, levels=levels)
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert confusion_counts(y, s, 0.7) == (
        int(((s >= 0.7) & (y == 1)).sum()),
        int(((s >= 0.7) & (y == 0)).sum()),
        int(((s < 0.7) & (y == 1)).sum()),
        int(((s < 0.7) & (y == 0)).sum()),
    )


def test_precision_at_recall_is_brute_force_best() -> None:
    y, s = _data(400, seed=2, levels=30)
    for min_recall in (0.0, 0.3, 0.604, 0.9, 1.0):
        best_p, best_t = -1.0, None
        for t in sorted(set(s.tolist()), reverse=True):
            pred = s >= t
            if y[pred].sum() / y.sum() >= min_recall - 1e-12 and y[pred].mean() > best_p:
                best_p, best_t = y[pred].mean(), t
        assert precision_at_recall(y, s, min_recall) == (pytest.approx(best_p), best_t)


def test_report_keys_point_values_and_intervals() -> None:
    y, s = _data(2000, seed=3)
    report = evaluation_report(y, s, threshold=0.8, n_boot=300, seed=0)
    assert set(report) == REPORT_KEYS and set(report["ci"]) == CI_KEYS
    pred = (s >= 0.8).astype(int)
    assert report["precision"] == pytest.approx(precision_score(y, pred))
    assert report["recall"] == pytest.approx(recall_score(y, pred))
    assert report["f05"] == pytest.approx(fbeta_score(y, pred, beta=0.5))
    assert report["ap"] == pytest.approx(average_precision_score(y, s))
    assert report["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert (report["threshold"], report["n"], report["positives"]) == (0.8, 2000, int(y.sum()))
    for name, (lo, hi) in report["ci"].items():
        assert lo < report[name] < hi, name
        assert hi - lo < 0.15, name  # 2000 examples: intervals of a few points, not [0, 1]
    again = evaluation_report(y, s, threshold=0.8, n_boot=300, seed=0)
    assert again == report  # deterministic for a seed
    other = evaluation_report(y, s, threshold=0.8, n_boot=300, seed=1)
    assert other["ci"] != report["ci"]


def test_vectorised_bootstrap_equals_naive_resampling_loop() -> None:
    """The weighted kernel must give exactly what resampling the arrays and calling sklearn gives."""
    y, s = _data(150, seed=4, levels=10)
    n_boot, threshold = 200, 0.7
    report = evaluation_report(y, s, threshold, n_boot=n_boot, seed=7)
    # Same draws as metrics._bootstrap_weights: one block of (n_boot, n) indices for a small n.
    idx = np.random.default_rng(7).integers(0, y.size, size=(n_boot, y.size))
    naive: dict[str, list[float]] = {m: [] for m in CI_KEYS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's zero-division warnings
        for row in idx:
            yb, sb = y[row], s[row]
            pred = (sb >= threshold).astype(int)
            if pred.sum():
                naive["precision"].append(precision_score(yb, pred))
            if yb.sum() or pred.sum():
                naive["f05"].append(fbeta_score(yb, pred, beta=0.5))
            if yb.sum():
                naive["recall"].append(recall_score(yb, pred))
                naive["ap"].append(average_precision_score(yb, sb))
            if 0 < yb.sum() < yb.size:
                naive["roc_auc"].append(roc_auc_score(yb, sb))
    for name in CI_KEYS:
        lo, hi = np.percentile(naive[name], [2.5, 97.5])
        assert report["ci"][name] == pytest.approx([lo, hi], abs=1e-12), name


def test_bootstrap_of_10k_scores_is_fast() -> None:
    y, s = _data(10_000, seed=5)
    start = time.perf_counter()
    evaluation_report(y, s, 0.8, n_boot=1000, seed=0)
    assert time.perf_counter() - start < 5.0  # ~0.6 s on one shared core


def test_degenerate_inputs_give_nan_with_reason() -> None:
    with pytest.warns(UndefinedMetricWarning) as caught:
        report = evaluation_report([0, 0, 0], [0.1, 0.5, 0.9], 0.5, n_boot=50)
    reasons = " / ".join(str(w.message) for w in caught)
    assert "recall is undefined (no positive label)" in reasons and "roc_auc is undefined" in reasons
    assert math.isnan(report["recall"]) and math.isnan(report["ap"]) and math.isnan(report["roc_auc"])
    assert report["precision"] == 0.0 and report["positives"] == 0
    assert all(math.isnan(v) for v in report["ci"]["ap"])

    with pytest.warns(UndefinedMetricWarning) as caught:
        report = evaluation_report([1, 1], [0.2, 0.4], 0.5, n_boot=50)
    reasons = " / ".join(str(w.message) for w in caught)
    assert "both a positive and a negative" in reasons and "no example is predicted positive" in reasons
    assert report["ap"] == 1.0 and math.isnan(report["roc_auc"])
    assert math.isnan(report["precision"]) and report["recall"] == 0.0  # nothing predicted positive

    with pytest.warns(UndefinedMetricWarning):
        empty = evaluation_report([], [], 0.5, n_boot=10)
    assert empty["n"] == 0 and math.isnan(empty["ap"]) and math.isnan(empty["ci"]["precision"][0])

    with pytest.warns(UndefinedMetricWarning, match="no example is predicted positive"):
        p, r, f = precision_recall_f05([0, 1], [0.1, 0.2], threshold=0.9)
    assert math.isnan(p) and r == 0.0 and f == 0.0


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="only 0 and 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="differ in length"):
        roc_auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        roc_auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="metric must be one of"):
        paired_bootstrap([0, 1], [0.1, 0.2], 0.5, [0.1, 0.2], 0.5, metric="auc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs both thresholds"):
        paired_bootstrap([0, 1], [0.1, 0.2], None, [0.1, 0.2], 0.5, metric="precision")


def test_paired_bootstrap_identical_models_show_no_difference() -> None:
    y, s = _data(500, seed=6)
    r = paired_bootstrap(y, s, 0.8, s, 0.8, metric="precision", n_boot=200)
    assert r == {"diff": 0.0, "lo": 0.0, "hi": 0.0, "p_value": 1.0}


def test_paired_bootstrap_detects_a_better_model_and_is_antisymmetric() -> None:
    y, good = _data(800, seed=7)
    noisy = good + np.random.default_rng(8).normal(0, 0.6, good.size)
    ab = paired_bootstrap(y, good, None, noisy, None, metric="ap", n_boot=500, seed=3)
    ba = paired_bootstrap(y, noisy, None, good, None, metric="ap", n_boot=500, seed=3)
    assert ab["diff"] == pytest.approx(average_precision_score(y, good) - average_precision_score(y, noisy))
    assert ab["diff"] > 0 and ab["lo"] > 0 and ab["p_value"] < 0.01
    assert ba["diff"] == pytest.approx(-ab["diff"]) and ba["hi"] == pytest.approx(-ab["lo"])
    assert ba["p_value"] == pytest.approx(ab["p_value"])


def test_paired_bootstrap_equals_naive_paired_loop() -> None:
    y, a = _data(120, seed=9, levels=8)
    b = np.random.default_rng(10).random(y.size)
    r = paired_bootstrap(y, a, 0.6, b, 0.5, metric="f05", n_boot=150, seed=11)
    idx = np.random.default_rng(11).integers(0, y.size, size=(150, y.size))
    diffs = [
        fbeta_score(y[i], (a[i] >= 0.6).astype(int), beta=0.5) - fbeta_score(y[i], (b[i] >= 0.5).astype(int), beta=0.5)
        for i in idx
        if y[i].sum()
    ]
    assert [r["lo"], r["hi"]] == pytest.approx(np.percentile(diffs, [2.5, 97.5]).tolist(), abs=1e-12)


def test_bootstrap_blocks_cover_all_resamples(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a tiny block size the resamples come in many blocks; all of them must be used."""
    monkeypatch.setattr(metrics, "_BLOCK_CELLS", 100)
    blocks = list(metrics._bootstrap_weights(n=30, n_boot=25, seed=0))
    assert sum(len(b) for b in blocks) == 25 and len(blocks) > 1
    assert all((b.sum(axis=1) == 30).all() for b in blocks)  # each resample draws n examples


def test_nan_to_none_makes_strict_json() -> None:
    import json

    with pytest.warns(UndefinedMetricWarning):
        report = evaluation_report([0, 0], [0.1, 0.2], 0.5, n_boot=5)
    json.dumps(nan_to_none(report), allow_nan=False)  # must not raise


# ---- plots ------------------------------------------------------------------------------------------

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plots_write_png_files(tmp_path: Path) -> None:
    from irp.plots import plot_pr_curve, plot_pr_curves, plot_threshold_curves

    y, s = _data(300, seed=12)
    _, s2 = _data(300, seed=13)
    paths = [
        plot_pr_curve(y, s, tmp_path / "pr.png", threshold=0.8, label="model"),
        plot_threshold_curves(y, s, tmp_path / "sub" / "thr.png", threshold=0.8),
        plot_pr_curves([("a", y, s), ("b", y, s2)], tmp_path / "multi.png", thresholds=[0.8, None]),
    ]
    for path in paths:
        assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 5000
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["multi.png", "pr.png", "sub", "thr.png"]  # no temp files
    with pytest.raises(ValueError, match="thresholds for 2 curves"):
        plot_pr_curves([("a", y, s), ("b", y, s2)], tmp_path / "x.png", thresholds=[0.5])


def test_target_verdict_reads_the_interval_not_the_point() -> None:
    """The three verdicts at their boundaries, the demo's case (point below, interval holding the target), and the
    verdict of a real bootstrap report."""
    from irp.metrics import target_verdict, verdict_fields

    assert target_verdict(0.691, [0.66, 0.73], 0.7)["verdict"] == "consistent"
    assert target_verdict(0.72, [0.70, 0.75], 0.7)["verdict"] == "met"  # lower bound == target
    assert target_verdict(0.69, [0.65, 0.70], 0.7)["verdict"] == "consistent"  # upper bound == target
    assert target_verdict(0.69, [0.65, 0.6999], 0.7)["verdict"] == "missed"
    assert target_verdict(0.75, [None, None], 0.7)["interval"] == [0.75, 0.75]  # no bootstrap: the point itself
    undefined = target_verdict(None, None, 0.7)
    assert undefined["verdict"] == "missed" and undefined["precision"] is None and "undefined" in undefined["reason"]

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = np.clip(y * 0.3 + rng.random(400) * 0.7, 0, 1)
    report = evaluation_report(y, s, 0.5, n_boot=300)
    fields = verdict_fields(report, 0.7)
    lo, hi = report["ci"]["precision"]
    assert fields["target_verdict"]["interval"] == [lo, hi] and fields["target_verdict"]["precision"] == report["precision"]
    assert fields["target_met"] == ("met" if lo >= 0.7 else "consistent" if hi >= 0.7 else "missed")
