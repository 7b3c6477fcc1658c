"""``postroom migrate``, ``serve`` and ``worker``: the long-running processes.

``serve`` binds its socket before it starts anything else: a busy port is one line
naming ``--port`` / ``POSTROOM_PORT``, and no worker has claimed a job by then.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
from typing import TYPE_CHECKING, Annotated

import typer

from postroom import __version__
from postroom.cli.common import (
    configure_logging,
    describe,
    fail,
    run,
    run_loop,
    settings_or_exit,
)

if TYPE_CHECKING:
    from postroom.analytics.metrics_server import MetricsServer
    from postroom.app import Postroom
    from postroom.config import Settings

LogFormatOpt = Annotated[
    str | None,
    typer.Option("--log-format", metavar="text|json", help="Log lines for people or for machines."),
]


def _log_format(value: str | None) -> str | None:
    if value is not None and value not in ("text", "json"):
        raise fail(f"--log-format must be text or json, not {value!r}", 2)
    return value


@run
async def migrate() -> None:
    """Create or upgrade the database schema, and the default queues and provider."""
    from postroom.app import Postroom
    from postroom.db import migrate as db_migrate

    settings = settings_or_exit()
    pr = Postroom(settings)
    try:
        await pr.start(migrate_schema=True)
        revision = await db_migrate.current_revision(pr.engine)
    finally:
        await pr.aclose()
    typer.echo(f"Database is at revision {revision} ({safe_url(settings)}).")


def safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.effective_database_url).render_as_string(hide_password=True)


def listen(
    host: str,
    port: int,
    *,
    port_names: str = "--port or POSTROOM_PORT",
    all_names: str = "--host/--port or POSTROOM_HOST/POSTROOM_PORT",
) -> socket.socket:
    """A listening socket on ``host:port``, or a one-line error naming the settings."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise fail(
                f"cannot listen on {host}:{port}: the port is in use; choose another with "
                f"{port_names}",
                2,
            ) from None
        reason = exc.strerror or str(exc)
        raise fail(f"cannot listen on {host}:{port}: {reason}; check {all_names}", 2) from None
    sock.set_inheritable(True)
    return sock


MetricsPortOpt = Annotated[
    int | None,
    typer.Option(
        min=0,
        max=65535,
        metavar="PORT",
        help="Serve /metrics without an API key on this port (POSTROOM_METRICS__HOST's address).",
    ),
]


def listen_metrics(settings: Settings, port: int | None) -> socket.socket | None:
    """The metrics listener's socket (``--metrics-port`` over ``POSTROOM_METRICS__PORT``),
    or None when neither asks for one."""
    port = port if port is not None else settings.metrics.port
    if port is None:
        return None
    return listen(
        settings.metrics.host,
        port,
        port_names="--metrics-port or POSTROOM_METRICS__PORT",
        all_names="POSTROOM_METRICS__HOST and --metrics-port or POSTROOM_METRICS__PORT",
    )


