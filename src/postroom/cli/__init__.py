"""The ``postroom`` command line: serve, worker, migrate, send, and the sub-commands."""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated, Any

import typer

from postroom import __version__
from postroom.app import Postroom
from postroom.cli.common import configure_logging, describe, fail, run, settings_or_exit, table
from postroom.cli.keys import keys_app
from postroom.cli.providers import providers_app
from postroom.cli.queues import queues_app
from postroom.cli.users import users_app
from postroom.config import Settings
from postroom.errors import PostroomError

app = typer.Typer(
    help="Postroom: self-hosted email delivery.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(keys_app, name="keys")
app.add_typer(queues_app, name="queues")
app.add_typer(providers_app, name="providers")
app.add_typer(users_app, name="users")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"postroom {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Postroom: self-hosted email delivery."""


# -- migrate ---------------------------------------------------------------------------


@app.command()
@run
async def migrate() -> None:
    """Create or upgrade the database schema, and the default queues and provider."""
    from postroom.db import migrate as db_migrate

    settings = settings_or_exit()
    pr = Postroom(settings)
    try:
        await pr.start(migrate_schema=True)
        revision = await db_migrate.current_revision(pr.engine)
    finally:
        await pr.aclose()
    typer.echo(f"Database is at revision {revision} ({_safe_url(settings)}).")


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.effective_database_url).render_as_string(hide_password=True)


# -- serve and worker ------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[
        int, typer.Option(min=0, help="Workers to run in this process (0 = API only).")
    ] = 1,
    no_workers: Annotated[
        bool, typer.Option("--no-workers", help="Serve the API only; run 'postroom worker' apart.")
    ] = False,
) -> None:
    """Run the API (and, by default, a worker) in one process."""
    import uvicorn

    from postroom.api.app import create_app

    settings = settings_or_exit()
    configure_logging(settings)
    host = host or settings.host
    port = port or settings.port
    try:
        postroom = Postroom(settings)
    except PostroomError as exc:
        raise fail(exc.message, exc.exit_code) from None
    api = create_app(postroom, workers=0 if no_workers else workers)
    config = uvicorn.Config(api, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)

    async def main() -> None:
        # start (migrate or check the schema, create defaults) before serving, so
        # that a problem is one clear line here rather than a failed ASGI lifespan
        await postroom.start()
        typer.echo(f"Postroom {__version__} on http://{host}:{port}  (API: /api/system/email)")
        typer.echo(f"Database: {_safe_url(settings)}")
        if not no_workers and workers:
            typer.echo(f"Dev outbox: {settings.outbox_dir.resolve()}")
        await server.serve()

    try:
        asyncio.run(main())
    except Exception as exc:
        message = describe(exc)
        if message is None:
            raise
        raise fail(message, exc.exit_code if isinstance(exc, PostroomError) else 1) from None
    if not server.started:
        raise typer.Exit(1)


@app.command()
@run
async def worker(
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="Only these queues (repeatable).")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Concurrent sends.")] = None,
    burst: Annotated[
        bool, typer.Option("--burst", help="Exit once no due job is left instead of waiting.")
    ] = False,
) -> None:
    """Run one worker process: claim jobs and send them until SIGTERM or Ctrl-C."""
    settings = settings_or_exit()
    if concurrency:
        settings.worker.concurrency = concurrency
    configure_logging(settings)
    postroom = Postroom(settings)
    try:
        await postroom.start()
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
        await w.run(stop)
    finally:
        await postroom.aclose()


# -- send ------------------------------------------------------------------------------


@app.command()
@run
async def send(
    to: Annotated[list[str], typer.Option("--to", help="Recipient (repeatable).")],
    subject: Annotated[str, typer.Option(help="Subject line.")],
    text: Annotated[str | None, typer.Option(help="Plain-text body.")] = None,
    html: Annotated[str | None, typer.Option(help="HTML body.")] = None,
    sender: Annotated[
        str | None, typer.Option("--from", help="Sender; defaults to POSTROOM_DEFAULT_FROM.")
    ] = None,
    cc: Annotated[list[str] | None, typer.Option(help="Cc recipient (repeatable).")] = None,
    bcc: Annotated[list[str] | None, typer.Option(help="Bcc recipient (repeatable).")] = None,
    email_type: Annotated[
        str, typer.Option("--type", help="transactional, marketing, system or notification.")
    ] = "transactional",
) -> None:
    """Queue one email through the same path as the API; prints its id."""
    from email.utils import parseaddr

    def recipient(raw: str, kind: str) -> dict[str, str]:
        name, address = parseaddr(raw)
        entry = {"email": address or raw, "type": kind}
        if name:
            entry["name"] = name
        return entry

    request: dict[str, Any] = {
        "to": [recipient(r, "to") for r in to]
        + [recipient(r, "cc") for r in cc or ()]
        + [recipient(r, "bcc") for r in bcc or ()],
        "subject": subject,
        "content": {k: v for k, v in (("text", text), ("html", html)) if v is not None},
        "type": email_type,
        "source": "cli",
    }
    if sender:
        name, address = parseaddr(sender)
        request["from"] = {"email": address or sender, **({"name": name} if name else {})}
    postroom = Postroom(settings_or_exit())
    try:
        await postroom.start()
        result = await postroom.send(request)
    finally:
        await postroom.aclose()
    typer.echo(f"Queued {result.id} on queue {result.queue_id} for {result.recipients} recipients.")


@app.command()
@run
async def status(
    email_id: Annotated[str, typer.Argument(help="The email's id (or a recipient record's).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON.")] = False,
) -> None:
    """Show an email's status, its recipients and every delivery attempt."""
    import json

    postroom = Postroom(settings_or_exit())
    try:
        await postroom.start()
        found = await postroom.status(email_id)
    finally:
        await postroom.aclose()
    if as_json:
        typer.echo(json.dumps(found.dump(), indent=2))
        return
    typer.echo(f"{found.id}  {found.status}  {found.subject!r}")
    typer.echo(f"attempts {found.attempts}/{found.max_attempts}, provider {found.provider or '-'}")
    if found.error:
        typer.echo(f"last error: {found.error.get('code')}: {found.error.get('message')}")
    rows = [("RECIPIENT", "TYPE", "STATUS", "MESSAGE-ID")]
    rows += [(r.email, r.type, r.status, r.message_id or "-") for r in found.recipients]
    typer.echo(table(rows))
    if found.attempt_log:
        log_rows = [("#", "FINISHED", "PROVIDER", "OUTCOME", "ERROR")]
        log_rows += [
            (
                str(a.attempt),
                f"{a.finished_at:%Y-%m-%d %H:%M:%S}",
                a.provider or "-",
                a.outcome,
                f"{a.error_code}: {a.error}"[:80] if a.error_code else "",
            )
            for a in found.attempt_log
        ]
        typer.echo(table(log_rows))


def main() -> None:
    app()
