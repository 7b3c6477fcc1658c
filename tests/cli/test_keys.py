"""``postroom keys``: the key alone on stdout, revoking twice, last use."""

from __future__ import annotations

import asyncio
import re

from typer.testing import CliRunner, Result

from postroom.app import Postroom
from postroom.cli import app
from postroom.config import load_settings


def invoke(runner: CliRunner, *args: str, code: int = 0) -> Result:
    result = runner.invoke(app, ["keys", *args])
    assert result.exit_code == code, result.output
    return result


def test_create_prints_only_the_key_on_stdout(runner: CliRunner) -> None:
    created = invoke(runner, "create", "--scopes", "send,read", "--name", "cms")
    # KEY=$(postroom keys create ...) captures stdout: it must be the key and nothing else
    assert re.fullmatch(r"pr_[0-9a-f]{8}_[A-Za-z0-9_-]+\n", created.stdout)
    assert "Store it now" in created.stderr and "(cms)" in created.stderr


def test_revoking_twice_or_an_unknown_key_fails(runner: CliRunner) -> None:
    key = invoke(runner, "create", "--scopes", "admin").stdout.strip()
    prefix = "_".join(key.split("_")[:2])
    assert invoke(runner, "revoke", prefix).stdout.startswith(f"Revoked key {prefix}")
    again = invoke(runner, "revoke", prefix, code=1)
    [line] = again.stderr.strip().splitlines()
    assert f"{prefix} (default) was already revoked on" in line
    unknown = invoke(runner, "revoke", "pr_00000000", code=1)
    assert "no API key 'pr_00000000'" in unknown.stderr


def test_list_shows_when_a_key_was_last_used(runner: CliRunner) -> None:
    key = invoke(runner, "create", "--scopes", "send").stdout.strip()
    header, row = invoke(runner, "list").stdout.strip().splitlines()
    assert "LAST USED" in header
    assert "never" in row

    async def use() -> None:
        async with Postroom(load_settings()) as postroom:
            await postroom.keys.verify(key)  # what every API request does

    asyncio.run(use())
    _, row = invoke(runner, "list").stdout.strip().splitlines()
    assert "never" not in row
    assert len(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d", row)) == 2  # created, last used
