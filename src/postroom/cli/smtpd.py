"""``postroom smtpd``: the SMTP submission relay on its own, without the HTTP API."""

from __future__ import annotations

import asyncio
import signal
import socket
from typing import TYPE_CHECKING, Annotated

import typer

from postroom.cli.common import configure_logging, run, settings_or_exit
from postroom.gcpause import quiet_collector

if TYPE_CHECKING:
    from postroom.config import Settings


def smtpd(
    host: Annotated[str | None, typer.Option(metavar="ADDR", help="Address to listen on.")] = None,
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, metavar="PORT", help="Submission port (default: 2525)."),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(min=0, metavar="N", help="Workers to run in each process (0 = relay only)."),
    ] = 0,
    processes: Annotated[
        int,
        typer.Option(min=1, max=64, metavar="N", help="Relay processes sharing the port(s)."),
    ] = 1,
) -> None:
    """Accept SMTP submissions into the queue until SIGTERM or Ctrl-C."""
    settings = settings_or_exit()
    if host:
        settings.smtp.host = host
    configure_logging(settings)
    port = port if port is not None else settings.smtp.port or 2525
    if processes == 1:
        _relay(settings, port, workers, None, banner=True)
        return
    # One relay process uses one core; N processes accept on the same sockets, bound
    # here, and the kernel spreads connections over them (as ``serve --processes``).
    from postroom.cli import multiprocess
    from postroom.cli.serving import listen, prepare

    names = "--port or POSTROOM_SMTP__PORT"
    sockets = [listen(settings.smtp.host, port, port_names=names, all_names=names)]
    try:
        if settings.smtp.tls_port is not None and settings.smtp.tls_cert is not None:
            names = "POSTROOM_SMTP__TLS_PORT"
            tls_port = settings.smtp.tls_port
            sockets.append(listen(settings.smtp.host, tls_port, port_names=names, all_names=names))
        prepare(settings)  # migrations and default rows once, not raced by N processes
        multiprocess.supervise(
            processes, lambda index: _relay(settings, port, workers, sockets, banner=index == 0)
        )
    finally:
        for sock in sockets:
            sock.close()


@run
async def _relay(
    settings: Settings,
    port: int,
    workers: int,
    sockets: list[socket.socket] | None,
    *,
    banner: bool,
) -> None:
    from postroom.app import Postroom
    from postroom.relay.server import Relay

    postroom = Postroom(settings)
    try:
        await postroom.start()
        relay = Relay(postroom)
        await relay.start(port, sockets=sockets)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        quiet_collector()  # (a tenth of the relay's CPU went to the collector)
        if banner:
            listening = ", ".join(f"{h}:{p}" for h, p in relay.addresses)
            typer.echo(f"SMTP relay listening on {listening}", err=True)
        tasks = [asyncio.create_task(postroom.worker().run(stop)) for _ in range(workers)]
        await stop.wait()
        await relay.aclose()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await postroom.aclose()
