"""The `irp` command line: a thin typer layer over the library.

Each command parses flags, calls one library function and prints a rich summary. Heavy imports
(torch, transformers, sklearn) happen inside the commands so that `irp --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from irp.config import DEFAULT_FIELDS

app = typer.Typer(
    name="irp",
    help="Image Request Predictor: predict when a spoken product query wants to be seen.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
import_app = typer.Typer(help="Import third-party logs into interaction records.", no_args_is_help=True)
app.add_typer(import_app, name="import")

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print a clear error on stderr and exit with `code` (2 = unusable arguments)."""
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


# ---- data ---------------------------------------------------------------------------------------
# (section owned by the data-contract work: validate)


@app.command()
def validate(
    file: Path = typer.Argument(..., help="Records to check: .jsonl, .jsonl.gz or .parquet."),
    quarantine: Path | None = typer.Option(
        None, "--quarantine", help="Write each rejected record here verbatim with line and reason (.jsonl[.gz])."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Write the valid, normalized records here (.jsonl, .jsonl.gz or .parquet)."
    ),
) -> None:
    """Check records against the data contract and name every bad line on stderr.

    Exit 0 when every record is valid; 1 when some were rejected or the file holds no records;
    2 on unusable arguments (missing file, unsupported suffix, unreadable file).
    """
    import sys

    from rich.markup import escape
    from rich.table import Table

    from irp.data.io import DataFileError, RejectedRecord
    from irp.validate import validate_file

    def print_rejected(rejected: RejectedRecord) -> None:
        sys.stderr.write(f"{rejected}\n")  # plain write: one line per record, no markup parsing

    try:
        report = validate_file(file, quarantine, out, print_rejected, progress=True)
    except (DataFileError, OSError) as e:  # FileNotFoundError included
        fail(escape(str(e)), 2)
    console.print(
        f"{escape(str(file))}: {report.n_in:,} records in, [green]{report.n_accepted:,} accepted[/], "
        f"[{'red' if report.n_rejected else 'green'}]{report.n_rejected:,} rejected[/] ({report.seconds:.1f} s)"
    )
    if report.reasons:
        table = Table("field", "reason", "count", title="rejections by reason")
        for (field_name, kind), count in report.reasons.most_common():
            table.add_row(escape(field_name), kind, f"{count:,}")
        console.print(table)
    if out is not None:
        console.print(f"valid records -> {escape(str(out))}")
    if quarantine is not None:
        console.print(f"rejected records -> {escape(str(quarantine))}")
    if report.n_in == 0:
        fail(escape(f"no records in {file}"), 1)
    if report.n_rejected:
        raise typer.Exit(1)


# ---- simulator ----------------------------------------------------------------------------------
# (section owned by the simulator work: simulate)


