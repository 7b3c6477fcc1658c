"""``postroom prune``: delete finished mail older than a retention window."""

from __future__ import annotations

from typing import Annotated

import typer

from postroom.cli.common import fail, run, started


@run
async def prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            metavar="AGE",
            help="Delete finished mail older than this: 30d, 12h, 2w, 90m (at least 1d).",
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
    batch: Annotated[
        int, typer.Option(min=1, max=10_000, metavar="N", help="Jobs deleted per transaction.")
    ] = 500,
) -> None:
    """Delete sent, cancelled and failed mail (jobs, recipients, attempts, tracking) older
    than AGE. Pending, scheduled, processing and recently failed mail is never deleted."""
    from postroom.queue.prune import parse_window
    from postroom.queue.prune import prune as prune_jobs

    try:
        window = parse_window(older_than)
    except ValueError as exc:
        raise fail(f"--older-than: {exc}", 2) from None
    async with started() as postroom:
        cutoff = postroom.clock.now() - window
        result = await prune_jobs(postroom.engine, cutoff=cutoff, batch=batch, dry_run=dry_run)
    verb = "Would delete" if dry_run else "Deleted"
    typer.echo(
        f"{verb} {result.jobs} jobs, {result.records} recipient records and "
        f"{result.attempts} attempts finished before {cutoff.isoformat(timespec='seconds')}."
    )
