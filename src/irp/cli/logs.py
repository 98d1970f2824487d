"""The loop's offline side: logs join, policy-eval."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from irp.cli.common import (
    app,
    console,
    err_console,
    fail,
    load_classifier,
    write_json,
)

logs_app = typer.Typer(help="Read the decision log of `irp serve --log-dir`.", no_args_is_help=True)
app.add_typer(logs_app, name="logs")


def parse_size(text: str) -> int:
    """'4GB', '512MiB', '2g', '1000000' -> bytes; ValueError otherwise.

    >>> parse_size("1.5GB"), parse_size("512MiB"), parse_size("1000")
    (1500000000, 536870912, 1000)
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?)b?\s*", text.lower())
    if match is None:
        raise ValueError(f"not a size: {text!r} (e.g. 4GB, 512MiB)")
    power = " kmgt".index(match.group(2) or " ")
    return int(float(match.group(1)) * (1024 if match.group(3) else 1000) ** power)


@logs_app.command("join")
def logs_join(
    log_dirs: list[str] = typer.Option(
        ..., "--log-dir",
        help="Folder written by `irp serve --log-dir` (Parquet or older JSONL), or a glob of folders or log files; "
             "repeat for several (one per replica or day).",
    ),
    out: Path = typer.Option(..., "--out", help="Joined records (.parquet, .jsonl or .jsonl.gz), streamed."),
    label: str = typer.Option("tap", "--label", help="tap (carousel tap) or accept (offer accepted; offered only)."),
    require_feedback: bool = typer.Option(
        False, "--require-feedback", help="Drop decisions without feedback for the label (default: no event = 0)."
    ),
    window_s: float = typer.Option(
        86_400.0, "--feedback-window-s",
        help="Feedback later than this after its decision is counted as late and not joined.",
    ),
    memory_limit: str | None = typer.Option(
        None, "--memory-limit", help="DuckDB memory limit, e.g. 4GB (default: 1/8 of RAM, >= 1 GiB); spills beyond it."
    ),
    temp_dir: Path | None = typer.Option(None, "--temp-dir", help="Where a large join spills (default: the system's)."),
    engine: str = typer.Option("duckdb", "--engine", help="duckdb (streams, out of core) or python (in memory)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the join report here as JSON."),
) -> None:
    """Join logged decisions with their feedback by id into labelled interaction records.

    The output passes `irp validate` and trains with `irp train`; it keeps the policy columns
    (propensity, offered, accepted, eligible, explored, ...) that `irp policy-eval` reads.
    Exit 1 when no record could be joined, 2 on unusable arguments.
    """
    from rich.markup import escape
    from rich.table import Table

    from irp.data.io import DataFileError, file_format, progress_bar
    from irp.logs import join_logs
    from irp.logs.duck import join_logs_duckdb

    if label not in ("tap", "accept"):
        fail(f"--label must be tap or accept, got {label!r}")
    if engine not in ("duckdb", "python"):
        fail(f"--engine must be duckdb or python, got {engine!r}")
    if not window_s > 0 or window_s == float("inf"):
        fail(f"--feedback-window-s must be a number of seconds > 0, got {window_s}")
    limit = None
    if memory_limit is not None:
        try:
            limit = parse_size(memory_limit)
        except ValueError as e:
            fail(f"--memory-limit: {e}")
        if limit < 64 << 20:
            fail(f"--memory-limit must be at least 64MB, got {memory_limit}")
    if temp_dir is not None and not temp_dir.is_dir():
        fail(f"--temp-dir {escape(str(temp_dir))}: not a folder")
    try:
        file_format(out)
    except DataFileError as e:
        fail(f"--out: {escape(str(e))}")
    try:
        if engine == "python":
            report, _ = join_logs(log_dirs, out, label, require_feedback, window_s)  # type: ignore[arg-type]
        else:
            with progress_bar("joining", None) as update:
                report = join_logs_duckdb(log_dirs, out, label, require_feedback, window_s,  # type: ignore[arg-type]
                                          memory_limit=limit, temp_dir=temp_dir,
                                          progress=None if update is None else lambda done, _total: update(done))
    except (DataFileError, OSError) as e:
        fail(escape(str(e)))
    except RuntimeError as e:  # DuckDB failed for another reason than a bad file (e.g. out of disk for the spill)
        fail(escape(str(e)), 1)
    scan = report.scan
    table = Table("count", "value", title=f"logs join ({escape(', '.join(log_dirs))}, label {label}, {engine})")
    for name, value in (
        ("decision / feedback files", f"{scan.decision_files:,} / {scan.feedback_files:,}"),
        ("decisions / feedback lines", f"{report.decisions:,} / {report.feedback:,}"),
        ("records written", f"{report.records:,}"),
        ("positives", f"{report.positives:,}"),
        ("offered / explored", f"{report.offered:,} / {report.explored:,}"),
        ("with feedback / no-feedback rule", f"{report.with_feedback:,} / {report.without_feedback:,}"),
        ("duplicate feedback", f"{report.duplicate_feedback:,}"),
        (f"late feedback (> {window_s:g} s after its decision)", f"{report.late_feedback:,}"),
        ("feedback for unknown ids", f"{report.unknown_feedback:,}"),
        ("conflicting feedback", f"{report.conflicting_feedback:,}"),
        ("accept/decline without an offer", f"{report.feedback_without_offer:,}"),
        ("duplicate decision ids", f"{report.duplicate_decisions:,}"),
        ("torn / invalid lines", f"{scan.torn_lines:,} / {scan.invalid_lines:,}"),
        ("files in progress / foreign / unreadable",
         f"{scan.in_progress_files:,} / {scan.foreign_files:,} / {scan.unreadable_files:,}"),
    ):
        table.add_row(name, value)
    for reason, count in report.dropped.most_common():
        table.add_row(f"dropped: {escape(reason)}", f"{count:,}")
    console.print(table)
    for example in scan.examples + report.examples:
        err_console.print(f"  skipped {escape(example)}")
    if json_out is not None:
        write_json(json_out, report.to_dict())
    if not report.records:
        fail(escape(f"no record joined from {', '.join(log_dirs)}; nothing written"), 1)
    console.print(f"{report.records:,} records -> {escape(str(out))}")


