"""The command line starts at once and its help reads like a manual, not like Python."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
import typer
from typer.testing import CliRunner

from postroom.cli import app

#: what only the commands that do work may load; --version and --help need none of it
HEAVY = [
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy",
    "pydantic",
    "pydantic_settings",
    "alembic",
    "httpx",
    "aiosmtplib",
    "cryptography",
    "rich",
    "postroom.app",
    "postroom.config",
]


def test_importing_the_cli_loads_nothing_heavy() -> None:
    probe = "import json, sys; import postroom.cli; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    loaded = set(json.loads(out))
    assert [name for name in HEAVY if name in loaded] == []


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out += _commands(command, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


COMMANDS = _commands(typer.main.get_group(app))


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "postroom")
def test_help_shows_metavars_not_python_types(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    for python_type in ("<str>", "<int>", "<bool>", "<list[", "<float>", "<NoneType"):
        assert python_type not in result.output


def test_help_texts() -> None:
    send = CliRunner().invoke(app, ["send", "--help"], terminal_width=80).output
    for option in ("--to ADDR", "--attach PATH", "--scheduled-at TIME", "--priority 1-5"):
        assert option in send
    add = CliRunner().invoke(app, ["providers", "add", "--help"], terminal_width=80).output
    assert "--config KEY=VALUE" in add and "--no-check" in add
    # paragraphs are filled, not broken where the docstring's lines end
    description = add.split("Options:")[0]
    paragraphs = [p.splitlines() for p in description.split("\n\n")[1:] if p.strip()]
    for lines in paragraphs:
        assert all(len(line) > 50 for line in lines[:-1]), lines
