"""`irp distill`: a student trained on its teachers' averaged soft scores and the labels (irp.distill).

It takes every flag of `irp train` (the same function body runs) except that `--alpha` is the distillation mix;
the combined loss's BCE weight is `--loss-alpha` here.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer

from irp.cli.common import app
from irp.cli.model import run_training_command
from irp.cli.model import train as train_command


def distill(
    teacher: list[Path] = typer.Option(
        ..., "--teacher", help="A teacher artifact (any irp model reading the same input fields); repeat for an ensemble."
    ),
    transfer: Path | None = typer.Option(
        None, "--transfer", help="Extra records the teachers label (a `label` they carry is not read); they join the training set."
    ),
    temperature: float = typer.Option(2.0, "--temperature", help="Soft-target temperature T > 0 (loss scaled by T²)."),
    alpha: float = typer.Option(
        0.5, "--alpha", help="Share of the label loss in [0, 1]; the rest is the soft-label loss against the teachers."
    ),
    loss_alpha: float = typer.Option(1.0, "--loss-alpha", help="Weight of BCE inside the combined label loss."),
    fields: str | None = typer.Option(
        None, "--fields", help="Comma-separated input fields (default: the teachers'; must be the teachers')."
    ),
    **training_flags: Any,
) -> None:
    """Distil teachers into a student: α · (loss on the labels) + (1 − α) · (soft-label BCE against the teachers'
    averaged scores at temperature T); then calibration and the certified threshold as `irp train`."""
    flags = dict(training_flags, fields=fields, alpha=loss_alpha)
    run_training_command(flags, teachers=list(teacher), transfer=transfer, temperature=temperature,
                         distill_alpha=alpha)


# The signature typer reads: the options above, then every `irp train` option except those redefined here
# (annotations evaluated: typer tells a flag like --resume by its `bool` type).
_own = [p for p in inspect.signature(distill, eval_str=True).parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD]
_inherited = [p for name, p in inspect.signature(train_command, eval_str=True).parameters.items()
              if name not in {"alpha", "fields"}]
distill.__signature__ = inspect.Signature(_own + _inherited, return_annotation=None)  # type: ignore[attr-defined]
distill.__annotations__ = {p.name: p.annotation for p in _own + _inherited} | {"return": None}
app.command("distill")(distill)
