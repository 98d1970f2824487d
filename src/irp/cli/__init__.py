"""The `irp` command line: a thin typer layer over the library, one module per command group.

Each command parses flags, calls one library function and prints a rich summary. Heavy imports
(torch, transformers, sklearn) happen inside the commands so that `irp --help` stays instant.
"""

from __future__ import annotations

# Each module registers its commands on `app`; this order is the order of `irp --help`.
from irp.cli import data  # noqa: F401  isort: skip
from irp.cli import model  # noqa: F401  isort: skip
from irp.cli import distill  # noqa: F401  isort: skip
from irp.cli import soup  # noqa: F401  isort: skip
from irp.cli import serve  # noqa: F401  isort: skip
from irp.cli import logs  # noqa: F401  isort: skip
from irp.cli import audit  # noqa: F401  isort: skip
from irp.cli import fleet  # noqa: F401  isort: skip
from irp.cli.common import app

__all__ = ["app"]
