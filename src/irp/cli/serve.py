"""The HTTP service: serve."""

from __future__ import annotations

from pathlib import Path

import typer

from irp.cli.common import (
    app,
    configure_torch_threads,
    console,
    err_console,
    fail,
)


@app.command()
def serve(
    model: Path = typer.Option(..., "--model", help="Model artifact directory."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address; non-loopback needs a token."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    runtime: str = typer.Option(
        "auto", "--runtime",
        help="auto (the fastest of the runtimes that pass parity, timed at load and reload), onnx-int8, onnx-fp32, "
        "torch, or onnx (int8 when exported).",
    ),
    token: str | None = typer.Option(
        None, "--token", help="Require 'Authorization: Bearer TOKEN' (default: env IRP_SERVE_TOKEN; none = no auth)."
    ),
    cooldown: float = typer.Option(600.0, "--cooldown", help="Seconds before a session may be offered a switch again."),
    threads: int = typer.Option(1, "--threads", help="Intra-op threads per request."),
    workers: int = typer.Option(2, "--workers", help="Requests scored at once (default 2: one per core)."),
    access_log: bool = typer.Option(False, "--access-log", help="Log every request."),
    log_dir: Path | None = typer.Option(
        None, "--log-dir", help="Write every decision and feedback event here (Hive-partitioned Parquet; docs/serving.md)."
    ),
    explore_rate: float = typer.Option(
        0.0, "--explore-rate", help="Share of eligible records whose offer is a fair coin (support for policy-eval)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the exploration coins (reproducible runs)."),
    log_rotate_mb: float = typer.Option(64.0, "--log-rotate-mb", help="Start a new log file beyond this size."),
    log_rotate_s: float = typer.Option(300.0, "--log-rotate-s", help="Start a new log file after this many seconds."),
    log_queue: int = typer.Option(100_000, "--log-queue", help="Events queued for the log writer at most (then dropped)."),
    live_window_s: float = typer.Option(3600.0, "--live-window-s", help="Window of the live precision of offers."),
    state: str = typer.Option(
        "memory", "--state", help="Where the session cooldown and offer records live: memory (this process) or "
        "redis://HOST:PORT/DB (shared by every replica; docs/fleet.md)."
    ),
    replica_id: str | None = typer.Option(
        None, "--replica-id", help="Names this replica in answers, metrics and log files (default: hostname + "
        "random suffix; give a restarted replica its old id to recover its log files)."
    ),
    offer_ttl_s: float = typer.Option(
        86_400.0, "--offer-ttl-s", help="With --state redis: seconds an offer record lives (answers later than "
        "this are not attributed)."
    ),
) -> None:
    """Serve the model over HTTP: /v1/predict, /v1/predict/batch, /v1/feedback, /v1/admin/reload, /healthz,
    /readyz, /v1/model, /metrics. SIGHUP re-reads the model folder; SIGTERM finishes in-flight requests and
    drains the decision log."""
    import os

    from rich.markup import escape

    from irp.serve import (
        TOKEN_ENV,
        DecisionLog,
        Engine,
        LogDirError,
        ServeSettings,
        create_app,
        install_sighup,
        is_loopback,
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
    from irp.serve.state import check_replica_id, default_replica_id, open_state, parse_state

    try:
        parse_state(state)
    except ValueError as e:
        fail(escape(f"--state {state}: {e}"))
    try:
        replica_id = check_replica_id(replica_id) if replica_id is not None else default_replica_id()
    except ValueError as e:
        fail(escape(f"--replica-id {e}"))
    if offer_ttl_s <= 0:
        fail("--offer-ttl-s must be > 0")
    decision_log = None
    if log_dir is not None:  # refused before the model loads: an unwritable folder is a start-up error
        try:
            decision_log = DecisionLog(log_dir, max_queue=log_queue, rotate_bytes=int(log_rotate_mb * 1024 * 1024),
                                       rotate_seconds=log_rotate_s, replica_id=replica_id)
        except LogDirError as e:
            fail(escape(f"--log-dir: {e}"))
    configure_torch_threads()
    try:
        engine = Engine(load_classifier(model, runtime, threads), model)
    except (FileNotFoundError, ValueError) as e:
        if decision_log is not None:
            decision_log.close()
        fail(escape(str(e)))
    engine.warm_up()
    shared = open_state(state, offer_ttl_s=offer_ttl_s)
    if not shared.ok:
        err_console.print(escape(f"warning: --state: {shared.last_error}; serving without offers until it answers"))
    settings = ServeSettings(token=token, cooldown_s=cooldown, workers=workers, explore_rate=explore_rate, seed=seed,
                             runtime=runtime, threads=threads, live_window_s=live_window_s, replica_id=replica_id)
    app_ = create_app(engine, settings, decision_log, shared)
    install_sighup(app_.state.slot)
    console.print(
        f"serving {escape(str(model))} (version {engine.version}, runtime {engine.runtime}, threshold "
        f"{engine.threshold:.4g}) as replica {replica_id} with state {escape(shared.status().get('url', 'memory'))} "
        f"on http://{escape(host)}:{port} "
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
