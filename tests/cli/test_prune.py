"""``postroom prune``: deletes mail finished before the window, says what it did, refuses
bad windows with one line."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select
from typer.testing import CliRunner

from postroom.app import Postroom
from postroom.cli import app
from postroom.clock import ManualClock
from postroom.config import Settings
from postroom.queue.store import jobs
from tests.support.payloads import email
from tests.support.providers import add_provider, disable_all


async def _seed(settings: Settings) -> None:
    """One message sent long ago (the manual clock starts on 2026-01-01), one pending."""
    async with Postroom(settings, clock=ManualClock()) as postroom:
        await disable_all(postroom)
        await add_provider(postroom, name="fake", type="fake", config={})
        await postroom.send(email())
        worker = postroom.worker()
        try:
            await worker.drain()
            await worker.flush(force=True)
        finally:
            await worker.aclose()
        await postroom.send(email(subject="still queued"))


async def _job_count(settings: Settings) -> int:
    async with Postroom(settings) as postroom, postroom.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(jobs)) or 0)


def test_prune_dry_run_then_delete(runner: CliRunner, settings: Settings) -> None:
    asyncio.run(_seed(settings))
    dry = runner.invoke(app, ["prune", "--older-than", "30d", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.startswith("Would delete 1 jobs, 1 recipient records and 1 attempts")
    assert asyncio.run(_job_count(settings)) == 2

    done = runner.invoke(app, ["prune", "--older-than", "30d"])
    assert done.exit_code == 0, done.output
    assert done.output.startswith("Deleted 1 jobs, 1 recipient records and 1 attempts")
    assert asyncio.run(_job_count(settings)) == 1  # the pending one stays, however old

    again = runner.invoke(app, ["prune", "--older-than", "30d"])
    assert again.output.startswith("Deleted 0 jobs")


def test_bad_windows_are_one_line_errors(runner: CliRunner) -> None:
    for bad, why in [("30", "not a duration"), ("2h", "shorter than the minimum")]:
        result = runner.invoke(app, ["prune", "--older-than", bad])
        assert result.exit_code == 2
        assert why in result.output
        assert "Traceback" not in result.output
