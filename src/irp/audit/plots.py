"""The audit report's two figures: verdicts by stratum (score band x label), and the promise translated."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from irp.plots import _save


def plot_verdicts_by_band(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Per stratum: stacked shares of yes / no / can't tell among reviewed records, and the estimated visual
    share with its 95 % interval (points), population size in the tick label."""
    strata = report["strata"]
    fig = Figure(figsize=(max(6.0, 1.3 * len(strata) + 2), 4.6))
    ax = fig.add_subplot()
    x = np.arange(len(strata))
    yes = np.array([s["visual_share"] * s["decided"] if s["decided"] else 0.0 for s in strata])
    decided = np.array([s["decided"] for s in strata], dtype=float)
    unsure = np.array([s["cant_tell"] for s in strata], dtype=float)
    reviewed = np.maximum(decided + unsure, 1.0)
    ax.bar(x, yes / reviewed, color="#2b8cbe", label="yes (visual)")
    ax.bar(x, (decided - yes) / reviewed, bottom=yes / reviewed, color="#d9d9d9", label="no")
    ax.bar(x, unsure / reviewed, bottom=decided / reviewed, color="#fdae6b", label="can't tell")
    share = np.array([s["visual_share"] for s in strata], dtype=float)
    ci = np.array([s["ci95"] for s in strata], dtype=float)
    ok = ~np.isnan(share)
    ax.errorbar(x[ok], share[ok], yerr=[share[ok] - ci[ok, 0], ci[ok, 1] - share[ok]], fmt="o", color="black",
                capsize=4, label="visual share, 95 % CI")
    ax.set_xticks(x, [f"{s['name'].replace('|', chr(10))}\nN={s['population']:,} n={s['decided']}" for s in strata],
                  fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of reviewed records")
    p, r = report["precision"], report["recall"]
    ax.set_title(f"Verdicts by stratum: proxy precision {_pct(p)}, recall {_pct(r)}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def plot_promise(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Precision of visual intent above the threshold as a function of tap precision pi (pi a + (1 - pi) b), with
    the band from the intervals of a and b, the promised pi, and the audited log's own point."""
    promise = report["promise"]
    a, b = promise["visual_given_tap_above"], promise["visual_given_no_tap_above"]
    pi = np.linspace(0, 1, 101)
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.add_subplot()
    ax.plot(pi, pi * a["estimate"] + (1 - pi) * b["estimate"], color="#2b8cbe", label="pi a + (1 - pi) b")
    ax.fill_between(pi, pi * a["ci95"][0] + (1 - pi) * b["ci95"][0], pi * a["ci95"][1] + (1 - pi) * b["ci95"][1],
                    color="#2b8cbe", alpha=0.2, label="a, b at their 95 % bounds")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="visual precision = tap precision")
    promised, t = promise["tap_precision_promised"], promise["translated"]
    if not math.isnan(t["estimate"]):
        ax.errorbar([promised], [t["estimate"]], yerr=[[t["estimate"] - t["ci95"][0]], [t["ci95"][1] - t["estimate"]]],
                    fmt="s", color="#d95f0e", capsize=4, label=f"promise: tap precision {promised:.3f}")
        ax.axvline(promised, color="#d95f0e", ls="--", lw=0.8)
    if "certified_visual_precision_lower_bound" in promise:
        ax.axhline(promise["certified_visual_precision_lower_bound"], color="#d95f0e", lw=0.8,
                   label=f"certified visual bound ({promise['certified_visual_confidence']:.2f})")
    direct = promise["visual_precision_in_audited_log"]
    if not math.isnan(direct["estimate"]):
        ax.errorbar([promise["tap_precision_in_audited_log"]], [direct["estimate"]],
                    yerr=[[direct["estimate"] - direct["ci95"][0]], [direct["ci95"][1] - direct["estimate"]]],
                    fmt="o", color="black", capsize=4, label="audited log above t")
    ax.set_xlabel("tap precision above the threshold (pi)")
    ax.set_ylabel("precision of visual intent above the threshold")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"What the promise means for users (threshold {promise['threshold']:.4g})", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def _pct(estimate: dict[str, Any]) -> str:
    value, (lo, hi) = estimate["estimate"], estimate["ci95"]
    return "n/a" if math.isnan(value) else f"{value:.3f} [{lo:.3f}, {hi:.3f}]"


def write_plots(report: dict[str, Any], folder: str | os.PathLike[str]) -> list[Path]:
    """The figures the report supports, as PNG files in `folder`."""
    folder = Path(folder)
    paths = [plot_verdicts_by_band(report, folder / "audit_verdicts_by_band.png")]
    if (report.get("promise") or {}).get("available"):
        paths.append(plot_promise(report, folder / "audit_promise.png"))
    return paths
