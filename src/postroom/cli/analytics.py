"""``postroom analytics``: rebuild the daily rollups, write a report to a file."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from postroom.cli.common import fail, new_typer, run, started

analytics_app = new_typer("Analytics: rebuild the daily rollups, write reports.")

FromOpt = Annotated[
    str, typer.Option("--from", help="First day (ISO date) or instant (ISO date-time, UTC).")
]
ToOpt = Annotated[str, typer.Option("--to", help="Last day, included (ISO date), or end instant.")]


@analytics_app.command("rebuild")
@run
async def rebuild(start: FromOpt, end: ToOpt) -> None:
    """Re-sum the closed days from --from to --to (included) from the live tables.
    Today and days still within the grace period are always counted live."""
    from datetime import timedelta

    from postroom.analytics import rollups
    from postroom.analytics.service import window

    async with started() as postroom:
        now = postroom.clock.now()
        frm, to = window(start, end, now)
        first = frm.date()
        last = (to - timedelta(microseconds=1)).date() + timedelta(days=1)
        days = await rollups.rebuild(postroom.engine, first, last, now)
    typer.echo(f"rebuilt {days} day(s) of rollups from {first} (days still open are counted live)")


@analytics_app.command("report")
@run
async def report(
    start: FromOpt,
    end: ToOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")],
    group_by: Annotated[
        str,
        typer.Option(
            "--group-by", help="Comma-separated: day|hour, provider, queue, type, tag, template."
        ),
    ] = "day",
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    provider: Annotated[str | None, typer.Option(help="Only this provider (name or id).")] = None,
    queue: Annotated[str | None, typer.Option(help="Only this queue (name or id).")] = None,
    type: Annotated[str | None, typer.Option("--type", help="Only this message type.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only this campaign tag.")] = None,
    template: Annotated[
        str | None,
        typer.Option(
            metavar="TEMPLATE", help="Only mail rendered from this template (name or id)."
        ),
    ] = None,
) -> None:
    """Write the report GET /reports answers (the same bytes) to a file."""
    from postroom.analytics.reports import Report, parse_group_by
    from postroom.analytics.service import AnalyticsService, window

    if fmt not in ("csv", "json"):
        raise fail("--format must be csv or json", 2)
    dims = parse_group_by(group_by)
    async with started() as postroom:
        service = AnalyticsService(postroom.engine, postroom.clock)
        frm, to = window(start, end, postroom.clock.now(), "hour" if "hour" in dims else "day")
        filters = await service.filters(
            provider=provider, queue=queue, type=type, tag=tag, template=template
        )
        rep = Report(service, frm, to, dims, filters)
        tmp = output.with_name(output.name + ".part")
        with typer.progressbar(length=len(rep.chunks()), label="report", file=sys.stderr) as bar:
            rep.on_chunk = lambda: bar.update(1)
            with tmp.open("w", encoding="utf-8", newline="") as f:
                async for piece in rep.csv() if fmt == "csv" else rep.json():
                    f.write(piece)
        tmp.replace(output)
    typer.echo(f"wrote {output}")