@app.command()
def simulate(
    n: int = typer.Option(..., "--n", help="Number of records to simulate."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same file."),
    out: Path = typer.Option(..., "--out", help="Output file: .jsonl, .jsonl.gz or .parquet."),
    k: int = typer.Option(5, "--k", help="Products retrieved per query (1..50)."),
    asr_error_rate: float = typer.Option(0.04, "--asr-error-rate", help="P(a spoken word is misrecognized)."),
    retrieval_failure_rate: float = typer.Option(
        0.05, "--retrieval-failure-rate", help="P(retrieval returns irrelevant products)."
    ),
    miss_rate: float = typer.Option(
        0.12, "--miss-rate", help="Label noise: P(no carousel tap | visual intent), the user was busy."
    ),
    accidental_tap_rate: float = typer.Option(
        0.025, "--accidental-tap-rate", help="Label noise: P(carousel tap | no visual intent)."
    ),
    screen_rate: float = typer.Option(0.9, "--screen-rate", help="P(a screen device is reachable)."),
    catalog_seed: int = typer.Option(0, "--catalog-seed", help="Seed of the simulated catalogue."),
) -> None:
    """Simulate a realistic voice-shopping log (utterances, intents, retrieved products, noisy taps)."""
    from rich.markup import escape
    from rich.table import Table

    from irp.data.io import DataFileError
    from irp.data.simulate import SimConfig, simulate_to_file

    config = SimConfig(
        n=n, seed=seed, k=k, asr_error_rate=asr_error_rate, retrieval_failure_rate=retrieval_failure_rate,
        miss_rate=miss_rate, accidental_tap_rate=accidental_tap_rate, screen_rate=screen_rate,
        catalog_seed=catalog_seed,
    )
    try:
        config.check()
        summary = simulate_to_file(out, config, progress=True)
    except (ValueError, DataFileError, OSError) as e:  # DataFileError: unsupported suffix
        fail(escape(str(e)), 2)
    console.print(
        f"{escape(str(out))}: {summary.rows:,} records in {summary.seconds:.1f} s; "
        f"positive rate {summary.positive_rate:.1%}, true visual intent {summary.true_positive_rate:.1%}, "
        f"label noise {summary.label_noise_rate:.1%}"
    )
    table = Table("target category", "rows", "label rate", "true rate", title="per category")
    for name, row in sorted(summary.per_category.items(), key=lambda kv: -kv[1]["true_rate"]):
        table.add_row(name, f"{row['rows']:,}", f"{row['positive_rate']:.1%}", f"{row['true_rate']:.1%}")
    console.print(table)
    console.print("intents: " + ", ".join(f"{name} {count:,}" for name, count in summary.per_intent.items()))

# ---- importers and baselines --------------------------------------------------------------------
# (section owned by the evaluation work: import simmc, baseline)


def _import_simmc(src: Path, out: Path, dataset: str) -> None:
    """Shared body of `irp import simmc` and `irp import simmc-furniture`."""
    from rich.markup import escape
    from rich.table import Table

    from irp.data.importers import SourceFormatError, import_simmc
    from irp.data.io import DataFileError, file_format

    if dataset not in ("auto", "fashion", "furniture"):
        fail(f"--kind must be auto, fashion or furniture, got {dataset!r}")
    try:
        file_format(out)
        report = import_simmc(src, out, dataset, progress=True)  # type: ignore[arg-type]
    except (SourceFormatError, DataFileError, OSError, UnicodeDecodeError) as e:
        fail(escape(str(e)))
    console.print(
        f"{escape(str(src))} ({report.dataset}): {report.rows:,} rows, [green]{report.imported:,} imported[/], "
        f"{report.positives:,} positive ({report.positive_rate:.1%}), "
        f"[{'yellow' if report.skipped else 'green'}]{sum(report.skipped.values()):,} skipped[/] -> {escape(str(out))}"
    )
    if report.skipped:
        table = Table("reason", "rows", title="skipped rows")
        for reason, count in report.skipped.most_common():
            table.add_row(escape(reason), f"{count:,}")
        console.print(table)
        for example in report.examples:
            err_console.print(f"  skipped {escape(example)}")


@import_app.command("simmc")
def import_simmc_command(
    src: Path = typer.Argument(..., help="SIMMC 1.0 joined turns (.jsonl), e.g. simmc1_fashion/image_intent_train.jsonl."),
    out: Path = typer.Option(..., "--out", help="Records to write (.jsonl, .jsonl.gz or .parquet)."),
    kind: str = typer.Option("auto", "--kind", help="auto (detect by fields), fashion or furniture."),
) -> None:
    """Import SIMMC 1.0 Fashion (or Furniture) turns as interaction records, without post-hoc fields."""
    _import_simmc(src, out, kind)


@import_app.command("simmc-furniture")
def import_simmc_furniture_command(
    src: Path = typer.Argument(..., help="simmc1_furniture/furniture_annotated_*.jsonl"),
    out: Path = typer.Option(..., "--out", help="Records to write (.jsonl, .jsonl.gz or .parquet)."),
) -> None:
    """Import SIMMC 1.0 Furniture turns (label = annotated show/rotate request) as interaction records."""
    _import_simmc(src, out, "furniture")


def _load_or_fail(path: Path, what: str) -> list[dict]:
    """Records of `path`, or a clear exit-2 error naming the file, line and field."""
    from rich.markup import escape

    from irp.data.io import DataFileError, InvalidRecordError, load_records

    try:
        records = load_records(path)
    except InvalidRecordError as e:
        fail(escape(f"{what} file: {e} (run `irp validate {path}` for every bad line)"))
    except (DataFileError, OSError) as e:
        fail(escape(f"{what} file: {e}"))
    if not records:
        fail(escape(f"{what} file {path} holds no records"))
    return records


def _write_json(path: Path, obj: object) -> None:
    """Write strict JSON (NaN -> null) atomically."""
    from irp.fileio import write_json_atomic
    from irp.metrics import nan_to_none

    write_json_atomic(path, nan_to_none(obj), allow_nan=False, default=None)


@app.command()
def split(
    file: Path = typer.Argument(..., help="Records to split (.jsonl, .jsonl.gz or .parquet)."),
    fraction: float = typer.Option(0.5, "--fraction", help="Share of sessions that go to --out-first."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the session shuffle."),
    out_first: Path = typer.Option(..., "--out-first", help="Records of the chosen sessions."),
    out_second: Path = typer.Option(..., "--out-second", help="Records of the other sessions."),
) -> None:
    """Split records in two BY SESSION (no dialog on both sides), e.g. a dev set into valid and test."""
    from rich.markup import escape

    from irp.data.io import write_records
    from irp.data.split import split_by_session

    if not 0.0 <= fraction <= 1.0:
        fail(f"--fraction must be in [0, 1], got {fraction}")
    records = _load_or_fail(file, "input")
    first, second = split_by_session(records, fraction, seed)
    for part, out in ((first, out_first), (second, out_second)):
        write_records(out, part)
        sessions = len({r.get("session_id") or r["id"] for r in part})
        positives = sum(r["label"] == 1 for r in part)
        console.print(f"{escape(str(out))}: {len(part):,} records, {sessions:,} sessions, {positives:,} positive")


@app.command()
def baseline(
    kind: str = typer.Option(..., "--kind", help="majority, keyword or tfidf-lr."),
    train: Path = typer.Option(..., "--train", help="Training records (fit)."),
    valid: Path = typer.Option(..., "--valid", help="Validation records (threshold choice)."),
    test: Path = typer.Option(..., "--test", help="Test records (reported metrics)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the report here as JSON."),
    target_precision: float = typer.Option(0.8, "--target-precision", help="Validation precision to reach."),
    fields: str | None = typer.Option(None, "--fields", help="tfidf-lr only: comma-separated, e.g. utterance,title."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for the 95 % intervals."),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
) -> None:
    """Fit a baseline on --train, choose its threshold on --valid, report precision/recall/AP on --test."""
    import warnings

    from rich.markup import escape
    from rich.table import Table

    from irp.baselines import BASELINES, run_baseline

    if kind not in BASELINES:
        fail(f"--kind must be one of {', '.join(BASELINES)}, got {kind!r}")
    if not 0.0 < target_precision <= 1.0:
        fail(f"--target-precision must be in (0, 1], got {target_precision}")
    if fields is not None and kind != "tfidf-lr":
        fail("--fields only applies to --kind tfidf-lr")
    params = {"fields": tuple(f.strip() for f in fields.split(",") if f.strip())} if fields else {}
    if fields and "utterance" not in params["fields"]:
        fail("--fields must include utterance")
    data = {name: _load_or_fail(path, name) for name, path in (("train", train), ("valid", valid), ("test", test))}
    with warnings.catch_warnings(record=True) as caught, err_console.status(f"running the {kind} baseline..."):
        warnings.simplefilter("always")
        try:
            result = run_baseline(
                kind, data["train"], data["valid"], data["test"], target_precision, n_boot=n_boot, seed=seed, **params
            )
        except ValueError as e:  # e.g. no positive validation label, records without labels
            fail(escape(str(e)))
    for w in caught:
        err_console.print(f"[bold yellow]warning:[/] {escape(str(w.message))}")

    choice = result["threshold_choice"]
    table = Table("metric", "test", "95 % CI", title=f"{kind} baseline on {escape(str(test))}")
    for metric in ("precision", "recall", "f05", "ap", "roc_auc"):
        lo, hi = result["ci"][metric]
        table.add_row(metric, f"{result[metric]:.4f}", f"[{lo:.4f}, {hi:.4f}]")
    table.add_row("threshold", f"{result['threshold']:.6g}", "")
    table.add_row("n / positives", f"{result['n']:,} / {result['positives']:,}", "")
    console.print(table)
    style = "green" if choice["reached"] else "bold red"
    console.print(f"[{style}]validation ({choice['rule']}): {escape(choice['message'])}[/]")
    if json_out is not None:
        _write_json(json_out, result)
        console.print(f"report -> {escape(str(json_out))}")

# ---- model: train, evaluate, predict ------------------------------------------------------------


def _configure_torch_threads() -> None:
    """Quiet transformers' progress bars; respect OMP_NUM_THREADS when the user sets it."""
    import os

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@app.command()
def train(
    train_file: Path = typer.Option(..., "--train", help="Training records (.jsonl or .parquet)."),
    valid_file: Path = typer.Option(..., "--valid", help="Validation records: early stopping and the threshold."),
    out: Path = typer.Option(..., "--out", help="Artifact directory to write."),
    backbone: str = typer.Option(
        "minilm-l6", "--backbone",
        help="minilm-l6 (default), minilm-l3 or mpnet-base (those two: `make backbones`), a local HF model folder, "
        "or a hub name (with --allow-network).",
    ),
    summarizer: str = typer.Option("mean", "--summarizer", help="none, mean, max, mmr or concat."),
    fields: str = typer.Option(",".join(DEFAULT_FIELDS), "--fields", help="Comma-separated input fields."),
    loss: str = typer.Option("combined", "--loss", help="bce, precision, combined or fbeta."),
    alpha: float = typer.Option(1.0, "--alpha", help="Weight of BCE in the combined loss."),
    beta: float = typer.Option(0.5, "--beta", help="Weight of the soft precision loss in the combined loss."),
    epochs: int = typer.Option(3, "--epochs"),
    max_steps: int = typer.Option(0, "--max-steps", help="Stop after this many optimiser steps (0 = no cap)."),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate (default 5e-5 x sqrt(batch / 32))."),
    target_precision: float = typer.Option(0.8, "--target-precision", help="Precision the threshold must certify."),
    confidence: float = typer.Option(
        0.9, "--confidence", help="Confidence of the precision guarantee, in [0, 1); 0 = uncertified point rule."
    ),
    calibration: str = typer.Option(
        "temperature", "--calibration", help="temperature, isotonic or none: fitted on --valid after training."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    seed: int = typer.Option(13, "--seed"),
    context_turns: int = typer.Option(0, "--context-turns", help="Earlier user turns to prepend (0 = none)."),
    mmr_m: int = typer.Option(2, "--mmr-m", help="Products MMR keeps."),
    mmr_lambda: float = typer.Option(0.7, "--mmr-lambda", help="MMR relevance weight (1 = relevance only)."),
    eval_every: int = typer.Option(0, "--eval-every", help="Validate every N steps (0 = once per epoch)."),
    patience: int = typer.Option(2, "--patience", help="Validations without AP gain before early stopping."),
    checkpoint_every: int = typer.Option(200, "--checkpoint-every", help="Steps between resumable checkpoints."),
    label_field: str = typer.Option("label", "--label-field", help="Record field to learn (label or true_intent)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoints/last after a crash."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the training step (CUDA)."),
    allow_network: bool = typer.Option(False, "--allow-network", help="Allow fetching a hub backbone."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Cache tokenized features (IRP_CACHE_DIR)."),
) -> None:
    """Train the IRP classifier, calibrate it and certify the operating point on --valid, write the artifact."""
    from rich.markup import escape

    from irp.config import IRPConfig, default_lr, parse_fields
    from irp.data.io import DataFileError, InvalidRecordError
    from irp.model.encoder import BackboneError
    import warnings

    from irp.threshold import PrecisionTargetWarning
    from irp.train import default_cache_dir
    from irp.train import train as run_training

    if confidence > 0 and target_precision >= 1.0:
        fail(f"--target-precision must be in (0, 1) when it is certified (precision 1 never is), got "
             f"{target_precision}; use --confidence 0 for the uncertified point rule")
    _configure_torch_threads()
    try:
        config = IRPConfig(
            backbone=backbone, fields=parse_fields(fields), summarizer=summarizer, loss=loss, alpha=alpha, beta=beta,
            epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr if lr is not None else default_lr(batch_size), target_precision=target_precision,
            confidence=confidence, calibration=calibration,
            device=device, seed=seed, context_turns=context_turns, mmr_m=mmr_m, mmr_lambda=mmr_lambda,
            eval_every=eval_every, patience=patience, checkpoint_every=checkpoint_every, compile=compile_model,
        )
    except ValueError as e:
        fail(escape(str(e)))
    for name, path in (("train", train_file), ("valid", valid_file)):
        if not path.is_file():
            fail(f"{name} file {escape(str(path))} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrecisionTargetWarning)  # _print_promise shows its message, in red
            result = run_training(
                config, train_file, valid_file, out, resume=resume, allow_network=allow_network,
                label_field=label_field, cache_dir=default_cache_dir() if cache else None,
            )
    except InvalidRecordError as e:
        fail(escape(f"{e} (run `irp validate` on the file for every bad line)"))
    except (BackboneError, DataFileError, ValueError, OSError) as e:
        fail(escape(str(e)))
    if result.metrics:
        _print_metrics(result.metrics, f"validation metrics ({escape(str(valid_file))})")
        _print_promise(out)
        console.print(f"model -> {escape(str(out))}")


def _print_promise(model_dir: Path) -> None:
    """The artifact's operating point and its promise, in one block (green when certified, red on fallback)."""
    from rich.markup import escape

    from irp.artifact import promise, read_meta

    meta = read_meta(model_dir)
    p = promise(meta)
    style = "green" if meta["threshold"]["reached"] else "bold red"
    console.print(f"[{style}]operating point ({p['rule']}, calibration {p['calibration']}): "
                  f"{escape(meta['threshold']['message'])}[/]")
    console.print(escape(p["guarantee"]))


def _print_metrics(metrics: dict, title: str) -> None:
    from rich.table import Table

    table = Table("metric", "value", "95 % CI", title=title)
    for key in ("precision", "recall", "f05", "ap", "roc_auc"):
        value, ci = metrics.get(key), (metrics.get("ci") or {}).get(key)
        ci_text = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci and None not in ci else ""
        table.add_row(key, "n/a" if value is None else f"{value:.4f}", ci_text)
    table.add_row("threshold", f"{metrics['threshold']:.6g}", "")
    table.add_row("n / positives", f"{metrics['n']:,} / {metrics['positives']:,}", "")
    console.print(table)


def _load_classifier(model: Path, runtime: str = "torch"):  # -> IRPClassifier
    from rich.markup import escape

    from irp.predict import IRPClassifier

    _configure_torch_threads()
    try:
        return IRPClassifier.load(model, runtime=runtime)
    except (FileNotFoundError, ValueError) as e:
        fail(escape(str(e)))


@app.command()
def evaluate(
    model: Path = typer.Option(..., "--model", help="Model artifact directory."),
    data: Path = typer.Option(..., "--data", help="Labelled records to evaluate on."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the metrics here as JSON."),
    plots: Path | None = typer.Option(
        None, "--plots", help="Write PR, threshold and reliability plots (PNG) into this folder."
    ),
    threshold: float | None = typer.Option(None, "--threshold", help="Override the saved threshold."),
    runtime: str = typer.Option("torch", "--runtime", help="torch or onnx."),
    n_boot: int = typer.Option(1000, "--n-boot", help="Bootstrap resamples for the 95 % intervals."),
) -> None:
    """Precision / recall / F0.5 at the saved operating point, AP and ROC AUC (95 % bootstrap intervals), ECE and
    Brier of the calibrated probabilities, and whether the artifact's target precision is met on this data."""
    import math

    import numpy as np

    from irp.calibration import brier_score, expected_calibration_error
    from irp.metrics import evaluation_report

    clf = _load_classifier(model, runtime)
    records = _load_or_fail(data, "data")
    labels = np.array([r.get("label") for r in records], dtype=object)
    if any(v is None for v in labels):
        fail(f"{data}: every record needs a label to be evaluated")
    probs = clf.predict_proba(records)
    thr = clf.threshold_ if threshold is None else threshold
    y = labels.astype(float)
    report = evaluation_report(y, probs, thr, n_boot=n_boot)
    promise = clf.promise
    target = promise["target_precision"]
    report |= {
        "ece": expected_calibration_error(y, probs, bins=15),  # 15 equal-width bins
        "brier": brier_score(y, probs),
        "target_precision": target,
        # precision undefined (nothing predicted positive) does not meet a target
        "target_met": bool(target is not None and not math.isnan(report["precision"])
                           and report["precision"] >= target),
        "operating_point": promise,
        "model": str(model),
        "data": str(data),
    }
    _print_metrics(report, f"{data}")
    met = "[green]met[/]" if report["target_met"] else "[bold red]NOT met[/]"
    console.print(f"target precision {target:g}: {met} (precision {report['precision']:.4f}); "
                  f"ECE {report['ece']:.4f}, Brier {report['brier']:.4f} ({promise['calibration']} calibration)")
    if plots is not None:
        from irp.plots import plot_pr_curve, plot_reliability, plot_threshold_curves

        plots.mkdir(parents=True, exist_ok=True)
        plot_pr_curve(y, probs, plots / "pr_curve.png", threshold=thr, label="irp")
        plot_threshold_curves(y, probs, plots / "threshold_curves.png", threshold=thr)
        plot_reliability(y, probs, plots / "reliability.png", bins=15)
        console.print(f"plots -> {plots}/pr_curve.png, {plots}/threshold_curves.png, {plots}/reliability.png")
    if json_out is not None:
        _write_json(json_out, report)
        console.print(f"metrics -> {json_out}")


@app.command()
def predict(
    model: Path = typer.Option(..., "--model", help="Model artifact directory."),
    data: Path = typer.Option(..., "--data", help="Records to score (labels not needed)."),
    out: Path = typer.Option(..., "--out", help="Output records with `probability` and `image_seeking` added."),
    threshold: float | None = typer.Option(None, "--threshold", help="Override the saved threshold."),
    runtime: str = typer.Option("torch", "--runtime", help="torch or onnx."),
) -> None:
    """Score records: adds the calibrated `probability` and `image_seeking` (at the saved operating point) to each."""
    from irp.data.io import write_records

    clf = _load_classifier(model, runtime)
    records = _load_or_fail(data, "data")
    probs = clf.predict_proba(records)
    thr = clf.threshold_ if threshold is None else threshold
    for record, p in zip(records, probs):
        record["probability"] = round(float(p), 6)
        record["image_seeking"] = bool(p >= thr)
    write_records(out, records)
    console.print(f"{len(records):,} records scored at threshold {thr:.4g}; {int((probs >= thr).sum()):,} image-seeking -> {out}")


@app.command("threshold")
def threshold_command(
    model: Path = typer.Option(..., "--model", help="Model artifact directory to re-fit (rewritten in place)."),
    valid: Path = typer.Option(..., "--valid", help="Labelled validation records to fit calibration and threshold on."),
    target_precision: float | None = typer.Option(
        None, "--target-precision", help="Precision to certify, in (0, 1) (default: the artifact's)."
    ),
    confidence: float | None = typer.Option(
        None, "--confidence", help="Confidence in [0, 1); 0 = uncertified point rule (default: the artifact's)."
    ),
    calibration: str | None = typer.Option(
        None, "--calibration", help="temperature, isotonic or none (default: the artifact's)."
    ),
    device: str = typer.Option("cpu", "--device", help="Where to score --valid: cpu, cuda or auto."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the new operating point without writing it."),
) -> None:
    """Re-fit calibration and the certified operating point of a trained model on --valid, without retraining."""
    import warnings

    from rich.markup import escape
    from rich.table import Table

    from irp.config import CALIBRATIONS
    from irp.data.io import DataFileError, InvalidRecordError
    from irp.export import ExportError
    from irp.rethreshold import comparison_rows, rethreshold
    from irp.threshold import PrecisionTargetWarning

    # Checked here too so that a bad flag fails before the model is loaded.
    if confidence is not None and not 0.0 <= confidence < 1.0:
        fail(f"--confidence must be in [0, 1) (0 = the uncertified point rule), got {confidence}")
    if target_precision is not None and not 0.0 < target_precision < 1.0:
        fail(f"--target-precision must be in (0, 1), got {target_precision}")
    if calibration is not None and calibration not in CALIBRATIONS:
        fail(f"--calibration must be one of {', '.join(CALIBRATIONS)}, got {calibration!r}")
    if not valid.is_file():
        fail(f"validation file {escape(str(valid))} does not exist")
    _configure_torch_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionTargetWarning)  # its message is printed below, in red
        try:
            result = rethreshold(model, valid, target_precision, confidence, calibration, device=device,
                                 dry_run=dry_run)
        except InvalidRecordError as e:
            fail(escape(f"validation file: {e} (run `irp validate {valid}` for every bad line)"))
        except (DataFileError, FileNotFoundError, ValueError, ExportError, OSError) as e:
            fail(escape(str(e)))
    table = Table("operating point", "before", "after", title=f"{escape(str(model))}: re-fitted on {escape(str(valid))}")
    for row in comparison_rows(result, valid.name):
        table.add_row(*(escape(cell) for cell in row))
    console.print(table)
    style = "green" if result.point.choice.reached else "bold red"
    console.print(f"[{style}]{escape(result.point.choice.message)}[/]")
    console.print(escape(result.after["guarantee"]))
    if result.export_info is not None:
        from irp.export import Parity, format_parity

        for p in result.export_info["parity"].values():
            console.print("onnx parity (re-checked): " + escape(format_parity(Parity(**p))))
    if result.written:
        console.print(f"config.json, metrics.json, MODEL_CARD.md rewritten in {escape(str(model))}"
                      + (" (and onnx/export.json)" if result.export_info is not None else ""))
    else:
        console.print("dry run: nothing written")


# ---- experiments: ablate ------------------------------------------------------------------------


@app.command()
def ablate(
    table: str = typer.Option(
        "all", "--table", help="1, 2, 3, sweep, robustness, transfer, backbones, a comma list, or all."
    ),
    train_file: Path = typer.Option(..., "--train", help="Training records (simulated log: robustness needs true_intent)."),
    valid_file: Path = typer.Option(..., "--valid", help="Validation records: early stopping and every threshold."),
    test_file: Path = typer.Option(..., "--test", help="Test records: every reported metric."),
    out: Path = typer.Option(..., "--out", help="Output folder: tables (.md/.csv/.json), plots/, RESULTS.md, cache/."),
    seeds: int | None = typer.Option(None, "--seeds", help="Seeds per model row (default 3; 1 with --quick)."),
    quick: bool = typer.Option(False, "--quick", help="Tiny encoder, small data, 1 seed: the whole pipeline in minutes."),
    backbone: str | None = typer.Option(
        None, "--backbone", help="Primary backbone (default minilm-l6; a tiny random encoder with --quick)."
    ),
    backbones: str = typer.Option("", "--backbones", help="Extra backbones for tables 1-3 (comma list, names or folders)."),
    compare_backbones: str = typer.Option(
        "", "--compare-backbones",
        help="Backbones of the backbones table (comma list; default: minilm-l3, minilm-l6, mpnet-base where installed; "
        "tiny random stand-ins with --quick).",
    ),
    cost_queries: int | None = typer.Option(
        None, "--cost-queries", help="Single queries timed per backbone for its CPU latency (default 200; 30 with --quick)."
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs per run (default 3; 2 with --quick)."),
    max_steps: int = typer.Option(0, "--max-steps", help="Optimiser steps per run (0 = no cap)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Batch size (default 32)."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate (default 5e-5 x sqrt(batch/32); 3e-3 with --quick)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    max_train: int | None = typer.Option(
        None, "--max-train", help="Random subset of N training records (default all; 500 with --quick)."
    ),
    max_eval: int | None = typer.Option(
        None, "--max-eval", help="Cap every validation/test set at N records (default all; 300 with --quick)."
    ),
    jobs: int = typer.Option(1, "--jobs", help="Runs in parallel worker processes (e.g. 4 on one GPU)."),
    operating_point: str = typer.Option(
        "f05", "--operating-point", help="f05 (max F0.5 on valid) or target (max recall at --target-precision)."
    ),
    target_precision: float = typer.Option(0.8, "--target-precision", help="Used by --operating-point target."),
    alphas: str | None = typer.Option(None, "--alphas", help="Sweep grid of α (default 0.5,1; 1 with --quick)."),
    betas: str | None = typer.Option(None, "--betas", help="Sweep grid of β (default 0,0.5,1,2; 0,1 with --quick)."),
    corruptions: str = typer.Option("0,0.25,0.5,1", "--corruptions", help="Shares of products replaced at test time."),
    n_boot: int | None = typer.Option(None, "--n-boot", help="Bootstrap resamples (default 1000; 200 with --quick)."),
    simmc_dir: Path | None = typer.Option(None, "--simmc-dir", help="Folder with simmc1_fashion/ and simmc1_furniture/."),
    keep_models: bool = typer.Option(False, "--keep-models", help="Keep every model artifact under OUT/models/."),
    report: Path | None = typer.Option(None, "--report", help="Also write the report here (plots go to its folder/results/)."),
) -> None:
    """Reproduce the paper's ablations: mean ± std over seeds, paired bootstrap against each table's reference.

    Finished runs are cached in OUT/cache: rerunning the same command continues where it stopped.
    """
    from rich.markup import escape

    from irp.experiments import AblationOptions, parse_floats, parse_tables, run_ablation
    from irp.model.encoder import BackboneError

    _configure_torch_threads()
    try:
        opts = AblationOptions.create(
            quick, train=train_file, valid=valid_file, test=test_file, out=out, tables=parse_tables(table),
            seeds=seeds, backbone=backbone, backbones=tuple(b.strip() for b in backbones.split(",") if b.strip()),
            compare_backbones=tuple(b.strip() for b in compare_backbones.split(",") if b.strip()),
            cost_queries=cost_queries,
            epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, device=device, max_train=max_train,
            max_eval=max_eval, jobs=jobs, operating_point=operating_point, target_precision=target_precision,
            alphas=parse_floats(alphas) if alphas is not None else None,
            betas=parse_floats(betas) if betas is not None else None,
            corruptions=parse_floats(corruptions), n_boot=n_boot, simmc_dir=simmc_dir, keep_models=keep_models,
            report=report,
        )
        opts.check()
        run_ablation(opts, console)
    except (BackboneError, ValueError, FileNotFoundError) as e:
        fail(escape(str(e)))


# ---- serving: export-onnx, serve ----------------------------------------------------------------
# (section owned by the serving work)


@app.command("export-onnx")
def export_onnx_command(
    model: Path = typer.Option(..., "--model", help="Model artifact directory; writes MODEL/onnx/."),
    int8: bool = typer.Option(False, "--int8", help="Also write an int8 model (8-bit weights, dynamic activations)."),
    data: Path | None = typer.Option(
        None, "--data", help="Parity records (labelled for the AP check); default: the artifact's validation file."
    ),
    max_records: int = typer.Option(2000, "--max-records", help="Parity records used at most."),
    int8_scheme: str = typer.Option(
        "auto", "--int8-scheme",
        help="auto (the first of per-channel, vector-wise, blockwise that passes parity), or one of them.",
    ),
    force: bool = typer.Option(False, "--force", help="Install the export even when a parity check fails."),
) -> None:
    """Export the model to ONNX (fp32, and int8 with --int8) and check parity against torch.

    Exit 0 when every parity check passes (files installed in MODEL/onnx/), 1 when one fails (nothing
    installed unless --force), 2 on unusable arguments.
    """
    from rich.markup import escape

    from irp.export import INT8_SCHEMES, ExportError, export_onnx, format_report

    _configure_torch_threads()
    if int8_scheme not in INT8_SCHEMES:
        fail(f"--int8-scheme must be one of {', '.join(INT8_SCHEMES)}, got {int8_scheme!r}")
    if max_records < 3:
        fail("--max-records must be at least 3")
    if not (model / "config.json").is_file():
        fail(escape(f"{model} is not an irp model directory (no config.json)"))
    with err_console.status("exporting...") as status:
        try:
            report = export_onnx(
                model, int8=int8, data=data, max_records=max_records, int8_scheme=int8_scheme, force=force,
                log=lambda message: status.update(escape(message) + "..."),
            )
        except ExportError as e:
            fail(escape(str(e)), 1)
        except (FileNotFoundError, ValueError) as e:  # unreadable parity data, bad records
            fail(escape(str(e)))
    for line in format_report(report):
        console.print(escape(line))
    for name, path in report.files.items():
        console.print(f"{name} -> {escape(path)}")
    if not report.passed:
        err_console.print("[bold yellow]warning:[/] installed despite failed parity (--force)")
        raise typer.Exit(1)


@app.command()
def serve(
    model: Path = typer.Option(..., "--model", help="Model artifact directory."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address; non-loopback needs a token."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    runtime: str = typer.Option("auto", "--runtime", help="auto (ONNX when exported), torch, onnx, onnx-fp32, onnx-int8."),
    token: str | None = typer.Option(
        None, "--token", help="Require 'Authorization: Bearer TOKEN' (default: env IRP_SERVE_TOKEN; none = no auth)."
    ),
    cooldown: float = typer.Option(600.0, "--cooldown", help="Seconds before a session may be offered a switch again."),
    threads: int = typer.Option(1, "--threads", help="Intra-op threads per request."),
    workers: int = typer.Option(2, "--workers", help="Requests scored at once (default 2: one per core)."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request."),
    log_dir: Path | None = typer.Option(
        None, "--log-dir", help="Write every decision and feedback event here (JSONL; docs/serving.md)."
    ),
    explore_rate: float = typer.Option(
        0.0, "--explore-rate", help="Share of eligible records whose offer is a fair coin (support for policy-eval)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the exploration coins (reproducible runs)."),
    log_rotate_mb: float = typer.Option(64.0, "--log-rotate-mb", help="Start a new log file beyond this size."),
    log_rotate_s: float = typer.Option(300.0, "--log-rotate-s", help="Start a new log file after this many seconds."),
    log_queue: int = typer.Option(100_000, "--log-queue", help="Events queued for the log writer at most (then dropped)."),
    live_window_s: float = typer.Option(3600.0, "--live-window-s", help="Window of the live precision of offers."),
) -> None:
    """Serve the model over HTTP: /v1/predict, /v1/predict/batch, /v1/feedback, /v1/admin/reload, /healthz,
    /readyz, /v1/model, /metrics. SIGHUP re-reads the model folder; SIGTERM finishes in-flight requests and
    drains the decision log."""
    import os

    from rich.markup import escape

    from irp.serve import (
        TOKEN_ENV, DecisionLog, Engine, LogDirError, ServeSettings, create_app, install_sighup, is_loopback,
        load_classifier,
    )

    token = token or os.environ.get(TOKEN_ENV) or None  # the environment keeps it out of `ps` listings
    if not is_loopback(host) and token is None:
        fail(f"refusing to bind {escape(host)} without auth: pass --token or set {TOKEN_ENV}, or bind 127.0.0.1")
    if not 0 < port < 65536:
        fail(f"--port must be in 1..65535, got {port}")
    if cooldown < 0 or threads < 1 or workers < 1:
        fail("--cooldown must be >= 0, --threads and --workers >= 1")
    if not 0.0 <= explore_rate <= 1.0:
        fail(f"--explore-rate must be in [0, 1], got {explore_rate}")
    if explore_rate > 0 and log_dir is None:
        err_console.print("[bold yellow]warning:[/] --explore-rate without --log-dir: the exploration is not logged")
    if log_rotate_mb <= 0 or log_rotate_s <= 0 or log_queue < 1 or live_window_s <= 0:
        fail("--log-rotate-mb, --log-rotate-s and --live-window-s must be > 0, --log-queue >= 1")
    decision_log = None
    if log_dir is not None:  # refused before the model loads: an unwritable folder is a start-up error
        try:
            decision_log = DecisionLog(log_dir, max_queue=log_queue, rotate_bytes=int(log_rotate_mb * 1024 * 1024),
                                       rotate_seconds=log_rotate_s)
        except LogDirError as e:
            fail(escape(f"--log-dir: {e}"))
    _configure_torch_threads()
    try:
        engine = Engine(load_classifier(model, runtime, threads), model)
    except (FileNotFoundError, ValueError) as e:
        if decision_log is not None:
            decision_log.close()
        fail(escape(str(e)))
    engine.warm_up()
    settings = ServeSettings(token=token, cooldown_s=cooldown, workers=workers, explore_rate=explore_rate, seed=seed,
                             runtime=runtime, threads=threads, live_window_s=live_window_s)
    app_ = create_app(engine, settings, decision_log)
    install_sighup(app_.state.slot)
    console.print(
        f"serving {escape(str(model))} (version {engine.version}, runtime {engine.runtime}, threshold "
        f"{engine.threshold:.4g}) on http://{escape(host)}:{port} "
        + ("with bearer-token auth" if token else "without auth (loopback only)")
        + (f"; decision log {escape(str(log_dir))}, explore rate {explore_rate:g}" if decision_log else "")
    )
    import uvicorn

    uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=access_log, timeout_keep_alive=30,
                timeout_graceful_shutdown=60)
    if decision_log is not None:  # closed by the app on shutdown; again here in case startup failed
        stats = decision_log.close()
        err_console.print(f"decision log: written {stats['written']}, dropped {stats['dropped']}, "
                          f"files {stats['files_completed']}")


# ---- the loop, offline side: logs join, policy-eval ----------------------------------------------
# (section owned by the loop work)

logs_app = typer.Typer(help="Read the decision log of `irp serve --log-dir`.", no_args_is_help=True)
app.add_typer(logs_app, name="logs")


@logs_app.command("join")
def logs_join(
    log_dir: Path = typer.Option(..., "--log-dir", help="Folder written by `irp serve --log-dir`."),
    out: Path = typer.Option(..., "--out", help="Joined records (.jsonl, .jsonl.gz or .parquet)."),
    label: str = typer.Option("tap", "--label", help="tap (carousel tap) or accept (offer accepted; offered only)."),
    require_feedback: bool = typer.Option(
        False, "--require-feedback", help="Drop decisions without feedback for the label (default: no event = 0)."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Write the join report here as JSON."),
) -> None:
    """Join logged decisions with their feedback by id into labelled interaction records.

    The output passes `irp validate` and trains with `irp train`; it keeps the policy columns
    (propensity, offered, accepted, eligible, explored, ...) that `irp policy-eval` reads.
    Exit 1 when no record could be joined, 2 on unusable arguments.
    """
    from rich.markup import escape
    from rich.table import Table

    from irp.data.io import DataFileError
    from irp.logs import join_logs

    if label not in ("tap", "accept"):
        fail(f"--label must be tap or accept, got {label!r}")
    try:
        report, _ = join_logs(log_dir, out, label, require_feedback)  # type: ignore[arg-type]
    except (DataFileError, OSError) as e:
        fail(escape(str(e)))
    scan = report.scan
    table = Table("count", "value", title=f"logs join ({escape(str(log_dir))}, label {label})")
    for name, value in (
        ("decision / feedback files", f"{scan.decision_files:,} / {scan.feedback_files:,}"),
        ("decisions / feedback lines", f"{report.decisions:,} / {report.feedback:,}"),
        ("records written", f"{report.records:,}"),
        ("positives", f"{report.positives:,}"),
        ("offered / explored", f"{report.offered:,} / {report.explored:,}"),
        ("with feedback / no-feedback rule", f"{report.with_feedback:,} / {report.without_feedback:,}"),
        ("duplicate feedback", f"{report.duplicate_feedback:,}"),
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
        _write_json(json_out, report.to_dict())
    if not report.records:
        fail(escape(f"no record joined from {log_dir}; nothing written"), 1)
    console.print(f"{report.records:,} records -> {escape(str(out))}")


@app.command("policy-eval")
def policy_eval(
    logs: Path = typer.Option(..., "--logs", help="Output of `irp logs join --label tap`."),
    model: Path = typer.Option(..., "--model", help="Candidate model artifact directory."),
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

    from irp.logs.policy_eval import PolicyEvalError, evaluate_candidate

    if threshold is not None and not 0.0 <= threshold <= 1.0:
        fail(f"--threshold must be in [0, 1], got {threshold}")
    if n_boot < 10:
        fail("--n-boot must be at least 10")
    if resample not in ("session", "record"):
        fail(f"--resample must be session or record, got {resample!r}")
    records = _load_or_fail(logs, "logs")
    clf = _load_classifier(model, runtime)
    thr = clf.threshold_ if threshold is None else threshold
    probs = clf.predict_proba(records)
    try:
        report = evaluate_candidate(records, probs, thr, n_boot=n_boot, seed=seed, resample=resample)
    except PolicyEvalError as e:
        fail(escape(str(e)), 1)
    except ValueError as e:
        fail(escape(f"{logs}: {e}"))
    report["model"], report["logs"] = str(model), str(logs)

    def fmt(value: float, ci: list[float], scale: str) -> str:
        if scale == "%":
            return f"{value:.2%} [{ci[0]:.2%}, {ci[1]:.2%}]"
        return f"{value:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"

    table = Table("quantity", "candidate IPS", "candidate SNIPS", "logging policy (measured)",
                  title=f"policy-eval of {escape(str(model))} at threshold {thr:.4g} on {report['n']:,} logged requests")
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
        _write_json(json_out, report)
        console.print(f"estimates -> {escape(str(json_out))}")



if __name__ == "__main__":
    app()
