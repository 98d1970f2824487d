"""Rendering of ablation tables: Markdown (for RESULTS.md), CSV (one line per row, every number), JSON, and a
rich table for the terminal. Pure functions of a table's dict (`TableResult.to_dict()` or its JSON)."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from irp.experiments.stats import METRICS, MeanStd, format_diff

METRIC_NAMES = {"precision": "precision", "recall": "recall", "f05": "F0.5", "ap": "AP"}
DIFF_METRICS = ("precision", "recall", "ap")  # the Δ columns shown in Markdown (CSV/JSON have all four)
RULES = {
    "f05": "the threshold that maximises F0.5 on the validation set",
    "target": "the most-recall threshold whose precision >= {target:g} is certified at 90 % confidence on the "
    "validation set (irp.threshold, Clopper-Pearson fixed-sequence rule; F0.5-maximising where none is certified)",
}


def _cell(metric: dict[str, Any]) -> str:
    nan = float("nan")
    return MeanStd(*(nan if metric.get(k) is None else metric[k] for k in ("mean", "std")), metric.get("n", 0)).format()


def _has_groups(table: dict[str, Any]) -> bool:
    return any(row["group"] for row in table["rows"])


def markdown_rows(table: dict[str, Any]) -> list[list[str]]:
    """Header + body cells of the Markdown table.

    >>> t = {"rows": [{"name": "a", "group": "", "reference": True, "metrics": {m: {"mean": 0.5, "std": 0.1, "n": 2}
    ...       for m in METRICS}, "vs_reference": None}]}
    >>> markdown_rows(t)[1][:3]
    ['a (reference)', '0.500 ± 0.100', '0.500 ± 0.100']
    """
    grouped = _has_groups(table)
    header = (["group"] if grouped else []) + ["row"] + [METRIC_NAMES[m] for m in METRICS]
    header += [f"Δ {METRIC_NAMES[m]} vs reference [95 % CI]" for m in DIFF_METRICS]
    body = [header]
    for row in table["rows"]:
        cells = ([row["group"]] if grouped else []) + [row["name"] + (" (reference)" if row["reference"] else "")]
        cells += [_cell(row["metrics"][m]) for m in METRICS]
        vs = row.get("vs_reference") or {}
        cells += ["—" if row["reference"] else format_diff(vs.get(m)) for m in DIFF_METRICS]
        body.append(cells)
    return body


def footer(table: dict[str, Any]) -> list[str]:
    """The lines under a table: evaluation data, seeds, operating point and how Δ was computed."""
    s = table["settings"]
    rule = RULES[s["operating_point"]].format(target=s["target_precision"])
    lines = []
    for group, g in table["groups"].items():
        rate = g["positives"] / g["n"] if g["n"] else math.nan
        where = f"{group}: " if group else ""
        lines.append(
            f"{where}evaluated on `{g['eval_set']}` against `{g['eval_label']}`: {g['n']:,} records, "
            f"{g['positives']:,} positive ({rate:.1%}); reference row: {g['reference'] or 'none'}."
        )
    n_seeds = sorted({row["n_seeds"] for row in table["rows"]})
    lines.append(
        f"Cells: mean ± sample standard deviation over {'/'.join(map(str, n_seeds))} seed(s) (deterministic "
        "baselines and the oracle: one), each seed at its own threshold, chosen as " + rule + "."
    )
    lines.append(
        "Δ: difference of the seed means of the row and of its group's reference row on the same test records; "
        f"95 % percentile interval and two-sided p-value of a paired bootstrap over the test records "
        f"({s['n_boot']} resamples, the same for every row; each resample recomputes every seed's metric at its "
        "fixed threshold). The interval covers test-set sampling; the ± covers seeds."
    )
    for c in table.get("contrasts", []):
        diffs = "; ".join(f"Δ {METRIC_NAMES[m]} {format_diff(c['metrics'][m])}" for m in DIFF_METRICS)
        lines.append(f"Contrast {c['row']} vs {c['versus']} (paired bootstrap as above): {diffs}.")
    fallbacks = sum(row.get("fallbacks", 0) for row in table["rows"])
    if fallbacks:
        lines.append(f"{fallbacks} seed(s) never reached the target precision on validation (F0.5 fallback).")
    return lines + [f"Note: {n}" for n in table.get("notes", [])]


def _ms(x: Any, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def quality_cost_rows(table: dict[str, Any]) -> list[list[str]]:
    """The backbones table in one line per backbone: AP with its 95 % interval and Δ vs the reference on each data
    set (group), then what the backbone costs (from its simulated-log row).

    >>> row = {"name": "b", "group": "sim", "reference": True, "params": {}, "vs_reference": None,
    ...        "metrics": {"ap": {"mean": 0.5, "std": 0.01, "n": 2}}, "interval": {"ap": {"lo": 0.4, "hi": 0.6}},
    ...        "cost": {"params_m": 22.7, "train_examples_per_s": 100.0, "train_device": "cpu", "cpu_p50_ms": 9.5,
    ...                 "runtime": "onnx-int8", "int8_scheme": "blockwise"}}
    >>> quality_cost_rows({"rows": [row]})[1]
    ['b', '22.7', '0.500 ± 0.010 [0.400, 0.600]', '— (reference)', '100 (cpu)', '9.5 (int8 blockwise)']
    """
    groups = list(dict.fromkeys(r["group"] for r in table["rows"]))
    names = list(dict.fromkeys(r["name"] for r in table["rows"]))
    header = ["backbone", "params (M)"]
    for g in groups:
        header += [f"AP, {g} [95 % CI]", f"Δ AP vs reference, {g}"]
    header += ["train examples/s (device)", "CPU p50 ms, 1 query (ONNX)"]
    body = [header]
    for name in names:
        rows = {r["group"]: r for r in table["rows"] if r["name"] == name}
        first = rows[groups[0]] if groups[0] in rows else next(iter(rows.values()))
        cost = first.get("cost") or {}
        cells = [name, _ms(cost.get("params_m"))]
        for g in groups:
            r = rows.get(g)
            if r is None:
                cells += ["—", "—"]
                continue
            ci = (r.get("interval") or {}).get("ap") or {}
            interval = f" [{ci['lo']:.3f}, {ci['hi']:.3f}]" if ci.get("lo") is not None else ""
            cells.append(_cell(r["metrics"]["ap"]) + interval)
            cells.append("— (reference)" if r["reference"] else format_diff((r.get("vs_reference") or {}).get("ap")))
        rate = cost.get("train_examples_per_s")
        cells.append(f"{_ms(rate, 0)} ({cost.get('train_device') or '?'})")
        cells.append(_latency_cell(cost))
        body.append(cells)
    return body


def _latency_cell(cost: dict[str, Any]) -> str:
    """CPU p50 and the runtime it was measured on, e.g. "9.5 (int8 blockwise)" or "11.5 (fp32)".

    >>> _latency_cell({"cpu_p50_ms": 11.5, "runtime": "onnx-fp32", "int8_scheme": "blockwise"})
    '11.5 (fp32)'
    """
    runtime = cost.get("runtime") or ""
    kind = (f"int8 {cost['int8_scheme']}" if runtime == "onnx-int8" and cost.get("int8_scheme")
            else runtime.replace("onnx-", ""))
    return f"{_ms(cost.get('cpu_p50_ms'))}" + (f" ({kind})" if kind else "")


def distill_rows(table: dict[str, Any]) -> list[list[str]]:
    """The distill table, one line per row: AP [95 % CI], Δ AP vs the baseline, precision and recall at the
    certified threshold, train time, CPU p50 and parameters.

    >>> row = {"name": "student", "group": "sim", "reference": False, "params": {}, "metrics": {
    ...        m: {"mean": 0.5, "std": 0.0, "n": 1} for m in ("ap", "precision", "recall")},
    ...        "interval": {"ap": {"lo": 0.4, "hi": 0.6}}, "vs_reference": {"ap": {"diff": 0.02, "lo": 0.01,
    ...        "hi": 0.03, "p_value": 0.01}}, "cost": {"params_m": 22.7, "train_s": 61.0, "cpu_p50_ms": 9.5,
    ...        "runtime": "onnx-fp32"}}
    >>> distill_rows({"rows": [row]})[1][:3]
    ['sim', 'student', '22.7']
    """
    header = ["data", "row", "params (M)", "AP [95 % CI]", "Δ AP vs baseline [95 % CI]", "precision", "recall",
              "train s", "CPU p50 ms, 1 query (auto runtime)"]
    body = [header]
    for r in table["rows"]:
        cost = r.get("cost") or {}
        ci = (r.get("interval") or {}).get("ap") or {}
        interval = f" [{ci['lo']:.3f}, {ci['hi']:.3f}]" if ci.get("lo") is not None else ""
        latency = _latency_cell(cost) if cost.get("cpu_p50_ms") is not None else (
            f"{cost.get('members')} x a member's" if cost.get("members", 1) > 1 else "—")
        body.append([
            r["group"], r["name"] + (" (reference)" if r["reference"] else ""), _ms(cost.get("params_m")),
            _cell(r["metrics"]["ap"]) + interval,
            "—" if r["reference"] else format_diff((r.get("vs_reference") or {}).get("ap")),
            _cell(r["metrics"]["precision"]), _cell(r["metrics"]["recall"]), _ms(cost.get("train_s"), 0), latency,
        ])
    return body


def _md_table(rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(rows[0]) + " |", "|" + "|".join(" --- " for _ in rows[0]) + "|"]
            + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows[1:]] + [""])


def to_markdown(table: dict[str, Any], plot_dir: str | None = None, heading: str = "###") -> str:
    """The table as a Markdown section: heading, description, table, footer, and plots when `plot_dir` is set."""
    out = [f"{heading} {table['title']}", "", table["description"], ""]
    if table["rows"] and table.get("table") == "distill":
        out += _md_table(distill_rows(table))
        out += [cost_footer(table), "", "All metrics of every row:", ""]
    elif table["rows"] and any(r.get("cost") for r in table["rows"]):
        out += _md_table(quality_cost_rows(table))
        out += [cost_footer(table), "", "All metrics of every row:", ""]
    if table["rows"]:
        rows = markdown_rows(table)
        out.append("| " + " | ".join(rows[0]) + " |")
        out.append("|" + "|".join(" --- " for _ in rows[0]) + "|")
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows[1:]]
        out.append("")
    out += [f"- {line}" for line in footer(table)]
    if plot_dir is not None and table.get("plots"):
        out.append("")
        out += [f"![{p}]({plot_dir}/{p})" for p in table["plots"]]
    return "\n".join(out) + "\n"


def cost_footer(table: dict[str, Any]) -> str:
    """How the cost columns were measured, and which int8 schemes failed parity for which backbone.

    >>> cost_footer({"table": "distill", "rows": []}).split("; ")[1][:26]
    'train s: wall seconds of o'
    >>> cost_footer({"table": "backbones", "rows": []}).split("; ")[1][:20]
    'training examples/s '
    """
    costs = [(r["name"], r["cost"]) for r in table["rows"] if (r.get("cost") or {}).get("runtime")]
    cpus = sorted({c.get("cpu") or "?" for _, c in costs})
    tried = sorted({c.get("int8_tried") or "auto" for _, c in costs})
    scheme = ("int8 with the first scheme of per-channel, vector-wise, blockwise" if tried == ["auto"]
              else f"int8 {' / '.join(tried)}")
    training = ("train s: wall seconds of one run (mean over the row's seeds, the sum of the members' for an "
                "ensemble; a student's includes scoring its teachers)" if table.get("table") == "distill" else
                "training examples/s (mean over the seeds' runs of the row, training loop without validation passes; "
                "concurrent runs share the device when --jobs > 1)")
    text = (f"Cost columns: parameters of the encoder; {training}; CPU p50 of "
            f"one record in, probability out, on 1 thread of {', '.join(cpus) or 'the CPU'}, through the ONNX "
            f"export of the seed-0 simulated-log model: the faster of fp32 and {scheme} whose parity check passes "
            "(max |Δp| ≤ 0.02 and |Δ AP| ≤ 0.005 against torch), as `irp serve --runtime auto` picks.")
    failures = [f"{name}: " + "; ".join(c["int8_failures"]) for name, c in costs if c.get("int8_failures")]
    return text + ("" if not failures else " Int8 schemes that failed parity — " + " | ".join(failures) + ".")


COST_COLUMNS = (
    "params_m", "train_examples_per_s", "train_device", "cpu_p50_ms", "cpu_p90_ms", "runtime", "int8_scheme",
    "train_s",
)


def to_csv(table: dict[str, Any]) -> str:
    """One line per row with every number: means, stds, per-metric Δ, interval and p-value, and the params."""
    params = sorted({k for row in table["rows"] for k in row["params"]})
    header = ["table", "group", "row", "reference", "n_seeds", *params]
    for m in METRICS:
        header += [f"{m}_mean", f"{m}_std"]
    for m in METRICS:
        header += [f"d_{m}", f"d_{m}_lo", f"d_{m}_hi", f"p_{m}"]
    with_cost = any(row.get("cost") for row in table["rows"])
    if with_cost:
        header += [f"{m}_lo" for m in METRICS] + [f"{m}_hi" for m in METRICS] + list(COST_COLUMNS)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in table["rows"]:
        line: list[Any] = [table["table"], row["group"], row["name"], int(row["reference"]), row["n_seeds"]]
        line += [row["params"].get(k, "") for k in params]
        for m in METRICS:
            line += [_num(row["metrics"][m]["mean"]), _num(row["metrics"][m]["std"])]
        vs = row.get("vs_reference") or {}
        for m in METRICS:
            d = vs.get(m) or {}
            line += [_num(d.get(k)) for k in ("diff", "lo", "hi", "p_value")]
        if with_cost:
            interval, cost = row.get("interval") or {}, row.get("cost") or {}
            line += [_num((interval.get(m) or {}).get(k)) for k in ("lo", "hi") for m in METRICS]
            line += [_num(cost.get(c)) for c in COST_COLUMNS]
        writer.writerow(line)
    return buf.getvalue()


def _num(x: Any) -> str:
    """A number for CSV: 6 significant decimals, '' for missing/NaN.

    >>> _num(0.1234567), _num(float("nan")), _num(None)
    ('0.123457', '', '')
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:.6g}" if isinstance(x, float) else str(x)


def to_json(table: dict[str, Any]) -> str:
    from irp.metrics import nan_to_none

    return json.dumps(nan_to_none(table), indent=2, allow_nan=False) + "\n"


def to_rich(table: dict[str, Any]) -> Any:
    """A rich Table of the Markdown cells, for the terminal."""
    from rich.markup import escape
    from rich.table import Table

    rows = markdown_rows(table) if table["rows"] else [["(no rows)"]]
    out = Table(*rows[0], title=table["title"], title_justify="left")
    for r in rows[1:]:
        out.add_row(*map(escape, r))
    return out
