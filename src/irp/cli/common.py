"""What every command group shares: the typer app, the consoles, exit-2 errors and a few loaders."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(
    name="irp",
    help="Image Request Predictor: predict when a spoken product query wants to be seen.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print a clear error on stderr and exit with `code` (2 = unusable arguments)."""
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def load_or_fail(path: Path, what: str) -> list[dict]:
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


def write_json(path: Path, obj: object) -> None:
    """Write strict JSON (NaN -> null) atomically."""
    from irp.fileio import write_json_atomic
    from irp.metrics import nan_to_none

    write_json_atomic(path, nan_to_none(obj), allow_nan=False, default=None)


def configure_torch_threads() -> None:
    """Quiet transformers' progress bars; respect OMP_NUM_THREADS when the user sets it."""
    import os

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def print_promise(model_dir: Path) -> None:
    """The artifact's operating point and its promise, in one block (green when certified, red on fallback)."""
    from rich.markup import escape

    from irp.artifact import promise, read_meta

    meta = read_meta(model_dir)
    p = promise(meta)
    style = "green" if meta["threshold"]["reached"] else "bold red"
    console.print(f"[{style}]operating point ({p['rule']}, calibration {p['calibration']}): "
                  f"{escape(meta['threshold']['message'])}[/]")
    console.print(escape(p["guarantee"]))


def print_metrics(metrics: dict, title: str) -> None:
    from rich.table import Table

    table = Table("metric", "value", "95 % CI", title=title)
    for key in ("precision", "recall", "f05", "ap", "roc_auc"):
        value, ci = metrics.get(key), (metrics.get("ci") or {}).get(key)
        ci_text = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci and None not in ci else ""
        table.add_row(key, "n/a" if value is None else f"{value:.4f}", ci_text)
    table.add_row("threshold", f"{metrics['threshold']:.6g}", "")
    table.add_row("n / positives", f"{metrics['n']:,} / {metrics['positives']:,}", "")
    console.print(table)


VERDICT_STYLE = {"met": "green", "consistent": "yellow", "missed": "bold red"}


def print_verdict(verdict: dict) -> None:
    """One line: the target verdict with the test precision and the 95 % interval it was judged on."""
    from irp.metrics import VERDICT_NOTE

    lo, hi = verdict["interval"]
    measured = "precision undefined" if verdict["precision"] is None else (
        f"test precision {verdict['precision']:.4f}" + ("" if lo is None else f", 95 % interval [{lo:.4f}, {hi:.4f}]"))
    console.print(f"target precision {verdict['target']:g}: [{VERDICT_STYLE[verdict['verdict']]}]"
                  f"{verdict['verdict']}[/] ({measured}{'; ' + verdict['reason'] if verdict['reason'] else ''})")
    console.print(f"[dim]{VERDICT_NOTE}[/]")


def load_classifier(model: Path, runtime: str = "torch"):  # -> IRPClassifier
    from rich.markup import escape

    from irp.predict import IRPClassifier

    configure_torch_threads()
    try:
        return IRPClassifier.load(model, runtime=runtime)
    except (FileNotFoundError, ValueError) as e:
        fail(escape(str(e)))
