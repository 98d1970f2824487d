"""RESULTS.md: the report of an `irp ablate` run, generated from the table JSON files and ablate_meta.json in
its output folder, never written by hand (`irp ablate` writes it; `python -m irp.report OUT [PATH]` rewrites it from
a finished output folder, e.g. one copied back from a GPU machine, without the data files).

The "honest reading" is generated from the numbers too: each statement of the reference paper (arXiv
2511.14764, Tables 1-3) is checked against the rows and their paired bootstrap intervals, and said to hold
(the difference has the paper's sign and its 95 % interval excludes 0), to point the paper's way without being
distinguishable from no difference, or not to hold.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from irp.experiments.render import METRIC_NAMES, to_markdown
from irp.experiments.stats import format_diff
from irp.fileio import atomic_write_text

BASELINE_ROWS = ("majority", "keyword", "tfidf")
TABLE_ORDER = ("table1", "table2", "table3", "sweep", "robustness_retrieval", "robustness_labels", "transfer",
               "backbones", "distill")
Table = dict[str, Any]


# ---- small readers of a table dict ----------------------------------------------------------------------
def find_row(table: Table, name: str, group: str | None = None) -> dict[str, Any] | None:
    """The first row whose name starts with `name` (in `group` when given)."""
    for row in table["rows"]:
        if row["name"].startswith(name) and (group is None or row["group"] == group):
            return row
    return None


def mean(row: dict[str, Any], metric: str) -> float:
    value = row["metrics"][metric]["mean"]
    return math.nan if value is None else float(value)


def verdict(d: dict[str, Any] | None, sign: int) -> str:
    """'holds' when the difference has the expected sign and its interval excludes 0; 'points the same way
    (within the interval)' when only the sign agrees; 'does not hold' otherwise.

    >>> verdict({"diff": 0.05, "lo": 0.01, "hi": 0.09}, +1), verdict({"diff": 0.05, "lo": -0.01, "hi": 0.09}, +1)
    ('holds', 'points the same way but is within the interval (not distinguishable from no difference)')
    >>> verdict({"diff": -0.02, "lo": -0.05, "hi": -0.001}, +1)
    'does not hold (the difference is the other way, beyond the interval)'
    """
    if not d or d.get("diff") is None or math.isnan(d["diff"]):
        return "cannot be checked (no comparison)"
    diff, lo, hi = d["diff"] * sign, d["lo"], d["hi"]
    beyond = lo is not None and hi is not None and (lo > 0 or hi < 0)
    if diff > 0:
        if beyond:
            return "holds"
        return "points the same way but is within the interval (not distinguishable from no difference)"
    if diff == 0 or not beyond:
        return "does not hold (no difference beyond the interval)"
    return "does not hold (the difference is the other way, beyond the interval)"


def _d(row: dict[str, Any] | None, metric: str) -> dict[str, Any] | None:
    """The row's comparison with its reference for `metric` (None for the reference itself)."""
    return None if row is None else (row.get("vs_reference") or {}).get(metric)


def _diff_text(row: dict[str, Any] | None, metric: str) -> str:
    return f"Δ {METRIC_NAMES[metric]} {format_diff(_d(row, metric)) or 'n/a'}"


def _beyond(d: dict[str, Any] | None, sign: int) -> bool:
    """Whether the interval of a comparison lies entirely on the `sign` side of 0."""
    if not d or d.get("lo") is None or d.get("hi") is None:
        return False
    return d["lo"] > 0 if sign > 0 else d["hi"] < 0


def _as_difference(d: dict[str, Any] | None) -> str:
    """'is beyond the interval' / 'is within the interval' for a comparison."""
    if not d or d.get("lo") is None or d.get("hi") is None:
        return "has no interval"
    return "is beyond the interval" if d["lo"] > 0 or d["hi"] < 0 else "is within the interval"


def _groups(table: Table) -> list[str]:
    return list(dict.fromkeys(r["group"] for r in table["rows"]))


def _in(group: str) -> str:
    return f" ({group})" if group else ""


