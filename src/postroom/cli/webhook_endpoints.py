"""``postroom webhooks endpoints``: register and inspect outgoing event webhooks."""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

import typer

from postroom.cli.common import fail, new_typer, run, started, table

endpoints_app = new_typer("Endpoints that receive Postroom's events, signed per Standard Webhooks.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead.")]
EndpointArg = Annotated[str, typer.Argument(metavar="ENDPOINT_ID", help="The endpoint's id.")]


def _id(value: str, what: str = "endpoint id") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise fail(f"{value!r} is not an {what}", 2) from None


@endpoints_app.command("list")
@run
async def endpoints_list(
    limit: Annotated[int, typer.Option(min=1, max=500, metavar="N")] = 100,
    cursor: Annotated[
        str | None, typer.Option(metavar="CURSOR", help="nextCursor of the previous page.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List registered endpoints, oldest first."""
    async with started() as postroom:
        page = await postroom.webhooks.list_page(limit=limit, cursor=cursor)
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    rows = [("ID", "URL", "EVENTS", "ENABLED")]
    rows += [
        (e["id"], e["url"], ",".join(e["eventTypes"]) or "all", "yes" if e["enabled"] else "no")
        for e in page["endpoints"]
    ]
    typer.echo(table(rows))
    if page["nextCursor"]:
        typer.echo(f"more: --cursor {page['nextCursor']}")


@endpoints_app.command("add")
@run
async def endpoints_add(
    url: Annotated[str, typer.Argument(metavar="URL", help="Where events are POSTed.")],
    event: Annotated[
        list[str] | None,
        typer.Option(
            "--event", metavar="TYPE", help="Only this type, e.g. email.bounced (repeatable)."
        ),
    ] = None,
    description: Annotated[str | None, typer.Option(metavar="TEXT")] = None,
    allow_network: Annotated[
        list[str] | None,
        typer.Option("--allow-network", metavar="CIDR", help="A non-public network it may reach."),
    ] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Register it disabled.")] = False,
) -> None:
    """Register an endpoint and print its signing secret (shown only now)."""
    from postroom.errors import RequestInvalid
    from postroom.events.catalog import EVENT_TYPES

    unknown = [t for t in event or [] if t not in EVENT_TYPES]
    if unknown:
        raise RequestInvalid(
            [{"field": "--event", "message": f"{unknown[0]!r} is not one of {EVENT_TYPES}"}]
        )
    async with started() as postroom:
        created = await postroom.webhooks.create(
            url=url,
            description=description,
            event_types=event or [],
            enabled=not disabled,
            allow_networks=allow_network or [],
        )
    typer.echo(f"Endpoint {created['id']} -> {created['url']}")
    typer.echo("Signing secret (shown once):")
    typer.echo(created["secret"])


@endpoints_app.command("remove")
@run
async def endpoints_remove(endpoint: EndpointArg) -> None:
    """Remove an endpoint and its delivery log."""
    async with started() as postroom:
        await postroom.webhooks.delete(_id(endpoint))
    typer.echo(f"Endpoint {endpoint} removed")


@endpoints_app.command("deliveries")
@run
async def endpoints_deliveries(
    endpoint: EndpointArg,
    status: Annotated[
        str | None,
        typer.Option(metavar="STATE", help="pending, delivering, delivered or failed."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, metavar="N")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """The endpoint's delivery log, newest first."""
    async with started() as postroom:
        page = await postroom.webhooks.deliveries(_id(endpoint), status=status, limit=limit)
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    rows: list[tuple[Any, ...]] = [("ID", "EVENT", "STATUS", "ATTEMPTS", "LAST CODE", "LAST ERROR")]
    rows += [
        (
            d["id"],
            d["eventType"],
            d["status"],
            str(d["attempts"]),
            str(d["lastStatusCode"] or "-"),
            (d["lastError"] or "")[:60],
        )
        for d in page["deliveries"]
    ]
    typer.echo(table(rows))


@endpoints_app.command("retry")
@run
async def endpoints_retry(
    endpoint: EndpointArg,
    delivery: Annotated[str, typer.Argument(metavar="DELIVERY_ID")],
) -> None:
    """Send a delivery again (a worker posts it), with a fresh attempt budget."""
    async with started() as postroom:
        await postroom.webhooks.redeliver(_id(endpoint), _id(delivery, "delivery id"))
    typer.echo(f"Delivery {delivery} queued again")
