"""The distillation table on SIMMC fashion, from the models `scripts/distill_simmc.sh` trains (issue 21).

Every model was trained on SIMMC fashion train with early stopping, calibration and its certified threshold on
`dev_select` (one half of fashion dev, split by dialog); every number here is measured on the other half,
`dev_report`, which no training or selection step read. Rows: the baseline (the `irp train` defaults), each
teacher, the teachers' ensemble (mean of their calibrated probabilities, thresholded on `dev_select` by the same
certified rule as `irp train`) and each student. Columns as `irp ablate --table distill`: AP with its 95 %
bootstrap interval, Δ AP against the baseline (paired bootstrap), precision and recall at the certified threshold
with the three-way precision verdict, train wall time, CPU p50 of one query through the ONNX runtime
`irp serve --runtime auto` picks (1 thread), encoder parameters. The issue's bar is checked at the end.

    python bench/distill_simmc.py --runs RUNS --baseline t13 --teachers t13,t1,t2 --students s_l6,s_l3 \
        --out bench/results/distill_simmc.json --plot bench/results/distill_simmc.png

`--ensemble a+b` adds an ensemble row of other members; `--group recipe=a+b+c` a line of the seed means of one recipe
(AP and Δ AP averaged over its runs: one seed's luck is about ±0.01 AP here); `--cost-for` times only the named rows
(one per architecture is enough; the others show "—").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from irp.data.io import load_records
from irp.fileio import atomic_write_text, write_json_atomic
from irp.metrics import evaluation_report, paired_bootstrap, target_verdict
from irp.threshold import choose_threshold

TARGET, CONFIDENCE = 0.8, 0.9  # the certified rule of `irp train`'s defaults


def scores_of(model_dir: Path, records: list[dict]) -> np.ndarray:
    """Calibrated probabilities [N] of one artifact (torch weights: the numbers the artifact certifies)."""
    from irp.predict import IRPClassifier

    return np.asarray(IRPClassifier.load(model_dir).predict_proba(records), dtype=float)


def training_minutes(model_dir: Path) -> float | None:
    wall = json.loads((model_dir / "config.json").read_text()).get("training", {}).get("wall_s")
    return None if wall is None else round(wall / 60.0, 1)


def row(name: str, y: np.ndarray, scores: np.ndarray, threshold: float, base: np.ndarray | None,
        n_boot: int) -> dict[str, Any]:
    """AP [CI], precision / recall at `threshold` with the verdict against TARGET, Δ AP vs `base` (paired)."""
    r = evaluation_report(y, scores, threshold, n_boot=n_boot)
    out = {"name": name, "ap": r["ap"], "ap_ci": r["ci"]["ap"], "precision": r["precision"], "recall": r["recall"],
           "precision_ci": r["ci"]["precision"], "threshold": threshold,
           "verdict": target_verdict(r["precision"], r["ci"]["precision"], TARGET)["verdict"]}
    if base is not None:
        out["ap_vs_baseline"] = paired_bootstrap(y, scores, None, base, None, metric="ap", n_boot=n_boot)
    return out


def cost(model_dir: Path, data: Path, queries: int) -> dict[str, Any]:
    """CPU p50 of one query through the faster ONNX runtime (irp.experiments.cost, as the ablate tables)."""
    from irp.experiments.cost import measure_cost

    info = measure_cost(model_dir, data, queries=queries)
    return {"cpu_p50_ms": info["latency"]["p50_ms"], "runtime": info["runtime"],
            "p50_ms_by_runtime": info["p50_ms_by_runtime"], "encoder_params_m": info["encoder_params_m"],
            "cpu": info["cpu"]}


def bar(rows: dict[str, dict[str, Any]], baseline: str, students: list[str]) -> dict[str, Any]:
    """Issue 21's bar, on these dev_report numbers: a minilm-l6 student with AP >= baseline + 0.02 and precision
    >= 0.80 at recall >= 0.45 (certified threshold); a minilm-l3 student with AP >= baseline's at p50 <= 0.6 x."""
    base = rows[baseline]
    out: dict[str, Any] = {}
    for name in students:
        s = rows[name]
        backbone = s.get("backbone")
        if backbone == "minilm-l6":
            out[name] = {"ap_gain": s["ap"] - base["ap"], "ap_gain_ok": s["ap"] >= base["ap"] + 0.02,
                         "precision_recall_ok": s["precision"] >= 0.80 and s["recall"] >= 0.45}
        elif backbone == "minilm-l3":
            ratio = (s.get("cpu_p50_ms") or np.nan) / (base.get("cpu_p50_ms") or np.nan)
            out[name] = {"ap_gain": s["ap"] - base["ap"], "ap_ok": s["ap"] >= base["ap"],
                         "p50_ratio": None if np.isnan(ratio) else round(float(ratio), 3),
                         "p50_ok": bool(ratio <= 0.6)}
    return out