# ---- the reading, per table -----------------------------------------------------------------------------
def read_table1(t: Table) -> list[str]:
    out = []
    for group in _groups(t):
        ref, fusion = find_row(t, "utterance", group), find_row(t, "all fields", group)
        if ref is None or fusion is None or not ref["reference"]:
            continue
        v = verdict(_d(fusion, "ap"), +1)
        vp = verdict(_d(fusion, "precision"), +1)
        out.append(
            f"Table 1{_in(group)}: *fusion beats the utterance alone* — in AP this {v} "
            f"({_diff_text(fusion, 'ap')}); in precision at the chosen threshold it {vp} "
            f"({_diff_text(fusion, 'precision')})."
        )
        steps = [r for r in t["rows"] if r["group"] == group and not r["name"].startswith(BASELINE_ROWS)]
        gains = [(b["name"], mean(b, "ap") - mean(a, "ap")) for a, b in zip(steps, steps[1:])]
        if gains:
            name, gain = max(gains, key=lambda g: g[1])
            out.append(f"Table 1{_in(group)}: the largest single AP gain comes from `{name}` "
                       f"({gain:+.3f} AP over the row above).")
    baselines = [r for r in t["rows"] if r["name"].startswith(BASELINE_ROWS)]
    fusion = find_row(t, "all fields")
    if baselines and fusion is not None:
        best = max(baselines, key=lambda r: mean(r, "ap"))
        gap = mean(fusion, "ap") - mean(best, "ap")
        out.append(
            f"Table 1: the strongest baseline is {best['name']} (AP {mean(best, 'ap'):.3f}); the all-fields model is "
            f"{'above' if gap > 0 else 'below'} it by {abs(gap):.3f} AP (difference of means, no interval)."
        )
    return out


def read_table2(t: Table) -> list[str]:
    out = []
    for group in _groups(t):
        rows = [r for r in t["rows"] if r["group"] == group]
        ref = next((r for r in rows if r["reference"]), None)
        if ref is None or len(rows) < 2:
            continue
        best_p = max(rows, key=lambda r: mean(r, "precision"))
        others = [r for r in rows if r is not ref]
        if best_p is ref:
            clear = [r["name"] for r in others if _beyond(_d(r, "precision"), -1)]
            tail = ("and every other summarizer is below it beyond the interval" if len(clear) == len(others)
                    else f"but only {', '.join(clear) or 'none'} of the others is below it beyond the interval")
            out.append(f"Table 2{_in(group)}: *mean pooling gives the best precision* — holds for the means "
                       f"({mean(ref, 'precision'):.3f}), {tail}.")
        else:
            out.append(f"Table 2{_in(group)}: *mean pooling gives the best precision* — does not hold: {best_p['name']} "
                       f"has the highest precision ({mean(best_p, 'precision'):.3f}; against mean "
                       f"{_diff_text(best_p, 'precision')}, a difference that {_as_difference(_d(best_p, 'precision'))}).")
        mmr = next((r for r in rows if r["name"] == "mmr"), None)
        best_r = max(rows, key=lambda r: mean(r, "recall"))
        if mmr is not None:
            state = ("holds for the means" if best_r is mmr else
                     f"does not hold: {best_r['name']} has the best recall ({mean(best_r, 'recall'):.3f})")
            out.append(f"Table 2{_in(group)}: *MMR gives the best recall* — {state}; MMR against mean: "
                       f"{_diff_text(mmr, 'recall')}, a higher recall that {verdict(_d(mmr, 'recall'), +1)}.")
        none = next((r for r in rows if r["name"].startswith("none")), None)
        if none is not None:
            out.append(f"Table 2{_in(group)}: reading no products at all against mean pooling: {_diff_text(none, 'ap')}.")
    return out


def read_table3(t: Table) -> list[str]:
    out = []
    for group in _groups(t):
        combined = find_row(t, "combined", group)
        if combined is None or combined["reference"]:
            continue
        vp, vr = verdict(_d(combined, "precision"), +1), verdict(_d(combined, "recall"), -1)
        holds = vp == "holds" and vr == "holds"
        out.append(
            f"Table 3{_in(group)}: *the combined loss trades recall for precision* (against BCE) — "
            f"{'holds' if holds else 'does not hold as a whole'}: a higher precision {vp} "
            f"[{_diff_text(combined, 'precision')}]; a lower recall {vr} [{_diff_text(combined, 'recall')}]; "
            f"ranking: {_diff_text(combined, 'ap')}."
        )
        if not holds and t["settings"]["operating_point"] in ("f05", "target"):
            out.append(
                "Table 3: why a loss can look neutral here: the threshold is re-chosen on validation for every "
                "model, so a loss that mostly shifts or rescales the scores (their calibration) moves the threshold "
                "rather than precision and recall at it; only a change of the ranking (AP) carries over. A "
                "comparison at one fixed threshold would show such shifts as a trade-off."
            )
    return out


def _spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(spearmanr(x, y).statistic)


