"""Plots of the ablation tables (PNG, Agg canvas, written atomically); small enough to commit (dpi 100)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from irp.experiments.tables import RowResult, TableResult
from irp.fileio import atomic_path
from irp.plots import plot_pr_curves


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            fig.savefig(handle, format="png", dpi=100, bbox_inches="tight")
    return path


def pr_curves(rows: Sequence[RowResult], path: Path, title: str) -> Path | None:
    """Precision-recall curves of seed 0 of each row (operating point marked); None when no row has both classes."""
    curves, thresholds = [], []
    for row in rows:
        if row.curve is None:
            continue
        y, s, thr = row.curve
        if 0 < y.sum() < y.size:
            curves.append((row.name, y, s))
            thresholds.append(thr)
    if not curves:
        return None
    return plot_pr_curves(curves, path, thresholds, title=title)


def _errorbar(ax, x: np.ndarray, rows: Sequence[RowResult], metric: str, label: str, **style) -> None:
    mean = np.array([r.metrics[metric].mean for r in rows])
    std = np.array([r.metrics[metric].std for r in rows])
    ax.errorbar(x, mean, yerr=std, capsize=3, marker="o", label=label, **style)


def sweep_operating_point(table: TableResult, path: Path) -> Path:
    """Precision and recall at the chosen operating point (mean ± std over seeds) against β/α, one line per α."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    alphas = sorted({r.params["alpha"] for r in table.rows})
    for i, alpha in enumerate(alphas):
        rows = sorted((r for r in table.rows if r.params["alpha"] == alpha), key=lambda r: r.params["beta_over_alpha"])
        x = np.array([r.params["beta_over_alpha"] for r in rows])
        suffix = f" (α={alpha:g})" if len(alphas) > 1 else ""
        _errorbar(ax, x, rows, "precision", "precision" + suffix, color="C0", linestyle=["-", "--", ":", "-."][i % 4])
        _errorbar(ax, x, rows, "recall", "recall" + suffix, color="C1", linestyle=["-", "--", ":", "-."][i % 4])
    ax.set(xlabel="β / α (weight of soft precision relative to BCE)", ylabel="test value at the chosen threshold",
           ylim=(0, 1.01), title="Combined loss: operating point against β/α")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def retrieval_failure(table: TableResult, path: Path) -> Path:
    """Precision, recall and AP (mean ± std) against the share of replaced products, with the no-product floors."""
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    rows = sorted((r for r in table.rows if "corruption" in r.params), key=lambda r: r.params["corruption"])
    x = np.array([100 * r.params["corruption"] for r in rows])
    floors = [r for r in table.rows if "corruption" not in r.params]
    styles = ["--", ":", "-."]
    for i, metric in enumerate(("precision", "recall", "ap")):
        _errorbar(ax, x, rows, metric, {"ap": "AP"}.get(metric, metric), color=f"C{i}")
        for j, floor in enumerate(floors):  # the floor's value of the same metric, in the metric's colour
            ax.axhline(floor.metrics[metric].mean, color=f"C{i}", linestyle=styles[j % 3], linewidth=1)
    for j, floor in enumerate(floors):  # one legend entry per floor model
        ax.plot([], [], color="grey", linestyle=styles[j % 3], label=floor.name)
    ax.set(xlabel="% of each record's products replaced by random products", ylabel="test value",
           ylim=(0, 1.01), title="Retrieval failure at test time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def quality_vs_cost(table: TableResult, path: Path) -> Path | None:
    """AP (seed mean, 95 % bootstrap interval) against the CPU p50 latency of one query (left) and against the
    training examples/s (right), one point per backbone and data set; None when no row has a measured cost."""
    groups = list(dict.fromkeys(r.group for r in table.rows))
    cost = {r.name: r.cost for r in table.rows if r.cost and r.cost.get("cpu_p50_ms") is not None}
    if not cost:
        return None
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, key, label in ((axes[0], "cpu_p50_ms", "CPU p50 latency of one query, ms (ONNX, 1 thread; log)"),
                           (axes[1], "train_examples_per_s", "training examples/s (log)")):
        for i, group in enumerate(groups):
            rows = [r for r in table.rows if r.group == group and r.name in cost]
            x = np.array([(cost[r.name] if key == "cpu_p50_ms" else (r.cost or {})).get(key) or np.nan for r in rows],
                         dtype=float)
            y = np.array([r.metrics["ap"].mean for r in rows])
            lo = np.array([(r.interval or {}).get("ap", {}).get("lo", np.nan) for r in rows])
            hi = np.array([(r.interval or {}).get("ap", {}).get("hi", np.nan) for r in rows])
            yerr = np.nan_to_num(np.vstack([y - lo, hi - y]), nan=0.0).clip(min=0)
            ax.errorbar(x, y, yerr=yerr, fmt="o", capsize=3, color=f"C{i}", label=group or "AP")
            for xi, yi, r in zip(x, y, rows):
                ax.annotate(r.name.replace(" (tiny stand-in)", "*"), (xi, yi), textcoords="offset points",
                            xytext=(5, 4), fontsize=8, color=f"C{i}")
        if np.isfinite([v for r in cost.values() for v in [r.get(key) or np.nan]]).any():
            ax.set_xscale("log")
        ax.set(xlabel=label)
        ax.grid(alpha=0.3)
    axes[0].set(ylabel="test AP (mean over seeds)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Backbones: quality against cost")
    return _save(fig, path)


def distill_quality_latency(table: TableResult, path: Path) -> Path | None:
    """Distill table: AP (seed mean, 95 % bootstrap interval) against the CPU p50 of one query (measured on the
    simulated-log model), one point per model with a measured latency and data set; the teacher ensemble has no
    point (a query runs every member: its latency was not measured). None when nothing was measured."""
    latency = {r.name: r.cost["cpu_p50_ms"] for r in table.rows if r.cost and r.cost.get("cpu_p50_ms") is not None}
    if not latency:
        return None
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for i, group in enumerate(dict.fromkeys(r.group for r in table.rows)):
        rows = [r for r in table.rows if r.group == group and r.name in latency]
        x = np.array([latency[r.name] for r in rows], dtype=float)
        y = np.array([r.metrics["ap"].mean for r in rows])
        lo = np.array([(r.interval or {}).get("ap", {}).get("lo", np.nan) for r in rows])
        hi = np.array([(r.interval or {}).get("ap", {}).get("hi", np.nan) for r in rows])
        ax.errorbar(x, y, yerr=np.nan_to_num(np.vstack([y - lo, hi - y]), nan=0.0).clip(min=0), fmt="o", capsize=3,
                    color=f"C{i}", label=group or "AP")
        for xi, yi, r in zip(x, y, rows):
            ax.annotate(r.name, (xi, yi), textcoords="offset points", xytext=(5, 4), fontsize=8, color=f"C{i}")
    ax.set(xlabel="CPU p50 latency of one query, ms (ONNX auto runtime, 1 thread)", ylabel="test AP (mean over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle("Distillation: quality against serving latency")
    return _save(fig, path)


def table_plots(table: TableResult, plot_dir: Path) -> list[str]:
    """Write the plots of one table; returns their file names."""
    written: list[Path | None] = []
    if table.key in ("table1", "table2", "table3", "sweep"):
        first = table.rows[0].group if table.rows else ""
        rows = [r for r in table.rows if r.group == first]
        written.append(pr_curves(rows, plot_dir / f"{table.key}_pr.png", f"{table.title} (seed 0)"))
    if table.key == "sweep" and table.rows:
        written.append(sweep_operating_point(table, plot_dir / "sweep_operating_point.png"))
    if table.key == "robustness_retrieval" and table.rows:
        written.append(retrieval_failure(table, plot_dir / "robustness_retrieval.png"))
    if table.key == "backbones" and table.rows:
        written.append(quality_vs_cost(table, plot_dir / "backbones_quality_cost.png"))
    if table.key == "distill" and table.rows:
        written.append(distill_quality_latency(table, plot_dir / "distill_quality_latency.png"))
    if table.key == "transfer":
        for group in dict.fromkeys(r.group for r in table.rows):
            stem = group.lower().replace("simmc ", "").replace(" ", "_")
            rows = [r for r in table.rows if r.group == group]
            written.append(pr_curves(rows, plot_dir / f"transfer_{stem}_pr.png", f"{group} (seed 0)"))
    return [p.name for p in written if p is not None]
