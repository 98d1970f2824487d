"""`irp soup`: one model from the averaged weights of several runs of one recipe (irp.soup)."""

from __future__ import annotations

from pathlib import Path

import typer

from irp.cli.common import app, configure_torch_threads, console, fail, print_metrics, print_promise


@app.command()
def soup(
    model: list[Path] = typer.Option(
        ..., "--model", help="An ingredient: an irp artifact of the same architecture and inputs; repeat (>= 2)."
    ),
    valid: Path = typer.Option(..., "--valid", help="Labelled records: the greedy choice, calibration, threshold."),
    out: Path = typer.Option(..., "--out", help="Folder of the new artifact (not one of the ingredients)."),
    recipe: str = typer.Option(
        "greedy", "--recipe", help="greedy: add runs best first while validation AP does not drop; uniform: all."
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto (scoring only)."),
    label_field: str | None = typer.Option(None, "--label-field", help="Label field (default: the ingredients')."),
) -> None:
    """Average the weights of several runs (a weight soup: Wortsman et al. 2022) into one model at one model's
    serving cost; then calibration and the certified threshold on --valid, as `irp train`."""
    from rich.markup import escape

    from irp.data.io import DataFileError, InvalidRecordError
    from irp.soup import make_soup  # checks every argument (SoupError: exit 2) before writing anything

    configure_torch_threads()
    try:
        result = make_soup(model, valid, out, recipe, device=device, label_field=label_field,  # type: ignore[arg-type]
                           log=lambda line: console.print(escape(line)))
    except InvalidRecordError as e:
        fail(escape(f"{e} (run `irp validate` on the file for every bad line)"))
    except (DataFileError, FileNotFoundError, ValueError) as e:
        fail(escape(str(e)))
    print_metrics(result.metrics, f"validation metrics of the soup ({escape(str(valid))})")
    print_promise(out)
    console.print(f"soup of {len(result.kept)} of {len(model)} runs -> {escape(str(out))}")