def read_sweep(t: Table) -> list[str]:
    rows = [r for r in t["rows"] if "beta_over_alpha" in r["params"]]
    if len(rows) < 2:
        return []
    x = [r["params"]["beta_over_alpha"] for r in rows]
    parts = []
    for metric in ("precision", "recall", "ap"):
        rho = _spearman(x, [mean(r, metric) for r in rows])
        parts.append(f"{METRIC_NAMES[metric]} ρ = {rho:+.2f}" if not math.isnan(rho) else f"{METRIC_NAMES[metric]} ρ n/a")
    top = max(rows, key=lambda r: r["params"]["beta_over_alpha"])
    ref = next((r for r in rows if r["reference"]), rows[0])
    return [
        f"Sweep: rank correlation of the test metric with β/α over the grid: {', '.join(parts)} "
        "(positive = rises as the soft-precision term weighs more).",
        f"Sweep: the largest β/α ({top['name']}) against {ref['name']}: {_diff_text(top, 'precision')}, "
        f"{_diff_text(top, 'recall')}.",
    ]


def read_robustness_retrieval(t: Table) -> list[str]:
    rows = sorted((r for r in t["rows"] if "corruption" in r["params"]), key=lambda r: r["params"]["corruption"])
    if len(rows) < 2:
        return []
    aps = [mean(r, "ap") for r in rows]
    path = " → ".join(f"{100 * r['params']['corruption']:.0f} %: {a:.3f}" for r, a in zip(rows, aps))
    falling = all(b <= a + 1e-9 for a, b in zip(aps, aps[1:]))
    out = [f"Retrieval failure: AP by share of replaced products {path} — "
           f"{'falls monotonically' if falling else 'does not fall monotonically'}; "
           f"at the worst corruption {_diff_text(rows[-1], 'ap')} against clean products."]
    for c in t.get("contrasts", []):
        d = c["metrics"]["ap"]
        floor = find_row(t, c["versus"])
        floor_ap = mean(floor, "ap") if floor else math.nan
        if d["lo"] is not None and d["lo"] > 0:
            state = ("stays above this floor beyond the interval, so it does not fall all the way toward it"
                     + (" (some products survive at this share)" if rows[-1]["params"]["corruption"] < 1 else
                        "; with every product replaced the products carry no information about the query, so the "
                        "edge must come from the text side (possible reasons: the fusion model reads more text "
                        "fields than this floor, or learned a better text encoder from the richer input)"))
        elif d["hi"] is not None and d["hi"] < 0:
            state = ("falls below this floor beyond the interval: random products are not neutral for a model that "
                     "learned to trust what the products say (e.g. a visual category), so wrong products mislead it")
        else:
            state = "reaches this floor (no difference beyond the interval), as expected when products carry no information"
        out.append(f"Retrieval failure: {c['row']} against {c['versus']} (AP {floor_ap:.3f}): Δ AP "
                   f"{format_diff(d)} — {state}.")
    return out


def read_robustness_labels(t: Table) -> list[str]:
    if not t["rows"]:
        return [f"Label noise: {n}" for n in t.get("notes", [])]
    out = []
    true_group = "against true_intent"
    proxy, trained_true = find_row(t, "trained on the proxy", true_group), find_row(t, "trained on true_intent", true_group)
    if proxy is not None and trained_true is not None:
        out.append(
            f"Label noise: judged against the latent intent, the model trained on true_intent reaches precision "
            f"{mean(trained_true, 'precision'):.3f} and AP {mean(trained_true, 'ap'):.3f}, the model trained on the "
            f"proxy label {mean(proxy, 'precision'):.3f} and {mean(proxy, 'ap'):.3f}: the proxy label costs "
            f"(true_intent-trained minus proxy-trained) {_diff_text(trained_true, 'precision')} and "
            f"{_diff_text(trained_true, 'ap')}."
        )
    oracle = find_row(t, "oracle")
    if oracle is not None:
        out.append(
            f"Label noise: even a perfect model of the visual intent measures only precision "
            f"{mean(oracle, 'precision'):.3f} and recall {mean(oracle, 'recall'):.3f} against taps: that is the "
            "ceiling any model's measured precision faces on proxy labels."
        )
    return out


def read_transfer(t: Table) -> list[str]:
    if not t["rows"]:
        return [f"Transfer: {n}" for n in t.get("notes", [])]
    out = []
    for group in _groups(t):
        zero, tuned = find_row(t, "simulated", group), find_row(t, "fine-tuned", group)
        g = t["groups"].get(group, {})
        chance = g["positives"] / g["n"] if g.get("n") else math.nan
        if zero is None:
            continue
        line = (f"Transfer, {group}: zero-shot AP {mean(zero, 'ap'):.3f} against {chance:.3f} for a random ranking "
                f"(the positive rate)")
        if tuned is not None:
            line += f"; fine-tuned on SIMMC fashion train: AP {mean(tuned, 'ap'):.3f} ({_diff_text(tuned, 'ap')})"
        out.append(line + ".")
    return out


