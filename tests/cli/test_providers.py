"""``postroom providers``: add, list, test, enable, disable, on the test database."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from postroom.cli import app
from postroom.config import Settings
from postroom.db.engine import create_engine
from tests.support import databases

SECRET = "correct-horse-battery-staple"


@pytest.fixture
def runner(
    settings: Settings, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> CliRunner:
    if backend == "postgres":
        asyncio.run(_empty(settings))
    monkeypatch.setenv("POSTROOM_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("POSTROOM_DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("POSTROOM_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("POSTROOM_LOG_LEVEL", "WARNING")
    cli = CliRunner()
    migrated = cli.invoke(app, ["migrate"])
    assert migrated.exit_code == 0, migrated.output
    return cli


async def _empty(settings: Settings) -> None:
    engine = create_engine(settings)
    try:
        await databases.empty_tables(engine)
    finally:
        await engine.dispose()


def invoke(runner: CliRunner, *args: str, code: int = 0, stdin: str | None = None) -> Result:
    result = runner.invoke(app, ["providers", *args], input=stdin)
    assert result.exit_code == code, result.output
    assert SECRET not in result.output
    return result


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def add_relay(runner: CliRunner, *extra: str) -> Result:
    return invoke(
        runner,
        "add",
        "--type",
        "smtp",
        "--name",
        "Relay",
        "--priority",
        "200",
        "--config",
        "host=127.0.0.1",
        "--config",
        f"port={closed_port()}",
        "--config",
        "connectionTimeout=2000",
        "--auth",
        "user=ann",
        "--auth",
        f"password={SECRET}",
        "--limit",
        "rateLimit=5",
        *extra,
    )


def test_add_then_list_shows_a_table_without_secrets(runner: CliRunner) -> None:
    added = add_relay(runner)
    assert "Added provider Relay (smtp, priority 200, enabled)" in added.output
    assert "Credentials stored encrypted: password, user" in added.output

    listed = invoke(runner, "list").output
    header, *lines = listed.splitlines()
    assert header.split()[:5] == ["NAME", "TYPE", "PRIORITY", "ENABLED", "STATUS"]
    relay = next(line for line in lines if line.startswith("Relay"))
    assert relay.split()[1:5] == ["smtp", "200", "yes", "healthy"]
    assert "0/5 per 1s" in relay
    assert any(line.startswith("Development outbox") for line in lines)

    [shown] = [
        p for p in json.loads(invoke(runner, "list", "--json").output) if p["type"] == "smtp"
    ]
    assert shown["authentication"] == {"user": "ann", "password": "****"}
    assert shown["config"]["port"] > 0 and isinstance(shown["config"]["port"], int)


def test_json_options_and_credentials_from_stdin(runner: CliRunner) -> None:
    invoke(
        runner,
        "add",
        "--type",
        "sendgrid",
        "--name",
        "SendGrid",
        "--config-json",
        '{"baseUrl": "https://api.sendgrid.example"}',
        "--auth-json",
        "-",
        "--limits-json",
        '{"hourly": 10000}',
        stdin=json.dumps({"apiKey": SECRET}),
    )
    [shown] = [
        p for p in json.loads(invoke(runner, "list", "--json").output) if p["name"] == "SendGrid"
    ]
    assert shown["authentication"] == {"apiKey": "****aple"}
    assert shown["limits"] == {"hourly": 10000}


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--type", "pigeon", "--name", "P"], 2, "unknown provider type 'pigeon'"),
        (["--type", "smtp", "--name", "P"], 2, "smtp: host is required"),
        (["--type", "smtp", "--name", "P", "--config", "host"], 2, "KEY=VALUE"),
        (["--type", "file", "--name", "P", "--limit", "perSecond=3"], 2, "unknown limits key"),
        (["--type", "file", "--name", "P", "--config-json", "[1]"], 2, "JSON object"),
    ],
)
def test_bad_input_is_refused_with_a_message(
    runner: CliRunner, args: list[str], code: int, words: str
) -> None:
    result = invoke(runner, "add", *args, code=code)
    assert words in result.output


def test_duplicate_name_is_refused(runner: CliRunner) -> None:
    add_relay(runner)
    result = invoke(runner, "add", "--type", "file", "--name", "Relay", code=1)
    assert "a provider named 'Relay' exists already" in result.output


def test_test_reports_the_check(runner: CliRunner) -> None:
    invoke(runner, "add", "--type", "file", "--name", "Fake")
    ok = invoke(runner, "test", "Fake")
    assert ok.output.startswith("OK: Fake")

    add_relay(runner)
    failed = invoke(runner, "test", "Relay", code=1)
    assert failed.output.startswith("FAILED: Relay")
    assert "Relay: down: the last check failed" in invoke(runner, "list").output


def test_disable_and_enable(runner: CliRunner) -> None:
    add_relay(runner)
    assert invoke(runner, "disable", "Relay").output.strip() == "Disabled provider Relay."
    relay = next(line for line in invoke(runner, "list").output.splitlines() if "Relay" in line)
    assert relay.split()[3] == "no"
    assert invoke(runner, "enable", "Relay").output.strip() == "Enabled provider Relay."
    result = invoke(runner, "enable", "Nobody", code=1)
    assert "no provider 'Nobody'" in result.output


def test_the_internal_fake_type_is_refused(runner: CliRunner) -> None:
    result = invoke(runner, "add", "--type", "fake", "--name", "F", code=2)
    assert "unknown provider type 'fake'" in result.output
