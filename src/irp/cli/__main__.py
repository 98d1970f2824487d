"""`python -m irp.cli ...` (torchrun launches training this way)."""

from irp.cli import app

app()
