"""One rich progress bar style for long work (training, simulation, tokenization)."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def progress_bar(disable: bool = False, transient: bool = False) -> Progress:
    """A bar that shows loss and examples/s when the task carries `loss` and `rate` fields."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}", justify="right"),
        TextColumn("{task.fields[rate]:,.0f} ex/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=disable,
        transient=transient,
    )