@app.command("policy-eval")
def policy_eval(
    logs: Path = typer.Option(..., "--logs", help="Output of `irp logs join --label tap` (read in batches)."),
    model: Path | None = typer.Option(None, "--model", help="Candidate model artifact directory (scores the log)."),
    scores: Path | None = typer.Option(
        None, "--scores",
        help="Instead of --model: the candidate's scores of this log, `irp predict` output (id, probability) in "
             "the log's row order (e.g. scored on a cluster with --engine ray); needs --threshold.",
    ),
    threshold: float | None = typer.Option(None, "--threshold", help="Candidate threshold (default: its own)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the estimates here as JSON."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for the intervals."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    runtime: str = typer.Option("torch", "--runtime", help="torch or onnx."),
    resample: str = typer.Option(
        "session", "--resample",
        help="Bootstrap unit: session (whole sessions, when the log has session_id; records otherwise) or record.",
    ),
) -> None:
    """Off-policy estimate (IPS and SNIPS) of what a candidate model would have done on logged traffic.

    The candidate offers on a logged record iff the record was eligible in the log and its probability
    >= its threshold. Exit 1 when some of its decisions have no support in the log (logged propensity 0).
    """
    from rich.markup import escape
    from rich.table import Table

    from irp.logs.policy_eval import PolicyEvalError

    if threshold is not None and not 0.0 <= threshold <= 1.0:
        fail(f"--threshold must be in [0, 1], got {threshold}")
    if n_boot < 10:
        fail("--n-boot must be at least 10")
    if resample not in ("session", "record"):
        fail(f"--resample must be session or record, got {resample!r}")
    if (model is None) == (scores is None):
        fail("give --model (the candidate, scores the log) or --scores (its precomputed scores), one of them")
    if scores is not None and threshold is None:
        fail("--scores needs --threshold (the candidate's operating point)")
    if not logs.is_file():
        fail(f"--logs {escape(str(logs))}: no such file")
    if scores is not None and not scores.is_file():
        fail(f"--scores {escape(str(scores))}: no such file")
    from irp.data.io import DataFileError, progress_bar
    from irp.logs.policy_eval import evaluate_arrays, stream_log

    score = None
    thr = threshold
    if model is not None:
        clf = load_classifier(model, runtime)
        thr = clf.threshold_ if threshold is None else threshold
        score = clf.predict_proba
    try:
        with progress_bar("reading the log", None) as update:
            streamed = stream_log(logs, score=score, scores=scores, progress=update)
        if not streamed.n:
            fail(f"--logs {escape(str(logs))}: no records")
        report = evaluate_arrays(streamed.logs, streamed.probabilities, thr, streamed.sessions,  # type: ignore[arg-type]
                                 n_boot=n_boot, seed=seed, resample=resample)
    except PolicyEvalError as e:
        fail(escape(str(e)), 1)
    except (ValueError, DataFileError) as e:
        fail(escape(f"{logs}: {e}"))
    if resample == "session" and streamed.sessions is None:
        report["resampled_note"] = "some records lack a session_id: resampled records (intervals may be too narrow)"
    report["scores"] = None if scores is None else str(scores)
    report["model"], report["logs"] = str(model), str(logs)

    def fmt(value: float, ci: list[float], scale: str) -> str:
        if scale == "%":
            return f"{value:.2%} [{ci[0]:.2%}, {ci[1]:.2%}]"
        return f"{value:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"

    table = Table("quantity", "candidate IPS", "candidate SNIPS", "logging policy (measured)",
                  title=f"policy-eval of {escape(str(model or scores))} at threshold {thr:.4g} on {report['n']:,} logged requests")
    rows = (("offer_rate", "offer rate", "%"), ("precision", "precision of offers (tap)", "%"),
            ("accepts_per_1000", "accepts per 1,000 requests", ""),
            ("live_precision", "live precision (accepted / offers)", "%"))
    for metric, name, scale in rows:
        est, logged = report[metric], report["logging"][metric]
        table.add_row(name, fmt(est["ips"], est["ips_ci"], scale), fmt(est["snips"], est["snips_ci"], scale),
                      fmt(logged["value"], logged["ci"], scale))
    console.print(table)
    console.print(
        f"candidate offers {report['candidate_offers']:,} (exact offer rate {report['offer_rate']['exact']:.2%}); "
        f"{report['matched_offers']:,} of them were offered in the log; ESS {report['ess']:,.0f} "
        f"(offers {report['ess_offers']:,.0f}); 95 % bootstrap intervals resampling "
        f"{'sessions' if report['resampled'] == 'session_id' else 'records'} "
        f"({report['n_resampled_units']:,} units)"
    )
    if report.get("resampled_note"):
        console.print(f"note: {escape(report['resampled_note'])}")
    console.print(f"assumption: {report['assumption']}")
    if json_out is not None:
        write_json(json_out, report)
        console.print(f"estimates -> {escape(str(json_out))}")
