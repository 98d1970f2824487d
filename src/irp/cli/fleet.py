"""Operating a fleet of `irp serve` replicas: fleet reload (docs/fleet.md)."""

from __future__ import annotations

import os

import typer

from irp.cli.common import app, console, fail

fleet_app = typer.Typer(help="Operate several `irp serve` replicas behind a balancer (docs/fleet.md).",
                        no_args_is_help=True)
app.add_typer(fleet_app, name="fleet")


@fleet_app.command("reload")
def reload(
    replicas: list[str] = typer.Option(..., "--replica", help="Base URL of one replica (repeat: one per replica)."),
    model: str = typer.Option(..., "--model", help="Artifact folder, at this path on every replica."),
    token: str | None = typer.Option(None, "--token", help="Bearer token of the replicas (default: env IRP_SERVE_TOKEN)."),
    pause_s: float = typer.Option(0.0, "--pause-s", help="Seconds to wait between two replicas."),
) -> None:
    """Rolling swap: reload the replicas one at a time (each in place, with no failed request); stops at the
    first replica that refuses the folder (the rest keep the old model)."""
    import httpx
    from rich.markup import escape

    from irp.serve import TOKEN_ENV
    from irp.serve.rolling import RollError, rolling_reload

    if pause_s < 0:
        fail("--pause-s must be >= 0")
    if any(not r.startswith(("http://", "https://")) for r in replicas):
        fail("--replica must be a URL such as http://10.0.0.11:8000")
    token = token or os.environ.get(TOKEN_ENV) or None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    clients = [httpx.Client(base_url=r, headers=headers) for r in replicas]
    try:
        done = rolling_reload(clients, model, pause_s)
    except RollError as e:
        fail(escape(f"rolling reload stopped: {e}"), code=1)
    finally:
        for c in clients:
            c.close()
    for d in done:
        console.print(f"{escape(d['url'])} ({d['replica_id']}): {d['previous_model_version']} -> "
                      f"{d['model_version']} in {d['seconds']} s")
