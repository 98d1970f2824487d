"""PNG plots of an evaluation: precision-recall curves, precision/recall against the threshold, reliability.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend
switch, no display needed) and written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from irp.data.io import atomic_path
from irp.metrics import average_precision, check_binary_scores, precision_recall_f05
from irp.threshold import operating_points

Curve = tuple[str, npt.ArrayLike, npt.ArrayLike]  # (label, y_true, scores)


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    FigureCanvasAgg(fig)  # attach the Agg canvas: PNG rendering without pyplot
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    return Path(path)


def plot_pr_curves(
    curves: Sequence[Curve],
    path: str | os.PathLike[str],
    thresholds: Sequence[float | None] | None = None,
    title: str = "Precision-recall",
) -> Path:
    """Several precision-recall curves on one plot (e.g. the variants of an ablation), as PNG.

    `thresholds[i]`, when given, marks curve i's operating point. The legend shows each AP, and a
    dashed line per distinct positive rate shows the no-skill precision.
    """
    if not curves:
        raise ValueError("no curves to plot")
    if thresholds is not None and len(thresholds) != len(curves):
        raise ValueError(f"got {len(thresholds)} thresholds for {len(curves)} curves")
    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    rates: set[float] = set()
    for i, (label, y_true, scores) in enumerate(curves):
        y, s = check_binary_scores(y_true, scores)
        op = operating_points(y, s)
        # Start at recall 0 with the precision of the highest threshold; steps as in AP's definition.
        recall = [0.0, *op.recall.tolist()]
        precision = [float(op.precision[0]), *op.precision.tolist()]
        (line,) = ax.step(recall, precision, where="post", label=f"{label} (AP {average_precision(y, s):.3f})")
        rates.add(round(float(y.mean()), 4))
        threshold = thresholds[i] if thresholds is not None else None
        if threshold is not None:
            p, r, _ = precision_recall_f05(y, s, threshold)
            ax.plot([r], [p], "o", color=line.get_color(), markersize=7)
            ax.annotate(f"t={threshold:.3g}", (r, p), textcoords="offset points", xytext=(6, 6), fontsize=8)
    for rate in sorted(rates):
        ax.axhline(rate, linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.01), ylim=(0, 1.01), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def plot_pr_curve(
    y_true: npt.ArrayLike,
    scores: npt.ArrayLike,
    path: str | os.PathLike[str],
    threshold: float | None = None,
    label: str = "model",
) -> Path:
    """The precision-recall curve of one model as PNG, with its operating point when `threshold` is set."""
    return plot_pr_curves([(label, y_true, scores)], path, [threshold])


def plot_threshold_curves(
    y_true: npt.ArrayLike,
    scores: npt.ArrayLike,
    path: str | os.PathLike[str],
    threshold: float | None = None,
    title: str = "Precision and recall against the threshold",
) -> Path:
    """Precision and recall (and F0.5) as functions of the threshold, as PNG; `threshold` as a vertical line."""
    op = operating_points(y_true, scores)
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    # The metrics at score s_k hold for every threshold in (s_{k+1}, s_k]; with descending x, "post".
    ax.step(op.thresholds, op.precision, where="post", label="precision")
    ax.step(op.thresholds, op.recall, where="post", label="recall")
    ax.step(op.thresholds, op.f05, where="post", label="F0.5", alpha=0.6)
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.3g}")
    ax.set(xlabel="threshold (predict score >= threshold)", ylabel="value", ylim=(0, 1.01), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_reliability(
    y_true: npt.ArrayLike,
    probs: npt.ArrayLike,
    path: str | os.PathLike[str],
    bins: int = 15,
    title: str = "Reliability diagram",
) -> Path:
    """Observed positive rate against mean predicted probability per equal-width bin (the ECE's bins), as PNG,
    with the diagonal of perfect calibration and the share of records per bin underneath."""
    from irp.calibration import brier_score, expected_calibration_error, reliability_bins

    b = reliability_bins(y_true, probs, bins)
    filled = b["count"] > 0
    centers = (b["edges"][:-1] + b["edges"][1:]) / 2  # (bins,)
    fig = Figure(figsize=(5.5, 6))
    ax, hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8, label="perfectly calibrated")
    ece, brier = expected_calibration_error(y_true, probs, bins), brier_score(y_true, probs)
    ax.plot(b["mean_prob"][filled], b["frac_pos"][filled], "o-", label=f"model (ECE {ece:.3f}, Brier {brier:.3f})")
    ax.set(ylabel="observed positive rate", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    hist.bar(centers, b["count"] / b["count"].sum(), width=1.0 / bins, edgecolor="white")
    hist.set(xlabel="predicted probability", ylabel="share of records")
    hist.grid(alpha=0.3)
    return _save(fig, path)
