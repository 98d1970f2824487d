"""Data commands: validate, simulate, import, split, augment."""

from __future__ import annotations

from pathlib import Path

import typer

from irp.cli.common import (
    app,
    console,
    err_console,
    fail,
    load_or_fail,
)

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


import_app = typer.Typer(help="Import third-party logs into interaction records.", no_args_is_help=True)
app.add_typer(import_app, name="import")


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
    records = load_or_fail(file, "input")
    first, second = split_by_session(records, fraction, seed)
    for part, out in ((first, out_first), (second, out_second)):
        write_records(out, part)
        sessions = len({r.get("session_id") or r["id"] for r in part})
        positives = sum(r["label"] == 1 for r in part)
        console.print(f"{escape(str(out))}: {len(part):,} records, {sessions:,} sessions, {positives:,} positive")


@app.command()
def augment(
    file: Path = typer.Argument(..., help="Records to copy (.jsonl, .jsonl.gz or .parquet), e.g. the training file."),
    out: Path = typer.Option(..., "--out", help="The unlabelled copies (.jsonl, .jsonl.gz or .parquet), for `irp distill --transfer`."),
    copies: int = typer.Option(1, "--copies", help="Copies of each record."),
    word_drop: float = typer.Option(0.15, "--word-drop", help="Probability that a copy loses each utterance word."),
    product_swap: float = typer.Option(0.5, "--product-swap", help="Probability that a copy takes another record's products."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the perturbations."),
) -> None:
    """Write perturbed, UNLABELLED copies of records (words dropped, products swapped): in-domain transfer records
    that the teachers of `irp distill` label."""
    from rich.markup import escape

    from irp.data.augment import augment_records, check_settings
    from irp.data.io import file_format, write_records

    try:  # before reading anything: the flags and the output's format (DataFileError is a ValueError)
        check_settings(copies, word_drop, product_swap)
        file_format(out)
    except ValueError as e:
        fail(escape(str(e)))
    records = load_or_fail(file, "input")
    try:
        augmented = augment_records(records, copies, word_drop, product_swap, seed)
    except ValueError as e:  # too few records to swap products between
        fail(escape(f"{file}: {e}"))
    n = write_records(out, augmented)
    console.print(f"{escape(str(out))}: {n:,} unlabelled copies of {len(records):,} records")
