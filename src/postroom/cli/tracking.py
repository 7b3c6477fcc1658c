"""``postroom suppressions``, ``postroom webhooks replay`` and ``postroom inbound``."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from postroom.cli.common import fail, new_typer, run, started, table

suppressions_app = new_typer(
    "Addresses Postroom will not send to: list, add, remove, import and export (CSV)."
)
webhooks_app = new_typer("Stored ESP webhook payloads.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead.")]


@suppressions_app.command("list")
@run
async def suppressions_list(
    search: Annotated[str | None, typer.Option(help="Part of the address.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    cursor: Annotated[str | None, typer.Option(help="nextCursor of the previous page.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List suppressed addresses in address order."""
    from postroom.tracking.suppressions import Suppressions

    async with started() as postroom:
        page = await Suppressions(postroom.engine).page(search=search, limit=limit, cursor=cursor)
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    rows = [("EMAIL", "SCOPE", "REASON", "CREATED", "EXPIRES")]
    rows += [
        (s["email"], s["scope"], s["reason"], s["createdAt"][:19], (s["expiresAt"] or "")[:19])
        for s in page["suppressions"]
    ]
    typer.echo(table(rows))
    if page["nextCursor"]:
        typer.echo(f"more: --cursor {page['nextCursor']}")


@suppressions_app.command("add")
@run
async def suppressions_add(
    email: str,
    scope: Annotated[str, typer.Option(help="global or marketing.")] = "global",
    reason: Annotated[str, typer.Option()] = "manual",
) -> None:
    """Suppress an address."""
    from postroom.tracking.suppressions import Suppressions

    async with started() as postroom:
        added = await Suppressions(postroom.engine).add(
            email, scope=scope, reason=reason, now=postroom.clock.now()
        )
    typer.echo(f"{email.lower()}: {'suppressed' if added else 'already suppressed'} ({scope})")


@suppressions_app.command("remove")
@run
async def suppressions_remove(
    email: str,
    scope: Annotated[str | None, typer.Option(help="Only this scope.")] = None,
) -> None:
    """Lift the suppression of an address."""
    from postroom.tracking.suppressions import Suppressions

    async with started() as postroom:
        removed = await Suppressions(postroom.engine).remove(email, scope=scope)
    typer.echo(f"{email.lower()}: {removed} suppression(s) removed")


@suppressions_app.command("import")
@run
async def suppressions_import(
    path: Annotated[Path, typer.Argument(help="CSV with an 'email' column; '-': stdin.")],
) -> None:
    """Add the rows of a CSV (email, scope, reason, expiresAt); one bad row adds none."""
    from postroom.tracking.suppressions import Suppressions

    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    async with started() as postroom:
        result = await Suppressions(postroom.engine).import_csv(text, now=postroom.clock.now())
    typer.echo(f"{result['added']} added, {result['rows'] - result['added']} already suppressed")


@suppressions_app.command("export")
@run
async def suppressions_export() -> None:
    """Print every suppression as CSV."""
    from postroom.tracking.suppressions import Suppressions

    async with started() as postroom:
        typer.echo(await Suppressions(postroom.engine).export_csv(), nl=False)


@webhooks_app.command("replay")
@run
async def webhooks_replay(
    provider: Annotated[str | None, typer.Option(help="Only this provider (name or id).")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only payloads received since (ISO 8601).")
    ] = None,
) -> None:
    """Apply stored webhook payloads again; events already recorded stay recorded once."""
    from postroom.api.routes.webhooks import intake

    when: datetime | None = None
    if since is not None:
        try:
            when = datetime.fromisoformat(since)
        except ValueError:
            raise fail(f"--since {since!r} is not an ISO 8601 time", 2) from None
        when = when if when.tzinfo else when.replace(tzinfo=UTC)
    async with started() as postroom:
        totals = await intake(postroom).replay(provider=provider, since=when)
    typer.echo(
        f"{totals['receipts']} payloads: {totals['recorded']} events recorded, "
        f"{totals['duplicates']} already recorded, {totals['unmatched']} unmatched, "
        f"{totals['failed']} failed"
    )
    if totals["failed"]:
        raise typer.Exit(1)


@run
async def inbound(
    recipient: Annotated[
        str | None,
        typer.Option(
            metavar="ADDRESS",
            help="The address the MTA delivered the report to ($ORIGINAL_RECIPIENT in a "
            "Postfix pipe): a VERP bounce address names its email.",
        ),
    ] = None,
) -> None:
    """Read a bounce (DSN) or complaint (ARF) message on stdin and apply it (an MTA pipe)."""
    from postroom.tracking.context import TrackingContext
    from postroom.tracking.inbound import Inbound

    raw = sys.stdin.buffer.read()
    if not raw.strip():
        raise fail("no message on stdin", 2)
    async with started() as postroom:
        result = await Inbound(
            postroom.engine,
            postroom.clock,
            soft_limit=postroom.settings.suppress_after_soft_bounces,
            tracking=TrackingContext.from_settings(postroom.settings),
        ).receive(raw, envelope_to=recipient)
    typer.echo(
        f"{result['kind']} report: {result['recorded']} recorded, "
        f"{result['duplicates']} already recorded, {result['unmatched']} unmatched"
    )