def ensemble_row(members: list[str], y_sel: np.ndarray, y_rep: np.ndarray, sel: dict[str, np.ndarray],
                 rep: dict[str, np.ndarray], rows: dict[str, dict[str, Any]], base: np.ndarray,
                 n_boot: int) -> dict[str, Any]:
    """The members' mean calibrated probability, thresholded on dev_select by the certified rule of `irp train`."""
    name = "ensemble(" + "+".join(members) + ")"
    s_sel, s_rep = np.mean([sel[m] for m in members], axis=0), np.mean([rep[m] for m in members], axis=0)
    threshold = choose_threshold(y_sel, s_sel, TARGET, CONFIDENCE).threshold
    return row(name, y_rep, s_rep, float(threshold), base, n_boot) | {
        "backbone": "+".join(sorted({rows[m]["backbone"] for m in members})),
        "train_min": round(sum(rows[m]["train_min"] or 0 for m in members), 1)}


def seed_means(groups: dict[str, list[str]], rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per recipe: its runs, mean AP and mean Δ AP against the baseline (the runs' point estimates), min-max AP.

    >>> rows = {"a": {"ap": 0.78, "ap_vs_baseline": {"diff": 0.02}}, "b": {"ap": 0.76, "ap_vs_baseline": {"diff": 0.0}}}
    >>> seed_means({"r": ["a", "b"]}, rows)
    [{'recipe': 'r', 'runs': ['a', 'b'], 'mean_ap': 0.77, 'min_ap': 0.76, 'max_ap': 0.78, 'mean_gain': 0.01}]
    """
    out = []
    for recipe, runs in groups.items():
        aps = [rows[r]["ap"] for r in runs]
        gains = [rows[r].get("ap_vs_baseline", {"diff": 0.0})["diff"] for r in runs]
        out.append({"recipe": recipe, "runs": runs, "mean_ap": round(float(np.mean(aps)), 4),
                    "min_ap": round(min(aps), 4), "max_ap": round(max(aps), 4),
                    "mean_gain": round(float(np.mean(gains)), 4)})
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """AP (95 % interval) against CPU p50, one point per model with a measured latency."""
    from matplotlib.figure import Figure

    timed = sorted((r for r in rows if r.get("cpu_p50_ms")), key=lambda r: r["cpu_p50_ms"])
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    for i, r in enumerate(timed):
        lo, hi = r["ap_ci"]
        ax.errorbar([r["cpu_p50_ms"]], [r["ap"]], yerr=[[r["ap"] - lo], [hi - r["ap"]]], fmt="o", capsize=3)
        # neighbours in latency alternate above and below their point, so close models' names do not overlap
        ax.annotate(r["name"], (r["cpu_p50_ms"], r["ap"]), textcoords="offset points",
                    xytext=(5, 4 if i % 2 == 0 else -11), fontsize=8)
    ax.set(xlabel="CPU p50 of one query, ms (ONNX runtime `auto` picks, 1 thread)", ylabel="AP on dev_report",
           title="SIMMC fashion: distillation, quality against serving latency")
    ax.set_xscale("log")  # the small students sit near 1-2 ms, mpnet-base near 35
    ax.set_xticks([1, 2, 5, 10, 20, 50], labels=["1", "2", "5", "10", "20", "50"])
    ax.minorticks_off()
    ax.grid(alpha=0.3, which="both")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| model | backbone | AP [95 % CI] | Δ AP vs baseline [95 % CI] | precision / recall at the certified "
            "threshold (verdict vs 0.8) | train wall, min | CPU p50, ms (runtime) | params, M |")
    lines = [head, "| " + " | ".join(["---"] * 8) + " |"]
    for r in rows:
        d = r.get("ap_vs_baseline")
        delta = "—" if d is None else f"{d['diff']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}]"
        p50 = "—" if not r.get("cpu_p50_ms") else f"{r['cpu_p50_ms']:.2f} ({r['runtime']})"
        lines.append(
            f"| {r['name']} | {r.get('backbone', '—')} | {r['ap']:.4f} [{r['ap_ci'][0]:.4f}, {r['ap_ci'][1]:.4f}] | "
            f"{delta} | {r['precision']:.4f} / {r['recall']:.4f} ({r['verdict']}) | {r.get('train_min') or '—'} | "
            f"{p50} | {r.get('encoder_params_m') or '—'} |")
    return "\n".join(lines) + "\n"


def seed_markdown(means: list[dict[str, Any]]) -> str:
    """The seed means as a second small table ('' without groups)."""
    if not means:
        return ""
    lines = ["", "| recipe | runs | mean AP (min-max) | mean Δ AP vs baseline |", "| --- | --- | --- | --- |"]
    lines += [f"| {m['recipe']} | {', '.join(m['runs'])} | {m['mean_ap']:.4f} ({m['min_ap']:.4f}-{m['max_ap']:.4f}) | "
              f"{m['mean_gain']:+.4f} |" for m in means]
    return "\n".join(lines) + "\n"


def _names(value: str, sep: str = ",") -> list[str]:
    return [name for name in value.split(sep) if name]


def _group(value: str) -> tuple[str, list[str]]:
    recipe, _, runs = value.partition("=")
    return recipe, _names(runs, "+")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=Path, required=True, help="folder with dev_select.jsonl, dev_report.jsonl, models")
    ap.add_argument("--baseline", required=True, help="model folder name of the baseline (the irp train defaults)")
    ap.add_argument("--teachers", required=True, help="comma-separated teacher folder names (their ensemble is a row)")
    ap.add_argument("--students", default="", help="comma-separated student folder names")
    ap.add_argument("--extra", default="", help="comma-separated further models to list (e.g. an earlier student)")
    ap.add_argument("--ensemble", action="append", default=[], metavar="A+B",
                    help="a further ensemble row of these models (repeatable)")
    ap.add_argument("--group", action="append", default=[], metavar="RECIPE=A+B+C",
                    help="seed means of one recipe's runs (repeatable)")
    ap.add_argument("--cost-for", default="", help="comma-separated rows to time (default: every model)")
    ap.add_argument("--queries", type=int, default=200, help="single queries timed per model")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--no-cost", action="store_true", help="skip the ONNX export and the latency")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--plot", type=Path, help="AP against CPU p50 (needs the timings: not with --no-cost)")
    args = ap.parse_args(argv)
    if args.plot and args.no_cost:
        ap.error("--plot draws AP against the measured p50, which --no-cost skips: drop one of them")

    teachers, students, extra = (_names(v) for v in (args.teachers, args.students, args.extra))
    ensembles = [teachers] if len(teachers) > 1 else []  # one model made of several: no single latency
    ensembles += [_names(e, "+") for e in args.ensemble]
    groups = dict(_group(g) for g in args.group)
    timed = set(_names(args.cost_for))
    members = [m for e in ensembles for m in e] + [r for runs in groups.values() for r in runs]
    names = list(dict.fromkeys([args.baseline, *teachers, *extra, *students, *members]))
    missing = [n for n in names if not (args.runs / n / "config.json").is_file()]
    if missing:
        print(f"error: not trained yet (no config.json): {', '.join(missing)}", file=sys.stderr)
        return 2
    select, report = load_records(args.runs / "dev_select.jsonl"), load_records(args.runs / "dev_report.jsonl")
    y_sel = np.array([r["label"] for r in select], dtype=float)
    y_rep = np.array([r["label"] for r in report], dtype=float)

    sel, rep = {}, {}
    for n in names:
        sel[n], rep[n] = scores_of(args.runs / n, select), scores_of(args.runs / n, report)
        print(f"scored {n}", flush=True)
    base = rep[args.baseline]
    rows: dict[str, dict[str, Any]] = {}
    for n in names:
        config = json.loads((args.runs / n / "config.json").read_text())
        r = row(n, y_rep, rep[n], float(config["threshold"]["value"]), None if n == args.baseline else base,
                args.n_boot)
        r |= {"backbone": config["config"]["backbone"], "train_min": training_minutes(args.runs / n),
              "teachers": [Path(t["path"]).name for t in config.get("distillation", {}).get("teachers", [])] or None}
        if not args.no_cost and (not timed or n in timed):
            r |= cost(args.runs / n, args.runs / "dev_report.jsonl", args.queries)
        rows[n] = r
        print(f"{n}: AP {r['ap']:.4f}", flush=True)
    for e in ensembles:  # train time: the members' sum
        r = ensemble_row(e, y_sel, y_rep, sel, rep, rows, base, args.n_boot)
        rows[r["name"]] = r
    order = [args.baseline, *[t for t in teachers if t != args.baseline], *[k for k in rows if k.startswith("ensemble(")],
             *extra, *students, *members]
    ordered = [rows[k] for k in dict.fromkeys(order)]
    result = {"data": {"select": str(args.runs / "dev_select.jsonl"), "report": str(args.runs / "dev_report.jsonl"),
                       "n_report": int(y_rep.size), "positives_report": int(y_rep.sum())},
              "target_precision": TARGET, "confidence": CONFIDENCE, "rows": ordered,
              "seed_means": seed_means(groups, rows), "bar": bar(rows, args.baseline, students),
              "command": " ".join(["python", *sys.argv])}
    write_json_atomic(args.out, result)
    atomic_write_text(args.out.with_suffix(".md"), markdown(ordered) + seed_markdown(result["seed_means"]))
    if args.plot:
        plot(ordered, args.plot)
    print(markdown(ordered) + seed_markdown(result["seed_means"]))
    print(json.dumps(result["bar"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
