"""Audit the proxy label with people: audit sample, serve, import, report (docs/audit.md)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from irp.cli.common import app, console, err_console, fail, load_or_fail, write_json

audit_app = typer.Typer(help="Check with people how often a carousel tap is visual intent (docs/audit.md).",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")


def _open(folder: Path):  # -> AuditFolder
    from rich.markup import escape

    from irp.audit.store import AuditError, AuditFolder

    try:
        return AuditFolder.open(folder)
    except AuditError as e:
        fail(escape(str(e)))


@audit_app.command("sample")
def audit_sample(
    data: Path = typer.Option(..., "--data", help="Labelled interaction records (the log to audit)."),
    n: int = typer.Option(..., "--n", help="Records to review (drawn across the strata)."),
    out: Path = typer.Option(..., "--out", help="New folder for the sample, its design and the verdicts."),
    model: Path | None = typer.Option(None, "--model", help="Artifact: also stratify by its score band around "
                                                            "its threshold, so the report can translate its promise."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
) -> None:
    """Draw a stratified blind sample for human review (strata: tap / no tap, and score band with --model)."""
    from rich.markup import escape
    from rich.table import Table

    from irp.audit.sample import SampleError, write_sample
    from irp.audit.store import AuditError
    from irp.fileio import file_fingerprint

    if n < 1:
        fail(f"--n must be at least 1, got {n}")
    records = load_or_fail(data, "--data")
    if n > len(records):
        fail(f"--n {n} is larger than the data: {data} holds {len(records)} records")
    scores, model_info = None, None
    if model is not None:
        from irp.cli.common import load_classifier

        clf = load_classifier(model)
        scores = clf.predict_proba(records)
        model_info = {"path": str(model), "version": clf.version, "threshold": clf.threshold_,
                      "promise": clf.promise}
    try:
        folder = write_sample(records, n, out, seed, file_fingerprint(data), scores, model_info)
    except (SampleError, AuditError) as e:
        fail(escape(str(e)))
    table = Table("stratum", "in the log", "sampled", "rate", title=f"audit sample {escape(str(out))}")
    for s in folder.design["strata"]:
        table.add_row(escape(s["name"]), f"{s['population']:,}", f"{s['sampled']:,}", f"{s['rate']:.3%}")
    console.print(table)
    console.print(f"next: [bold]irp audit serve {escape(str(out))} --annotator NAME[/] (or load verdicts made "
                  f"elsewhere with [bold]irp audit import {escape(str(out))} --verdicts FILE[/])")


@audit_app.command("serve")
def audit_serve(
    folder: Path = typer.Argument(..., help="Folder written by `irp audit sample`."),
    port: int = typer.Option(8765, "--port", help="Port (0 = any free one)."),
    annotator: str | None = typer.Option(None, "--annotator", help="Default annotator (the page asks otherwise)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback needs a token."),
    token: str | None = typer.Option(None, "--token", help="Token required by the page and API (generated when "
                                                           "--host is not loopback and none is given)."),
    overlap: float | None = typer.Option(None, "--overlap", help="Split the work: the first share of the queue "
                                         "goes to everyone (agreement), the rest to whoever gets there first. "
                                         "Default: everyone reviews every record."),
) -> None:
    """Serve the annotation page for a sample (one record at a time; y / n / c, u = undo)."""
    from urllib.parse import urlencode

    from rich.markup import escape

    from irp.audit.store import AuditError
    from irp.audit.web import is_loopback, make_server, new_token

    audit = _open(folder)
    if not 0 <= port <= 65535:
        fail(f"--port must be in 0..65535, got {port}")
    if token is None and not is_loopback(host):
        token = new_token()
    try:
        server = make_server(audit, host, port, annotator, token, overlap)
    except AuditError as e:
        fail(escape(str(e)))
    except OSError as e:
        fail(escape(f"--port {port}: cannot listen on {host}: {e}"))
    bound_host, bound_port = server.server_address[:2]
    query = urlencode({k: v for k, v in (("annotator", annotator), ("token", token)) if v})
    shown = f"[{bound_host}]" if ":" in str(bound_host) else bound_host
    console.print(f"annotation page: http://{shown}:{bound_port}/{'?' + query if query else ''}  "
                  f"({len(audit.records)} records; Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@audit_app.command("import")
def audit_import(
    folder: Path = typer.Argument(..., help="Folder written by `irp audit sample`."),
    verdicts: Path = typer.Option(..., "--verdicts", help="CSV/TSV (header id,annotator,verdict) or JSONL."),
    annotator: str | None = typer.Option(None, "--annotator", help="Annotator for rows without one."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite stored verdicts that differ."),
) -> None:
    """Load verdicts made elsewhere (a spreadsheet, another tool): all rows are checked before any is stored."""
    from rich.markup import escape

    from irp.audit.store import AuditError

    audit = _open(folder)
    try:
        summary = audit.import_verdicts(verdicts, annotator, replace)
    except AuditError as e:
        fail(escape(str(e)))
    console.print(f"imported {summary.rows:,} rows for {', '.join(summary.annotators)}: {summary.added:,} new, "
                  f"{summary.replaced:,} replaced, {summary.unchanged:,} unchanged")


@audit_app.command("report")
def audit_report(
    folder: Path = typer.Argument(..., help="Folder written by `irp audit sample`, with verdicts."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the full report here as JSON."),
    plots: Path | None = typer.Option(None, "--plots", help="Folder for the PNG figures."),
    model: Path | None = typer.Option(None, "--model", help="The artifact the sample was stratified with (default: "
                                                            "its promise as recorded at sampling time)."),
) -> None:
    """Proxy precision P(visual | tap) and recall P(tap | visual) with design-based 95 % intervals, agreement,
    and the model's promise as precision of visual intent."""
    from rich.markup import escape
    from rich.table import Table

    from irp.audit.estimate import audit_report as build_report
    from irp.audit.store import AuditError

    audit = _open(folder)
    promise = None
    if model is not None:
        from irp.artifact import promise as artifact_promise
        from irp.artifact import read_meta

        recorded = audit.design.get("model")
        if recorded is None:
            fail("--model: this sample was drawn without --model, so it has no score bands at a threshold; "
                 "draw it with `irp audit sample --model`")
        try:
            meta = read_meta(model)
        except (FileNotFoundError, ValueError, KeyError) as e:
            fail(escape(f"--model: {e}"))
        promise = artifact_promise(meta)
        if not math.isclose(float(promise["threshold"]), float(recorded["threshold"]), rel_tol=0, abs_tol=1e-9):
            fail(f"--model: its threshold {promise['threshold']:.6g} is not the one the sample was stratified at "
                 f"({recorded['threshold']:.6g}); use that artifact or draw a new sample")
    try:
        if not audit.all_verdicts():
            fail(escape(f"{folder} holds no verdicts yet: annotate with `irp audit serve` or `irp audit import`"), 1)
        report = build_report(audit, promise)
    except AuditError as e:
        fail(escape(str(e)))
    table = Table("estimate", "value", "95 % CI", "reviewed", title=f"audit {escape(str(folder))}")
    for key, label in (("precision", "proxy precision P(visual | tap)"), ("recall", "proxy recall P(tap | visual)"),
                       ("visual_rate", "visual intent rate P(visual)")):
        e = report[key]
        table.add_row(label, _num(e["estimate"]), f"[{_num(e['ci95'][0])}, {_num(e['ci95'][1])}]",
                      str(e["n_reviewed"]))
    console.print(table)
    sample, sens = report["sample"], report["cant_tell_sensitivity"]
    console.print(f"verdicts {sample['verdicts']:,} on {sample['reviewed_records']:,} of {sample['records']:,} "
                  f"records ({sample['verdicts_by_value']['cant_tell']:,} can't tell: precision "
                  f"{_num(sens['as_no']['precision'])}..{_num(sens['as_yes']['precision'])}, recall "
                  f"{_num(sens['as_no']['recall'])}..{_num(sens['as_yes']['recall'])} if they were all no/yes)")
    agreement = report["agreement"]
    if agreement["pairable_records"]:
        console.print(f"agreement on {agreement['pairable_records']:,} records seen twice: Krippendorff's alpha "
                      f"{_num(agreement['krippendorff_alpha'])}; " + "; ".join(
                          f"{'/'.join(p['annotators'])} kappa {_num(p['cohen_kappa'])}" for p in agreement["pairs"]
                          if p["records_both_decided"]))
    promise_out = report.get("promise")
    if promise_out and promise_out.get("available"):
        t = promise_out["translated"]
        console.print(f"promise: tap precision {_num(promise_out['tap_precision_promised'])} above threshold "
                      f"{promise_out['threshold']:.4g} means precision of visual intent {_num(t['estimate'])} "
                      f"[{_num(t['ci95'][0])}, {_num(t['ci95'][1])}]")
        if "certified_visual_precision_lower_bound" in promise_out:
            console.print(f"certified: visual-intent precision >= "
                          f"{_num(promise_out['certified_visual_precision_lower_bound'])} with confidence >= "
                          f"{promise_out['certified_visual_confidence']:.2f}")
    if json_out is not None:
        write_json(json_out, report)
        err_console.print(f"report written to {escape(str(json_out))}")
    if plots is not None:
        from irp.audit.plots import write_plots

        for path in write_plots(report, plots):
            err_console.print(f"plot written to {escape(str(path))}")


def _num(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
