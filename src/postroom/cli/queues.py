"""``postroom queues``: list queues, show one, pause, resume and retry failed jobs."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

import typer

from postroom.cli.common import new_typer, run, started, table

if TYPE_CHECKING:
    from postroom.schemas.queues import QueueStatus
    from postroom.services.queues import QueueManager

queues_app = new_typer(
    "Show queues and their statistics; pause, resume, retry failed jobs. "
    "QUEUE is a queue's name (e.g. bulk) or id."
)

#: QUEUE: a name (e.g. bulk) or an id (hidden from the Arguments list, which would print ``<str>``)
QueueArg = Annotated[str, typer.Argument(metavar="QUEUE", hidden=True)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead.")]

_WINDOWS = "Completed, failed, average send time: last 24 hours. Per minute: last hour."


@contextlib.asynccontextmanager
async def _manager() -> AsyncIterator[QueueManager]:
    from postroom.queue.retry import default_retry
    from postroom.services.queues import QueueManager

    async with started() as postroom:
        yield QueueManager(
            postroom.engine,
            postroom.clock,
            postroom.queues,
            default_concurrency=postroom.settings.worker.concurrency,
            retry_defaults=default_retry(postroom.settings),
        )


# -- queues ----------------------------------------------------------------------------


@queues_app.command("list")
@run
async def queues_list(as_json: JsonOpt = False) -> None:
    """List the queues with their state, health and statistics."""
    async with _manager() as manager:
        statuses = await manager.list_queues()
    if as_json:
        typer.echo(json.dumps([q.dump() for q in statuses], indent=2))
        return
    rows = [
        (
            "NAME",
            "TYPE",
            "PRIORITY",
            "STATE",
            "HEALTH",
            "PENDING",
            "PROCESSING",
            "COMPLETED",
            "FAILED",
            "AVG MS",
            "PER MIN",
        )
    ]
    for q in statuses:
        s = q.stats
        rows.append(
            (
                q.name,
                q.type,
                q.priority,
                q.processor.status,
                q.health,
                str(s.pending),
                str(s.processing),
                str(s.completed),
                str(s.failed),
                f"{s.average_processing_time:.1f}",
                f"{s.throughput:.2f}",
            )
        )
    typer.echo(table(rows))
    typer.echo(_WINDOWS)


@queues_app.command("show")
@run
async def queues_show(queue: QueueArg, as_json: JsonOpt = False) -> None:
    """Show one queue in detail."""
    async with _manager() as manager:
        status = await manager.status(queue)
    if as_json:
        typer.echo(json.dumps(status.dump(), indent=2))
        return
    typer.echo(_details(status))


@queues_app.command("pause")
@run
async def queues_pause(queue: QueueArg) -> None:
    """Pause a queue: it still accepts mail, but workers claim none of it."""
    async with _manager() as manager:
        status = await manager.pause(queue)
    typer.echo(
        f"Paused queue {status.name} ({status.stats.pending} pending); "
        f"resume it with: postroom queues resume {status.name}"
    )


@queues_app.command("resume")
@run
async def queues_resume(queue: QueueArg) -> None:
    """Resume a paused queue: workers claim its jobs again."""
    async with _manager() as manager:
        status = await manager.resume(queue)
    typer.echo(f"Resumed queue {status.name} ({status.stats.pending} pending).")


@queues_app.command("retry")
@run
async def queues_retry(queue: QueueArg) -> None:
    """Move a queue's failed jobs back to pending, each with a fresh attempt budget."""
    async with _manager() as manager:
        result = await manager.retry_failed(queue)
    if result.retried == 0:
        typer.echo(f"Queue {queue} has no failed jobs to retry.")
    else:
        jobs = "job" if result.retried == 1 else "jobs"
        typer.echo(f"Moved {result.retried} failed {jobs} of queue {queue} back to pending.")


def _details(q: QueueStatus) -> str:
    s, p = q.stats, q.processor
    last = f"{p.last_processed_at:%Y-%m-%d %H:%M:%S} UTC" if p.last_processed_at else "-"
    rows = [
        ("Queue", q.name),
        ("Id", q.id),
        ("Type", q.type),
        ("Priority", q.priority),
        ("Enabled", "yes" if q.enabled else "no (refuses new mail)"),
        ("Paused", "yes" if q.paused else "no"),
        ("State", p.status),
        ("Health", q.health),
        ("Concurrency", f"{p.concurrency} per worker"),
        ("Pending", str(s.pending)),
        ("Processing", str(s.processing)),
        ("Completed", f"{s.completed} in the last 24 hours"),
        ("Failed", f"{s.failed} in the last 24 hours"),
        ("Error rate", f"{p.error_rate:.1%}"),
        ("Avg send time", f"{s.average_processing_time:.1f} ms"),
        ("Throughput", f"{s.throughput:.2f} per minute (last hour)"),
        ("Last processed", last),
    ]
    return table(rows)