def read_backbones(t: Table) -> list[str]:
    """Per data set: the best backbone by AP and each one against the reference, with what it costs."""
    if not t["rows"]:
        return [f"Backbones: {n}" for n in t.get("notes", [])]
    out = []
    costs = {r["name"]: r.get("cost") or {} for r in t["rows"] if (r.get("cost") or {}).get("cpu_p50_ms") is not None}
    for group in _groups(t):
        rows = [r for r in t["rows"] if r["group"] == group]
        ref = next((r for r in rows if r["reference"]), None)
        if ref is None:
            continue
        parts = []
        for r in rows:
            if r["reference"]:
                continue
            c, cr = costs.get(r["name"], {}), costs.get(ref["name"], {})
            ratio = ""
            if c.get("cpu_p50_ms") and cr.get("cpu_p50_ms"):
                ratio = f", at {c['cpu_p50_ms'] / cr['cpu_p50_ms']:.2g}x its CPU latency"
            parts.append(f"`{r['name']}` {_diff_text(r, 'ap')} ({_as_difference(_d(r, 'ap'))}){ratio}")
        best = max(rows, key=lambda r: mean(r, "ap"))
        line = (f"Backbones, {group}: the best AP is `{best['name']}` ({mean(best, 'ap'):.3f}); against "
                f"`{ref['name']}`: " + "; ".join(parts) if parts else
                f"Backbones, {group}: only `{ref['name']}` was compared")
        out.append(line + ".")
    out += [f"Backbones: {n}" for n in t.get("notes", [])]
    return out


def read_distill(t: Table) -> list[str]:
    """Per data set: the teacher and each student against the baseline (AP, its interval), precision and recall at
    the certified threshold, and each student's CPU latency relative to the baseline's."""
    out = []
    for group in _groups(t):
        rows = [r for r in t["rows"] if r["group"] == group]
        ref = next((r for r in rows if r["reference"]), None)
        if ref is None:
            continue
        base_ms = (ref.get("cost") or {}).get("cpu_p50_ms")
        if base_ms is None:  # the latency is measured on the simulated-log models only
            base_ms = next(((r.get("cost") or {}).get("cpu_p50_ms") for r in t["rows"] if r["name"] == ref["name"]
                            and (r.get("cost") or {}).get("cpu_p50_ms") is not None), None)
        parts = []
        for r in rows:
            if r["reference"]:
                continue
            ms = next(((x.get("cost") or {}).get("cpu_p50_ms") for x in t["rows"] if x["name"] == r["name"]
                       and (x.get("cost") or {}).get("cpu_p50_ms") is not None), None)
            latency = f", CPU p50 {ms / base_ms:.2g}x the baseline's" if ms and base_ms else ""
            parts.append(f"`{r['name']}` AP {mean(r, 'ap'):.3f}, {_diff_text(r, 'ap')} ({_as_difference(_d(r, 'ap'))}); "
                         f"precision {mean(r, 'precision'):.3f} at recall {mean(r, 'recall'):.3f}{latency}")
        out.append(f"Distillation, {group}: baseline `{ref['name']}` AP {mean(ref, 'ap'):.3f}, precision "
                   f"{mean(ref, 'precision'):.3f} at recall {mean(ref, 'recall'):.3f}; " + "; ".join(parts) + ".")
    return out + [f"Distillation: {n}" for n in t.get("notes", [])]


READERS: dict[str, Callable[[Table], list[str]]] = {
    "table1": read_table1,
    "table2": read_table2,
    "table3": read_table3,
    "sweep": read_sweep,
    "robustness_retrieval": read_robustness_retrieval,
    "robustness_labels": read_robustness_labels,
    "transfer": read_transfer,
    "backbones": read_backbones,
    "distill": read_distill,
}


def honest_reading(tables: dict[str, Table]) -> list[str]:
    """Every generated statement, in table order."""
    return [line for key in TABLE_ORDER if key in tables for line in READERS[key](tables[key])]


