"""Model commands: baseline, train, evaluate, predict, threshold, ablate, export-onnx."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from irp.cli.common import (
    app,
    configure_torch_threads,
    console,
    err_console,
    fail,
    load_classifier,
    load_or_fail,
    print_metrics,
    print_promise,
    print_verdict,
    write_json,
)
from irp.config import DEFAULT_FIELDS


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
    data = {name: load_or_fail(path, name) for name, path in (("train", train), ("valid", valid), ("test", test))}
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
    print_verdict(result["target_verdict"])
    style = "green" if choice["reached"] else "bold red"
    console.print(f"[{style}]validation ({choice['rule']}): {escape(choice['message'])}[/]")
    if json_out is not None:
        write_json(json_out, result)
        console.print(f"report -> {escape(str(json_out))}")


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
    ema: float = typer.Option(
        0.0, "--ema", help="Decay in [0, 1) of an exponential moving average of the weights, which is then validated "
        "and kept instead of the raw weights (e.g. 0.999; 0 = off)."
    ),
    layer_decay: float = typer.Option(
        1.0, "--layer-decay", help="Layer-wise LR decay in (0, 1]: encoder layer i of L trains at lr x DECAY^(L - i), "
        "the embeddings at lr x DECAY^(L + 1), the head at lr (e.g. 0.9; 1 = off)."
    ),
    checkpoint_every: int = typer.Option(200, "--checkpoint-every", help="Steps between resumable checkpoints."),
    label_field: str = typer.Option("label", "--label-field", help="Record field to learn (label or true_intent)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoints/last after a crash."),
    compile_model: bool = typer.Option(False, "--compile", help="torch.compile the training step (CUDA)."),
    allow_network: bool = typer.Option(False, "--allow-network", help="Allow fetching a hub backbone."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Cache tokenized features (IRP_CACHE_DIR)."),
) -> None:
    """Train the IRP classifier, calibrate it and certify the operating point on --valid, write the artifact."""
    run_training_command(dict(locals()))


def run_training_command(flags: dict[str, Any], teachers: list[Path] | None = None, transfer: Path | None = None,
                         temperature: float = 1.0, distill_alpha: float = 1.0) -> None:
    """The body of `irp train` (flags: its parameters by name) and, with `teachers`, of `irp distill`: every
    argument is checked before anything is read or written (exit 2 naming the flag)."""
    import warnings

    from rich.markup import escape

    from irp.config import IRPConfig, default_lr, parse_fields
    from irp.data.io import DataFileError, InvalidRecordError
    from irp.model.encoder import BackboneError
    from irp.threshold import PrecisionTargetWarning
    from irp.train import default_cache_dir
    from irp.train import train as run_training

    f = flags
    if f["confidence"] > 0 and f["target_precision"] >= 1.0:
        fail(f"--target-precision must be in (0, 1) when it is certified (precision 1 never is), got "
             f"{f['target_precision']}; use --confidence 0 for the uncertified point rule")
    distillation = None
    if teachers is not None:
        from irp.distill import Distillation, TeacherError, load_teachers

        try:
            found = load_teachers(teachers)  # not an artifact, or teachers that disagree: exit 2
        except TeacherError as e:
            fail(escape(str(e)))
        if f["fields"] is None:  # the student reads what its teachers read
            f["fields"] = ",".join(found[0].meta["config"]["fields"])
            f["context_turns"] = f["context_turns"] or int(found[0].meta["config"].get("context_turns", 0))
        try:
            load_teachers(teachers, parse_fields(f["fields"]), f["context_turns"])
        except TeacherError as e:
            fail(escape(str(e)))
        if transfer is not None and not transfer.is_file():
            fail(f"--transfer file {escape(str(transfer))} does not exist")
        distillation = Distillation(found, temperature, distill_alpha, transfer)
    configure_torch_threads()
    try:
        config = IRPConfig(
            backbone=f["backbone"], fields=parse_fields(f["fields"]), summarizer=f["summarizer"], loss=f["loss"],
            alpha=f["alpha"], beta=f["beta"], epochs=f["epochs"], max_steps=f["max_steps"],
            batch_size=f["batch_size"], lr=f["lr"] if f["lr"] is not None else default_lr(f["batch_size"]),
            target_precision=f["target_precision"], confidence=f["confidence"], calibration=f["calibration"],
            device=f["device"], seed=f["seed"], context_turns=f["context_turns"], mmr_m=f["mmr_m"],
            mmr_lambda=f["mmr_lambda"], eval_every=f["eval_every"], patience=f["patience"],
            checkpoint_every=f["checkpoint_every"], compile=f["compile_model"], ema_decay=f["ema"],
            layer_decay=f["layer_decay"],
            distill_alpha=distill_alpha,
            temperature=temperature,
        )
    except ValueError as e:
        fail(escape(str(e)))
    for name, path in (("train", f["train_file"]), ("valid", f["valid_file"])):
        if not path.is_file():
            fail(f"{name} file {escape(str(path))} does not exist")
    out = f["out"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrecisionTargetWarning)  # print_promise shows its message, in red
            result = run_training(
                config, f["train_file"], f["valid_file"], out, resume=f["resume"], allow_network=f["allow_network"],
                label_field=f["label_field"], cache_dir=default_cache_dir() if f["cache"] else None,
                distillation=distillation,
            )
    except InvalidRecordError as e:
        fail(escape(f"{e} (run `irp validate` on the file for every bad line)"))
    except (BackboneError, DataFileError, ValueError, OSError) as e:
        fail(escape(str(e)))
    if result.metrics:
        print_metrics(result.metrics, f"validation metrics ({escape(str(f['valid_file']))})")
        print_promise(out)
        console.print(f"model -> {escape(str(out))}")


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
    import numpy as np

    from irp.calibration import brier_score, expected_calibration_error
    from irp.metrics import evaluation_report, verdict_fields

    clf = load_classifier(model, runtime)
    records = load_or_fail(data, "data")
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
        "operating_point": promise,
        "model": str(model),
        "data": str(data),
    }
    if target is not None:  # met / consistent / missed, judged on the test precision's 95 % interval
        report |= verdict_fields(report, target)
    print_metrics(report, f"{data}")
    if target is not None:
        print_verdict(report["target_verdict"])
    console.print(f"ECE {report['ece']:.4f}, Brier {report['brier']:.4f} ({promise['calibration']} calibration)")
    if plots is not None:
        from irp.plots import plot_pr_curve, plot_reliability, plot_threshold_curves

        plots.mkdir(parents=True, exist_ok=True)
        plot_pr_curve(y, probs, plots / "pr_curve.png", threshold=thr, label="irp")
        plot_threshold_curves(y, probs, plots / "threshold_curves.png", threshold=thr)
        plot_reliability(y, probs, plots / "reliability.png", bins=15)
        console.print(f"plots -> {plots}/pr_curve.png, {plots}/threshold_curves.png, {plots}/reliability.png")
    if json_out is not None:
        write_json(json_out, report)
        console.print(f"metrics -> {json_out}")


@app.command()
def predict(
    model: Path = typer.Option(..., "--model", help="Model artifact directory."),
    data: str = typer.Option(..., "--data", help="Records to score: a file, a folder of record files, or a glob."),
    out: Path = typer.Option(
        ..., "--out", help="A record file (.parquet, .jsonl, .jsonl.gz), or a folder for Parquet parts."
    ),
    threshold: float | None = typer.Option(None, "--threshold", help="Override the saved threshold."),
    runtime: str = typer.Option("torch", "--runtime", help="torch or onnx."),
    engine: str = typer.Option("local", "--engine", help="local (one process, streamed) or ray (Ray Data)."),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="Ray cluster (HOST:PORT or ray://HOST:PORT); default: start a local Ray."
    ),
    workers: int = typer.Option(2, "--workers", help="--engine ray: scoring actors (one classifier each)."),
    batch_size: int = typer.Option(1024, "--batch-size", help="Records scored at once (per actor with ray)."),
    part_rows: int = typer.Option(1_000_000, "--part-rows", help="Records per Parquet part when --out is a folder."),
) -> None:
    """Score records: adds the calibrated `probability` and `image_seeking` (at the saved operating point) to each.

    Streams in bounded memory; `--engine ray` scores on Ray Data (`pip install 'irp[ray]'`) with the model
    loaded once per actor. Exit 2 on unusable arguments (an unreachable --ray-address included)."""
    from rich.markup import escape

    from irp.batch_predict import RayUnavailable, input_files, predict_local, predict_ray
    from irp.data.io import DataFileError, InvalidRecordError, progress_bar

    if engine not in ("local", "ray"):
        fail(f"--engine must be local or ray, got {engine!r}")
    if batch_size < 1 or workers < 1 or part_rows < 1:
        fail("--batch-size, --workers and --part-rows must be >= 1")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        fail(f"--threshold must be in [0, 1], got {threshold}")
    if ray_address is not None and engine != "ray":
        fail("--ray-address needs --engine ray")
    try:
        inputs = input_files(data)
    except (FileNotFoundError, DataFileError) as e:
        fail(escape(f"--data: {e}"))
    if engine == "ray":
        if out.suffix:
            fail(f"--engine ray writes a folder of Parquet parts: --out {escape(str(out))} has a file suffix")
        if not (model / "config.json").is_file():
            fail(escape(f"--model {model}: not a model artifact (no config.json)"))
        try:
            counts = predict_ray(model, runtime, inputs, out, threshold, workers, batch_size, ray_address)
        except RayUnavailable as e:
            fail(escape(str(e)))
        except DataFileError as e:
            fail(escape(f"--data: {e}"))
        console.print(f"{counts['records']:,} records scored on Ray ({workers} actors) -> {escape(str(out))} "
                      f"({counts['parts']} parts)")
        return
    clf = load_classifier(model, runtime)
    thr = clf.threshold_ if threshold is None else threshold
    total = None
    if all(p.suffix.lower() == ".parquet" for p in inputs):
        import pyarrow.parquet as pq

        total = sum(pq.ParquetFile(p).metadata.num_rows for p in inputs)
    try:
        with progress_bar("scoring", total) as update:
            counts = predict_local(clf, inputs, out, thr, batch_size, part_rows, update)
    except InvalidRecordError as e:
        fail(escape(f"data file: {e} (run `irp validate` for every bad line)"))
    except (DataFileError, OSError) as e:
        fail(escape(f"data file: {e}"))
    if not counts["records"]:
        fail(escape(f"--data {data}: no records"))
    console.print(f"{counts['records']:,} records scored at threshold {thr:.4g}; {counts['image_seeking']:,} "
                  f"image-seeking -> {escape(str(out))}")


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
    configure_torch_threads()
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
    for note in result.notes:
        console.print(f"[yellow]{escape(note)}[/]")
    if result.written:
        console.print(f"config.json, metrics.json, MODEL_CARD.md rewritten in {escape(str(model))}"
                      + (" (and onnx/export.json)" if result.export_info is not None else ""))
    else:
        console.print("dry run: nothing written")


# ---- experiments: ablate ------------------------------------------------------------------------


@app.command()
def ablate(
    table: str = typer.Option(
        "all", "--table", help="1, 2, 3, sweep, robustness, transfer, backbones, distill, a comma list, or all."
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
    teachers: int | None = typer.Option(
        None, "--teachers", help="Distill table: seeds in the teacher ensemble (default 3; 1 with --quick)."
    ),
    temperature: float | None = typer.Option(None, "--temperature", help="Distill table: soft-target T (default 2)."),
    distill_alpha: float | None = typer.Option(
        None, "--distill-alpha", help="Distill table: the label loss's share in the students' loss (default 0.5)."
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

    configure_torch_threads()
    try:
        opts = AblationOptions.create(
            quick, train=train_file, valid=valid_file, test=test_file, out=out, tables=parse_tables(table),
            seeds=seeds, backbone=backbone, backbones=tuple(b.strip() for b in backbones.split(",") if b.strip()),
            compare_backbones=tuple(b.strip() for b in compare_backbones.split(",") if b.strip()),
            cost_queries=cost_queries, teachers=teachers, temperature=temperature, distill_alpha=distill_alpha,
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

    configure_torch_threads()
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
