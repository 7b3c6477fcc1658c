"""``postroom send``: every option reaches the message; output for people and for scripts."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner, Result

from postroom.app import Postroom
from postroom.cli import app
from postroom.config import Settings, load_settings
from postroom.db.models import EmailJob

BASE = ["send", "--to", "Ann <ann@example.com>", "--from", "app@example.com"]


def invoke(runner: CliRunner, *args: str, code: int = 0) -> Result:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result


def job_row(email_id: str) -> Any:
    async def fetch() -> Any:
        async with Postroom(load_settings()) as postroom, postroom.engine.connect() as conn:
            query = select(EmailJob.priority).where(EmailJob.id == uuid.UUID(email_id))
            return (await conn.execute(query)).one()

    return asyncio.run(fetch())


def test_options_reach_the_delivered_message(
    runner: CliRunner, settings: Settings, tmp_path: Path
) -> None:
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.4 quarterly numbers")
    sent = invoke(
        runner,
        *BASE,
        "--subject", "Report",
        "--text", "Attached.",
        "--reply-to", "Sales <sales@example.com>",
        "--attach", str(report),
        "--priority", "5",
        "--queue", "bulk",
        "--provider", "Development outbox",
    )  # fmt: skip
    words = sent.stdout.split()
    email_id = words[1]
    # the queue by name, not by UUID
    assert sent.stdout == f"Queued {email_id} on queue bulk for 1 recipient.\n"
    assert job_row(email_id).priority == 5

    worked = invoke(runner, "worker", "--burst")
    assert "Processed 1 jobs" in worked.stdout
    raw = (settings.data_dir / "outbox" / f"{email_id}.eml").read_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["Reply-To"] == "Sales <sales@example.com>"
    [attachment] = message.iter_attachments()  # type: ignore[attr-defined]
    assert attachment.get_filename() == "report.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == b"%PDF-1.4 quarterly numbers"


def test_quiet_and_json_output_for_scripts(runner: CliRunner) -> None:
    quiet = invoke(runner, *BASE, "--subject", "Hi", "--text", "Hello", "--quiet")
    email_id = quiet.stdout.strip()
    assert quiet.stdout == f"{email_id}\n" and len(email_id) == 36

    later = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    as_json = invoke(
        runner, *BASE, "--subject", "Later", "--text", "x", "--scheduled-at", later.isoformat(),
        "--json",
    )  # fmt: skip
    result = json.loads(as_json.stdout)
    assert result["status"] == "queued"
    assert datetime.fromisoformat(result["scheduledAt"]) == later
    # not due yet: a burst worker sends only the first
    assert "Processed 1 jobs" in invoke(runner, "worker", "--burst").stdout


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--attach", "/nonexistent/file.pdf"], 2, "--attach /nonexistent/file.pdf:"),
        (["--priority", "9"], 2, "less than or equal to 5"),
        (["--scheduled-at", "tomorrow"], 1, "scheduledAt:"),
        (["--queue", "nope"], 1, "queue 'nope' does not exist"),
    ],
)
def test_bad_options_are_one_line(
    runner: CliRunner, args: list[str], code: int, words: str
) -> None:
    result = invoke(runner, *BASE, "--subject", "x", "--text", "y", *args, code=code)
    assert words in result.stderr
    assert "Traceback" not in result.output
