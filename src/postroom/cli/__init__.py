"""The ``postroom`` command line: serve, worker, migrate, send, status, config, and the
sub-command groups.

Only Typer is imported up front; each command imports the engine (pydantic,
SQLAlchemy, FastAPI, ...) when it runs, so ``--version`` and ``--help`` start at once.
"""

from __future__ import annotations

from typing import Annotated

import typer

from postroom import __version__
from postroom.cli import bulk, configuration, retention, sending, serving
from postroom.cli.analytics import analytics_app
from postroom.cli.common import new_typer
from postroom.cli.domains import domains_app
from postroom.cli.keys import keys_app
from postroom.cli.providers import providers_app
from postroom.cli.queues import queues_app
from postroom.cli.smtpd import smtpd
from postroom.cli.tracking import inbound, suppressions_app, webhooks_app
from postroom.cli.users import users_app
from postroom.cli.webhook_endpoints import endpoints_app

app = new_typer("Postroom: self-hosted email delivery.")
app.add_typer(keys_app, name="keys")
app.add_typer(queues_app, name="queues")
app.add_typer(providers_app, name="providers")
app.command("migrate")(serving.migrate)
app.command("serve")(serving.serve)
app.command("worker")(serving.worker)
app.command("send")(sending.send)
app.command("status")(sending.status)
app.command("send-bulk")(bulk.send_bulk)
app.command("send-bulk-status")(bulk.bulk_status)
app.add_typer(domains_app, name="domains")
app.command("config")(configuration.show)
app.command("smtpd")(smtpd)
app.command("prune")(retention.prune)
app.add_typer(users_app, name="users")
app.add_typer(suppressions_app, name="suppressions")
app.add_typer(webhooks_app, name="webhooks")
webhooks_app.add_typer(endpoints_app, name="endpoints")
app.command("inbound")(inbound)
app.add_typer(analytics_app, name="analytics")


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


def main() -> None:
    app()