def serve(
    host: Annotated[str | None, typer.Option(metavar="ADDR", help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(metavar="PORT", help="Port to listen on.")] = None,
    workers: Annotated[
        int, typer.Option(min=0, metavar="N", help="Workers to run in this process (0 = API only).")
    ] = 1,
    no_workers: Annotated[
        bool, typer.Option("--no-workers", help="Serve the API only; run 'postroom worker' apart.")
    ] = False,
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            metavar="N",
            help="API processes sharing the port (each also runs --workers workers).",
        ),
    ] = 1,
    smtp_port: Annotated[
        int | None,
        typer.Option(
            min=0, max=65535, metavar="PORT", help="Also accept SMTP submissions on this port."
        ),
    ] = None,
    metrics_port: MetricsPortOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Run the API (and, by default, a worker) in one process, or in --processes N."""
    settings = settings_or_exit()
    configure_logging(settings, _log_format(log_format))
    host = host or settings.host
    port = port or settings.port
    sock = listen(host, port)
    metrics_sock = listen_metrics(settings, metrics_port)
    in_process = 0 if no_workers else workers
    try:
        if processes == 1:
            _serve_one(settings, sock, host, port, in_process, smtp_port, metrics_sock, banner=True)
            return
        from postroom.cli import multiprocess

        # migrations and default rows are created once here: N processes must not race them
        prepare(settings)
        multiprocess.supervise(
            processes,
            lambda index: _serve_one(
                settings,
                sock,
                host,
                port,
                in_process,
                smtp_port if index == 0 else None,  # one relay: its port cannot be shared
                metrics_sock if index == 0 else None,  # any process reads all the figures
                banner=index == 0,
            ),
        )
        typer.echo(f"Served by {processes} processes.", err=True)
    finally:
        sock.close()
        if metrics_sock is not None:
            metrics_sock.close()


def prepare(settings: Settings) -> None:
    """Migrate and create the default rows once, before N processes start."""
    from postroom.app import Postroom
    from postroom.errors import PostroomError

    async def start() -> None:
        postroom = Postroom(settings)
        try:
            await postroom.start()
        finally:
            await postroom.aclose()

    try:
        run_loop(start())
    except PostroomError as exc:
        raise fail(exc.message, exc.exit_code) from None


def _serve_one(
    settings: Settings,
    sock: socket.socket,
    host: str,
    port: int,
    workers: int,
    smtp_port: int | None,
    metrics_sock: socket.socket | None,
    *,
    banner: bool,
) -> None:
    """One API process on the listening socket ``sock``."""
    import uvicorn

    from postroom.api.app import create_app
    from postroom.app import Postroom
    from postroom.errors import PostroomError
    from postroom.gcpause import quiet_collector

    try:
        postroom = Postroom(settings)
    except PostroomError as exc:
        raise fail(exc.message, exc.exit_code) from None
    api = create_app(postroom, workers=workers)
    # log_config=None: uvicorn's own lines go through our handler, in our format;
    # httptools parses HTTP (the loop is uvloop, see run_loop)
    config = uvicorn.Config(
        api, log_level="warning", log_config=None, access_log=False, lifespan="on", http="auto"
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        # start (migrate or check the schema, create defaults) before serving, so
        # that a problem is one clear line here rather than a failed ASGI lifespan;
        # workers start only in the lifespan, after the socket is ours
        await postroom.start()
        if banner:
            typer.echo(f"Postroom {__version__} on http://{host}:{port}  (API: /api/system/email)")
            typer.echo(f"Database: {safe_url(settings)}")
            if workers:
                typer.echo(f"Dev outbox: {settings.outbox_dir.resolve()}")
        relay = None
        if smtp_port is not None or (banner and settings.smtp.port is not None):
            from postroom.relay.server import Relay

            relay = await Relay(postroom).start(smtp_port)
            listening = ", ".join(f"{h}:{p}" for h, p in relay.addresses)
            typer.echo(f"SMTP relay: {listening}")
        metrics_server = await _start_metrics(postroom, metrics_sock)
        quiet_collector()  # (a tenth of POST /send's CPU went to the collector)
        try:
            await server.serve(sockets=[sock])
        finally:
            if relay is not None:
                await relay.aclose()
            if metrics_server is not None:
                await metrics_server.aclose()

    try:
        run_loop(main())
    except Exception as exc:
        message = describe(exc)
        if message is None:
            raise
        raise fail(message, exc.exit_code if isinstance(exc, PostroomError) else 1) from None
    if not server.started:
        raise typer.Exit(1)


async def _start_metrics(postroom: Postroom, sock: socket.socket | None) -> MetricsServer | None:
    if sock is None:
        return None
    from postroom.analytics.metrics_server import MetricsServer

    server = await MetricsServer(postroom, sock).start()
    host, port = server.address
    typer.echo(f"Metrics: http://{host}:{port}/metrics  (no API key)", err=True)
    return server


@run
async def worker(
    queue: Annotated[
        list[str] | None,
        typer.Option("--queue", "-q", metavar="NAME", help="Only these queues (repeatable)."),
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, metavar="N", help="Concurrent sends.")
    ] = None,
    burst: Annotated[
        bool, typer.Option("--burst", help="Exit once no due job is left instead of waiting.")
    ] = False,
    metrics_port: MetricsPortOpt = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Run one worker process: claim jobs and send them until SIGTERM or Ctrl-C."""
    from postroom.app import Postroom
    from postroom.gcpause import quiet_collector

    settings = settings_or_exit()
    if concurrency:
        settings.worker.concurrency = concurrency
    configure_logging(settings, _log_format(log_format))
    metrics_sock = None if burst else listen_metrics(settings, metrics_port)
    postroom = Postroom(settings)
    metrics_server = None
    try:
        await postroom.start()
        metrics_server = await _start_metrics(postroom, metrics_sock)
        w = postroom.worker(queue_names=queue)
        if burst:
            processed = await w.drain()
            await w.aclose()
            typer.echo(f"Processed {processed} jobs: {dict(w.stats)}")
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        typer.echo(f"Worker {w.id} running; stop with Ctrl-C or SIGTERM.", err=True)
        # full collections walked every module the worker imported, stalling its loop
        # ~0.1 s at a time (its signer helper idles meanwhile); delivery +5-15 %
        quiet_collector()
        await w.run(stop)
    finally:
        if metrics_server is not None:
            await metrics_server.aclose()
        elif metrics_sock is not None:
            metrics_sock.close()
        await postroom.aclose()
