"""``postroom queues``: tables, pause and resume around a burst worker, retry, errors.

Each test gets its own SQLite data directory, migrated with ``postroom migrate``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from postroom.app import Postroom
from postroom.cli import app
from postroom.config import load_settings
from tests.support.providers import add_provider, disable_all


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("POSTROOM_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("POSTROOM_DATABASE_URL", "")
    monkeypatch.setenv("POSTROOM_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("POSTROOM_DEFAULT_FROM", "App <app@example.com>")
    monkeypatch.setenv("POSTROOM_LOG_LEVEL", "WARNING")
    cli = CliRunner()
    migrated = cli.invoke(app, ["migrate"])
    assert migrated.exit_code == 0, migrated.output
    return cli


def invoke(runner: CliRunner, *args: str, code: int = 0) -> Result:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result


def send(runner: CliRunner, email_type: str = "transactional") -> None:
    invoke(
        runner, "send", "--to", "ann@example.com", "--subject", "Hi", "--text", "Hello",
        "--type", email_type,
    )  # fmt: skip


def rows(output: str) -> dict[str, list[str]]:
    """The list table as {queue name: its cells}, header under "NAME"."""
    lines = [line.split() for line in output.splitlines() if line.strip()]
    return {cells[0]: cells for cells in lines if not cells[0].startswith("Completed")}


def test_list_prints_an_aligned_table_of_the_default_queues(runner: CliRunner) -> None:
    result = invoke(runner, "queues", "list")

    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "NAME", "TYPE", "PRIORITY", "STATE", "HEALTH", "PENDING", "PROCESSING",
        "COMPLETED", "FAILED", "AVG", "MS", "PER", "MIN",
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[1:5]] == [
        "immediate",
        "transactional",
        "scheduled",
        "bulk",
    ]
    assert rows(result.stdout)["bulk"] == [
        "bulk", "bulk", "low", "idle", "healthy", "0", "0", "0", "0", "0.0", "0.00",
    ]  # fmt: skip
    # columns line up: every cell of a column starts at the header's offset
    offset = lines[0].index("PENDING")
    assert all(line[offset] == "0" for line in lines[1:5])
    assert "last 24 hours" in lines[5]


def test_pause_holds_a_queue_back_from_the_worker_until_resumed(runner: CliRunner) -> None:
    send(runner)
    send(runner, "marketing")

    paused = invoke(runner, "queues", "pause", "bulk")
    assert paused.stdout.startswith("Paused queue bulk (1 pending)")
    assert "postroom queues resume bulk" in paused.stdout
    invoke(runner, "worker", "--burst")

    table = rows(invoke(runner, "queues", "list").stdout)
    assert table["bulk"][3:7] == ["paused", "healthy", "1", "0"]
    assert table["transactional"][3:9] == ["idle", "healthy", "0", "0", "1", "0"]

    resumed = invoke(runner, "queues", "resume", "bulk")
    assert resumed.stdout == "Resumed queue bulk (1 pending).\n"
    invoke(runner, "worker", "--burst")

    table = rows(invoke(runner, "queues", "list").stdout)
    assert table["bulk"][3:9] == ["idle", "healthy", "0", "0", "1", "0"]


def test_show_by_name_or_id(runner: CliRunner) -> None:
    send(runner, "marketing")

    shown = invoke(runner, "queues", "show", "bulk").stdout

    fields = {line[:15].strip(): line[15:].strip() for line in shown.splitlines() if line.strip()}
    assert fields["Queue"] == "bulk"
    assert fields["Type"] == "bulk"
    assert fields["Priority"] == "low"
    assert fields["State"] == "idle"
    assert fields["Health"] == "healthy"
    assert fields["Concurrency"] == "100 per worker"  # the worker default: no queue limit set
    assert fields["Pending"] == "1"
    assert fields["Completed"] == "0 in the last 24 hours"
    assert fields["Last processed"] == "-"
    by_id = invoke(runner, "queues", "show", fields["Id"]).stdout
    assert by_id == shown
    as_json = json.loads(invoke(runner, "queues", "show", "bulk", "--json").stdout)
    assert as_json["id"] == fields["Id"]
    assert as_json["stats"]["pending"] == 1


def test_retry_moves_failed_jobs_back_to_pending(runner: CliRunner) -> None:
    async def scripted_provider() -> None:
        postroom = Postroom(load_settings())
        try:
            await disable_all(postroom)
            await add_provider(
                postroom, name="Rejects", type="fake", config={"script": ["rejected"]}
            )
        finally:
            await postroom.aclose()

    asyncio.run(scripted_provider())
    assert invoke(runner, "queues", "retry", "transactional").stdout == (
        "Queue transactional has no failed jobs to retry.\n"
    )
    send(runner)
    invoke(runner, "worker", "--burst")
    assert rows(invoke(runner, "queues", "list").stdout)["transactional"][5:9] == [
        "0", "0", "0", "1",
    ]  # fmt: skip

    retried = invoke(runner, "queues", "retry", "transactional")

    assert retried.stdout == "Moved 1 failed job of queue transactional back to pending.\n"
    assert rows(invoke(runner, "queues", "list").stdout)["transactional"][5:9] == [
        "1", "0", "0", "0",
    ]  # fmt: skip


@pytest.mark.parametrize("command", ["show", "pause", "resume", "retry"])
def test_an_unknown_queue_is_one_line_and_exit_1(runner: CliRunner, command: str) -> None:
    result = invoke(runner, "queues", command, "nope", code=1)

    assert result.stdout == ""
    assert result.stderr == "Error: no queue with the name or id 'nope'\n"


def test_list_as_json(runner: CliRunner) -> None:
    listed = json.loads(invoke(runner, "queues", "list", "--json").stdout)
    assert [q["name"] for q in listed] == ["immediate", "transactional", "scheduled", "bulk"]
    assert listed[0]["processor"]["status"] == "idle"
