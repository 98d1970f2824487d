"""Is the off-policy estimate of `bench/loop.py` right on average, and do its intervals cover as often as they say?

    for s in 0 1 2 3; do .venv/bin/python bench/loop.py --out runs/loop/s$s --seed $s; done
    .venv/bin/python bench/loop_seeds.py runs/loop/s* --out bench/results/loop_seeds.json \
        --plot bench/results/loop_seeds.png

One loop run gives one estimate and one live measurement: a miss of its 95 % prediction interval is expected
once in twenty runs and says nothing about bias. Each seed of `bench/loop.py` is an independent replication
(new simulated users and traffic, a new held-out split, new models A and B), so over seeds:

- `coverage_*`: share of runs whose interval holds the truth it is about (prediction interval <- live value,
  estimation interval <- population value), nominal 0.95;
- `z_*`: the error in units of the interval's own standard error ((truth - estimate) / (half-width / 1.96)).
  If the estimate is unbiased and the SE right, z ~ N(0, 1): mean 0 (a bias shows as a mean far from 0 in
  units of its standard error 1 / sqrt(runs)), standard deviation 1 (above 1: intervals too narrow);
- the error split into its parts (precision and accepts per 1,000): estimator on its own sample
  (estimate - exact value on the evaluated records), held-out sample (exact on the evaluated records -
  population), live sample (live - population). Their means over seeds say which part, if any, is biased.

Reads each run's loop.json; writes one JSON (rows per run, then the summary) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

Z95 = 1.959964


# (name in loop.json, name in loop["truth"], format): the live precision (accepted / offers), the
# precision on the tap label the artifact promises, accepts per 1,000 requests
QUANTITIES = (("precision", "live_precision", "{:.3f}"), ("tap_precision", "precision", "{:.3f}"),
              ("accepts_per_1000", "accepts_per_1000", "{:.1f}"))


def run_row(loop: dict[str, Any], source: str) -> dict[str, Any]:
    """The numbers of one loop.json that the summary needs, with signed errors and z-scores."""
    row: dict[str, Any] = {"source": source, "seed": loop.get("seed"), "n_requests": loop["n_requests"],
                           "n_ope_eval": loop["n_ope_eval"]}
    truth = loop["truth"]
    for name, truth_name, _ in QUANTITIES:
        ope = loop[f"ope_{name}"]
        live, pop, cf = (truth[k][truth_name] for k in ("live", "population", "exact_on_eval"))
        pi, ci = loop[f"ope_{name}_pi"], loop[f"ope_{name}_ci"]
        pi_se = (pi[1] - pi[0]) / (2 * Z95)
        ci_se = (ci[1] - ci[0]) / (2 * Z95)
        row[name] = {
            "ope": ope, "live": live, "population": pop, "exact_on_eval": cf, "pi": pi, "ci": ci,
            "live_in_pi": pi[0] <= live <= pi[1], "population_in_ci": ci[0] <= pop <= ci[1],
            "z_live": (live - ope) / pi_se, "z_population": (pop - ope) / ci_se,
            # the error live - ope = (live - pop) + (pop - cf) + (cf - ope): which part carries it
            "error_estimator": ope - cf, "error_heldout_sample": cf - pop, "error_live_sample": live - pop,
        }
    return row


def mean_and_se(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=float)
    se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "se": se, "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
            "min": float(v.min()), "max": float(v.max())}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": len(rows)}
    for metric, _, _ in QUANTITIES:
        r = [row[metric] for row in rows]
        out[metric] = {
            "coverage_pi_live": float(np.mean([x["live_in_pi"] for x in r])),
            "coverage_ci_population": float(np.mean([x["population_in_ci"] for x in r])),
            "live_in_pi": f"{sum(x['live_in_pi'] for x in r)} of {len(r)}",
            "population_in_ci": f"{sum(x['population_in_ci'] for x in r)} of {len(r)}",
            "z_live": mean_and_se([x["z_live"] for x in r]),
            "z_population": mean_and_se([x["z_population"] for x in r]),
            "signed_error_live_minus_ope": mean_and_se([x["live"] - x["ope"] for x in r]),
            "error_estimator": mean_and_se([x["error_estimator"] for x in r]),
            "error_heldout_sample": mean_and_se([x["error_heldout_sample"] for x in r]),
            "error_live_sample": mean_and_se([x["error_live_sample"] for x in r]),
            "abs_error_live": mean_and_se([abs(x["live"] - x["ope"]) for x in r]),
        }
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """One panel per quantity: per run, the estimate with its prediction interval and the live value."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(QUANTITIES), 0.45 * len(rows) + 1.6))
    FigureCanvasAgg(fig)
    for i, (name, _, _) in enumerate(QUANTITIES):
        ax = fig.add_subplot(1, len(QUANTITIES), i + 1)
        for y, row in enumerate(rows):
            x = row[name]
            ax.plot(x["pi"], [y, y], color="tab:blue", lw=2, label="off-policy estimate, 95 % PI" if y == 0 else None)
            ax.plot([x["ope"]], [y], "o", color="tab:blue")
            ax.plot([x["live"]], [y], "x", color="tab:green" if x["live_in_pi"] else "tab:red", ms=9, mew=2,
                    label="live (B served)" if y == 0 else None)
            ax.plot([x["population"]], [y], "|", color="black", ms=12, label="population" if y == 0 else None)
        ax.set_yticks(range(len(rows)), [f"seed {row.get('seed')}" for row in rows])
        ax.set_title({"precision": "live precision (accepted / offers)", "tap_precision": "precision of offers (tap)",
                      "accepts_per_1000": "accepts per 1,000 requests"}[name], fontsize=10)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.axes[0].legend(loc="lower left", bbox_to_anchor=(0, 1.08), ncol=3, fontsize=8, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="bench/loop.py --out folders (or their loop.json)")
    parser.add_argument("--out", type=Path, help="write the rows and summary here (JSON)")
    parser.add_argument("--plot", type=Path, help="write a PNG: per run, estimate and interval vs the live value")
    args = parser.parse_args(argv)
    rows = []
    for path in args.runs:
        file = path / "loop.json" if path.is_dir() else path
        if not file.is_file():
            print(f"{file}: no loop.json (an unfinished run?)", file=sys.stderr)
            return 2
        rows.append(run_row(json.loads(file.read_text()), str(file)))
    result = {"rows": rows, "summary": summarize(rows)}
    for metric, _, fmt in QUANTITIES:
        print(f"{metric}: ope [prediction interval] vs live | population | exact on the evaluated records")
        for row in rows:
            x = row[metric]
            f = lambda v: fmt.format(v)  # noqa: E731
            print(f"  {f(x['ope'])} [{f(x['pi'][0])}, {f(x['pi'][1])}] vs {f(x['live'])} "
                  f"{'in ' if x['live_in_pi'] else 'OUT'} z {x['z_live']:+.2f} | {f(x['population'])} "
                  f"{'in ' if x['population_in_ci'] else 'OUT'} | {f(x['exact_on_eval'])}   {row['source']}")
        s = result["summary"][metric]
        print(f"  live in PI {s['live_in_pi']}, population in CI {s['population_in_ci']}; z_live mean "
              f"{s['z_live']['mean']:+.2f} (se {s['z_live']['se']:.2f}) sd {s['z_live']['sd']:.2f}; mean error parts: "
              f"estimator {s['error_estimator']['mean']:+.4g} (se {s['error_estimator']['se']:.2g}), held-out sample "
              f"{s['error_heldout_sample']['mean']:+.4g} (se {s['error_heldout_sample']['se']:.2g}), live sample "
              f"{s['error_live_sample']['mean']:+.4g} (se {s['error_live_sample']['se']:.2g})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, args.out)
        print(f"-> {args.out}")
    if args.plot:
        plot(rows, args.plot)
        print(f"-> {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
