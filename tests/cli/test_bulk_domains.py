"""``postroom send-bulk`` from a CSV file and ``postroom domains``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner, Result

from postroom.app import Postroom
from postroom.cli import app
from postroom.config import load_settings
from postroom.schemas.templates import TemplateCreate

TEMPLATE = {
    "name": "invite",
    "subject": "Come along, {{ name }}",
    "content": {"text": "Seat {{ seat }}; vip: {{ vip }}"},
    "variables": [
        {"name": "name"},
        {"name": "seat", "type": "integer"},
        {"name": "vip", "type": "boolean", "required": False, "default": False},
    ],
}


def invoke(runner: CliRunner, *args: str, code: int = 0) -> Result:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result


def create_template() -> None:
    async def go() -> None:
        async with Postroom(load_settings()) as postroom:
            await postroom.sender.templates.create(TemplateCreate.model_validate(TEMPLATE))

    asyncio.run(go())


def drain() -> None:
    async def go() -> None:
        async with Postroom(load_settings()) as postroom:
            worker = postroom.worker()
            try:
                await worker.drain()
            finally:
                await worker.aclose()

    asyncio.run(go())


def test_send_bulk_queues_each_row_with_typed_data(runner: CliRunner, tmp_path: Path) -> None:
    create_template()
    rows = tmp_path / "people.csv"
    rows.write_text("email,name,seat,vip\nann@example.com,Ann,12,yes\nbob@example.com,Bob,7,\n")
    queued = invoke(
        runner,
        "send-bulk",
        "--template",
        "invite",
        "--csv",
        str(rows),
        "--from",
        "App <app@example.com>",
    )
    assert "2 recipients" in queued.stdout
    bulk_id = queued.stdout.split()[2].rstrip(":")
    drain()
    status = invoke(runner, "send-bulk-status", bulk_id)
    assert "sent 2" in status.stdout and "queued 0" in status.stdout
    texts = sorted(p.read_text() for p in (tmp_path / "var" / "outbox").glob("*.eml"))
    assert any("Come along, Ann" in t and "Seat 12; vip: True" in t for t in texts)
    assert any("Come along, Bob" in t and "Seat 7; vip: False" in t for t in texts)


def test_send_bulk_refuses_bad_rows_and_queues_nothing(runner: CliRunner, tmp_path: Path) -> None:
    create_template()
    rows = tmp_path / "people.csv"
    rows.write_text("email,name,seat\nann@example.com,Ann,x\n")
    refused = invoke(runner, "send-bulk", "--template", "invite", "--csv", str(rows), code=2)
    assert "line 2, seat: 'x' is not a valid integer" in refused.stderr
    rows.write_text("email,name\nann@example.com,Ann\nbob@example.com,Bob,\n")
    refused = invoke(
        runner,
        "send-bulk",
        "--template",
        "invite",
        "--csv",
        str(rows),
        "--from",
        "a@example.com",
        code=1,
    )
    assert "recipients.0.templateData.seat: required variable is missing" in refused.stderr
    assert "recipients.1.templateData.seat: required variable is missing" in refused.stderr
    rows.write_text("email,name,seat\nann@example.com,Ann,1\nnot-an-address,Bob,2\n")
    refused = invoke(
        runner,
        "send-bulk",
        "--template",
        "invite",
        "--csv",
        str(rows),
        "--from",
        "a@example.com",
        code=1,
    )
    assert "recipients.1.email" in refused.stderr
    assert not list((tmp_path / "var").glob("outbox/*.eml"))
    missing = invoke(
        runner, "send-bulk", "--template", "invite", "--csv", str(tmp_path / "no.csv"), code=2
    )
    assert "No such file" in missing.stderr


def test_domains_add_list_rotate(runner: CliRunner) -> None:
    added = invoke(runner, "domains", "add", "example.com")
    assert "v=DKIM1; k=rsa; p=" in added.stdout and "._domainkey.example.com" in added.stdout
    rotated = invoke(runner, "domains", "rotate", "example.com")
    assert "now selector" in rotated.stdout
    listed = invoke(runner, "domains", "list").stdout.strip().splitlines()
    assert len(listed) == 3 and "yes" in listed[2] and " no " in listed[1]
    assert "no active DKIM key" in invoke(runner, "domains", "rotate", "x.example", code=1).stderr
