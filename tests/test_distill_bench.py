"""bench/distill_simmc.py: the issue's bar and the table text (pure logic; the models are exercised elsewhere)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import load_bench

bench = load_bench("distill_simmc")


def _row(name: str, backbone: str, ap: float, precision: float, recall: float, p50: float | None) -> dict:
    return {"name": name, "backbone": backbone, "ap": ap, "ap_ci": [ap - 0.05, ap + 0.05], "precision": precision,
            "recall": recall, "verdict": "consistent", "train_min": 17.0, "cpu_p50_ms": p50, "runtime": "onnx-int8",
            "encoder_params_m": 22.7}


def test_bar_needs_the_gain_the_operating_point_and_the_latency() -> None:
    rows = {"base": _row("base", "minilm-l6", 0.76, 0.76, 0.57, 10.0),
            "good_l6": _row("good_l6", "minilm-l6", 0.785, 0.81, 0.46, 10.0),
            "close_l6": _row("close_l6", "minilm-l6", 0.775, 0.81, 0.46, 10.0),
            "l3": _row("l3", "minilm-l3", 0.77, 0.78, 0.5, 5.5),
            "slow_l3": _row("slow_l3", "minilm-l3", 0.77, 0.78, 0.5, 6.5)}
    out = bench.bar(rows, "base", ["good_l6", "close_l6", "l3", "slow_l3"])
    assert out["good_l6"]["ap_gain_ok"] and out["good_l6"]["precision_recall_ok"]
    assert not out["close_l6"]["ap_gain_ok"]  # +0.015 < +0.02
    assert out["l3"]["ap_ok"] and out["l3"]["p50_ok"] and out["l3"]["p50_ratio"] == 0.55
    assert not out["slow_l3"]["p50_ok"]


def test_a_student_without_a_measured_latency_fails_the_latency_bar() -> None:
    rows = {"base": _row("base", "minilm-l6", 0.76, 0.76, 0.57, None), "l3": _row("l3", "minilm-l3", 0.8, 0.8, 0.5, 4.0)}
    out = bench.bar(rows, "base", ["l3"])
    assert out["l3"]["p50_ratio"] is None and out["l3"]["p50_ok"] is False


def test_markdown_has_a_line_per_model_and_dashes_where_nothing_was_measured() -> None:
    rows = [_row("base", "minilm-l6", 0.76, 0.76, 0.57, 10.0), _row("ens", "minilm-l6", 0.77, 0.77, 0.6, None)]
    rows[1]["ap_vs_baseline"] = {"diff": 0.01, "lo": -0.005, "hi": 0.02}
    text = bench.markdown(rows).splitlines()
    assert len(text) == 4
    assert "| base | minilm-l6 | 0.7600 [0.7100, 0.8100] | — |" in text[2]
    assert "+0.0100 [-0.0050, +0.0200]" in text[3] and text[3].count("—") == 1
    assert np.isclose(float(text[3].split("|")[3].split()[0]), 0.77)


def test_ensemble_row_averages_its_members_and_sums_their_train_time() -> None:
    rng = np.random.default_rng(0)
    y_sel, y_rep = (rng.random(400) < 0.3).astype(float), (rng.random(300) < 0.3).astype(float)
    sel = {m: np.clip(y_sel * 0.6 + rng.random(400) * 0.5, 0, 1) for m in ("a", "b")}
    rep = {m: np.clip(y_rep * 0.6 + rng.random(300) * 0.5, 0, 1) for m in ("a", "b")}
    rows = {"a": _row("a", "minilm-l6", 0.7, 0.8, 0.5, 5.0), "b": _row("b", "mpnet-base", 0.7, 0.8, 0.5, 20.0)}
    r = bench.ensemble_row(["a", "b"], y_sel, y_rep, sel, rep, rows, rep["a"], n_boot=50)
    mean = (rep["a"] + rep["b"]) / 2
    alone = bench.row("x", y_rep, mean, r["threshold"], None, n_boot=50)
    assert r["name"] == "ensemble(a+b)" and r["backbone"] == "minilm-l6+mpnet-base" and r["train_min"] == 34.0
    assert r["ap"] == alone["ap"] and "ap_vs_baseline" in r


def test_seed_means_table_has_a_line_per_recipe_and_nothing_without_groups() -> None:
    rows = {"a": {"ap": 0.78, "ap_vs_baseline": {"diff": 0.02}}, "b": {"ap": 0.76, "ap_vs_baseline": {"diff": 0.0}},
            "c": {"ap": 0.75, "ap_vs_baseline": {"diff": -0.01}}}
    means = bench.seed_means({"r1": ["a", "b"], "r2": ["c"]}, rows)
    assert [m["mean_gain"] for m in means] == [0.01, -0.01]
    text = bench.seed_markdown(means).splitlines()
    assert text[-2] == "| r1 | a, b | 0.7700 (0.7600-0.7800) | +0.0100 |" and len(text) == 5
    assert bench.seed_markdown([]) == ""


def test_plot_without_timings_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--runs", str(tmp_path), "--baseline", "t", "--teachers", "t", "--no-cost",
                    "--out", str(tmp_path / "x.json"), "--plot", str(tmp_path / "x.png")])
    assert exit_info.value.code == 2 and not list(tmp_path.iterdir())