# ---- the document ---------------------------------------------------------------------------------------
def _setup(meta: dict[str, Any]) -> list[str]:
    o, hw = meta.get("options", {}), meta.get("hardware", {})
    gpu = f"; GPU {hw['gpu']}" if hw.get("gpu") else "; no GPU"
    lines = [
        f"- Hardware: {hw.get('cpu', '?')} ({hw.get('cpu_cores', '?')} cores, {hw.get('torch_threads', '?')} torch "
        f"threads){gpu}; {hw.get('platform', '')}.",
        f"- Backbone `{Path(meta.get('backbone') or o.get('backbone') or 'minilm-l6').name}`"
        + (" (tiny random encoder: --quick)" if o.get("quick") and not o.get("backbone") else "")
        + (f", extra backbones {', '.join(o['backbones'])}" if o.get("backbones") else "")
        + f"; {o.get('epochs')} epoch(s), max steps {o.get('max_steps') or 'none'}, batch {o.get('batch_size')}, "
        f"lr {o.get('lr')}, device {o.get('device')}, {o.get('jobs')} concurrent run(s); {o.get('seeds')} seed(s).",
        f"- Operating point: `{o.get('operating_point')}`"
        + (f" (target precision {o.get('target_precision')})" if o.get("operating_point") == "target" else "")
        + f"; {o.get('n_boot')} bootstrap resamples.",
    ]
    runs = meta.get("runs", {})
    history = meta.get("history", [])
    lines.append(
        f"- Wall time: {meta.get('wall_s', 0):.0f} s for the last invocation ({runs.get('trained_now', 0)} runs trained, "
        f"{runs.get('cached_at_start', 0)} of {runs.get('distinct', 0)} found in the cache); {len(history)} "
        f"invocation(s) took {sum(h.get('wall_s', 0) for h in history):.0f} s together; the runs' own compute time "
        f"sums to {runs.get('compute_s_all_runs', 0):.0f} s."
    )
    data = meta.get("data", {})
    if data:
        lines += ["", "| record set | records | positives (label) | label rate | true_intent rate |",
                  "| --- | --- | --- | --- | --- |"]
        for name, d in data.items():
            rate = "" if d.get("positive_rate") is None else f"{d['positive_rate']:.1%}"
            true = "" if d.get("true_intent_rate") is None else f"{d['true_intent_rate']:.1%}"
            drawn = f" (random subset of the file's {d['drawn_from']:,})" if d.get("drawn_from") else ""
            lines.append(f"| `{name}` | {d['records']:,}{drawn} | {d['positives']:,} | {rate} | {true} |")
    return lines


def render_report(tables: dict[str, Table], meta: dict[str, Any], plot_dir: str) -> str:
    """The whole RESULTS.md text."""
    command = meta.get("command", "irp ablate ...")
    parts = [
        "# Ablation results",
        "",
        "Generated by `irp ablate` from the numbers of the run below; do not edit by hand — rerun the command "
        "(finished runs are cached in its output folder, so a rerun only redoes what is missing).",
        "",
        "```",
        command,
        "```",
        "",
        "## Setup",
        "",
        *_setup(meta),
        "",
        "## Honest reading (generated from the tables)",
        "",
        "Against the paper (arXiv 2511.14764, Tables 1-3): a statement *holds* when the difference has the "
        "paper's sign and its 95 % paired-bootstrap interval excludes 0.",
        "",
        *[f"- {line}" for line in honest_reading(tables)],
        "",
        "## Tables",
        "",
    ]
    for key in TABLE_ORDER:
        if key in tables:
            parts += [to_markdown(tables[key], plot_dir, "###"), ""]
    return "\n".join(parts).rstrip() + "\n"


def load_tables(out_dir: Path) -> dict[str, Table]:
    paths = {key: out_dir / f"{key}.json" for key in TABLE_ORDER}
    return {key: json.loads(path.read_text()) for key, path in paths.items() if path.exists()}


def write_report(out_dir: str | Path, path: str | Path | None = None) -> Path:
    """Write OUT/RESULTS.md and, when `path` is given, also `path` with the plots copied to `path`'s folder /
    results/ (so that a committed report points at committed images). Returns the report's path."""
    out_dir = Path(out_dir)
    tables = load_tables(out_dir)
    meta_path = out_dir / "ablate_meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    atomic_write_text(out_dir / "RESULTS.md", render_report(tables, meta, "plots"))
    if path is None or Path(path).resolve() == (out_dir / "RESULTS.md").resolve():
        return out_dir / "RESULTS.md"
    path = Path(path)
    images = path.parent / "results"
    images.mkdir(parents=True, exist_ok=True)
    for table in tables.values():
        for name in table.get("plots", []):
            shutil.copyfile(out_dir / "plots" / name, images / name)
    atomic_write_text(path, render_report(tables, meta, "results"))
    return path


if __name__ == "__main__":  # regenerate a report from a finished output folder: python -m irp.report OUT [PATH]
    import sys

    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m irp.report OUT_DIR [REPORT_PATH]")
    print(write_report(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None))
