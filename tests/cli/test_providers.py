"""``postroom providers``: add, list, test, enable, disable, on the test database."""

from __future__ import annotations

import json
import socket

import pytest
from typer.testing import CliRunner, Result

from postroom.cli import app

SECRET = "correct-horse-battery-staple"


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
        "--no-check",  # nothing listens there: the point of most tests
        *extra,
    )


def test_add_then_list_shows_a_table_without_secrets(runner: CliRunner) -> None:
    added = add_relay(runner)
    assert "Added provider Relay (smtp, priority 200, enabled, not checked)" in added.output
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
        "--no-check",
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


def test_add_refuses_a_provider_whose_connection_check_fails(runner: CliRunner) -> None:
    port = closed_port()
    args = ["add", "--type", "smtp", "--name", "Relay", "--config", "host=127.0.0.1"]
    args += ["--config", f"port={port}", "--auth", "user=ann", "--auth", f"password={SECRET}"]
    refused = invoke(runner, *args, code=1)
    [line] = refused.output.strip().splitlines()
    assert line.startswith("Error: connection check failed, provider not added:")
    assert "--no-check" in line
    assert "Relay" not in invoke(runner, "list").output

    added = invoke(runner, *args, "--no-check")
    assert "not checked" in added.output
    assert "Relay" in invoke(runner, "list").output


def test_add_checks_the_connection_before_storing(runner: CliRunner) -> None:
    added = invoke(
        runner, "add", "--type", "file", "--name", "Outbox 2", "--config", "directory=outbox2"
    )
    assert "connection checked" in added.output


def test_show_update_remove(runner: CliRunner) -> None:
    add_relay(runner)
    shown = invoke(runner, "show", "Relay").output
    assert "Type         smtp" in shown
    assert '"password": "****"' in shown and '"user": "ann"' in shown

    new_secret = "another-long-password"
    invoke(runner, "update", "Relay", "--priority", "300", "--auth", f"password={new_secret}")
    changed = json.loads(invoke(runner, "show", "Relay", "--json").output)
    assert changed["priority"] == 300
    # --auth changes one credential and keeps the others
    assert changed["authentication"] == {"user": "ann", "password": "****"}
    assert changed["limits"] == {"rateLimit": 5}

    nothing = invoke(runner, "update", "Relay", code=2)
    assert "nothing to change" in nothing.output
    bad = invoke(runner, "update", "Relay", "--limit", "perSecond=3", code=2)
    assert "unknown limits key" in bad.output

    removed = invoke(runner, "remove", "Relay")
    assert removed.output.startswith("Removed provider Relay (smtp)")
    gone = invoke(runner, "show", "Relay", code=1)
    assert "no provider 'Relay'" in gone.output


def test_the_internal_fake_type_is_refused(runner: CliRunner) -> None:
    result = invoke(runner, "add", "--type", "fake", "--name", "F", code=2)
    assert "unknown provider type 'fake'" in result.output
