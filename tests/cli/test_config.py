"""``postroom config``: every effective setting, where it came from, secrets masked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from postroom.cli import app

SECRET = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5MDE="
PASSWORD = "pg-password-123"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = tmp_path / "postroom.toml"
    config.write_text('default_from = "App <app@example.com>"\n[worker]\nconcurrency = 7\n')
    monkeypatch.setenv("POSTROOM_CONFIG", str(config))
    monkeypatch.setenv("POSTROOM_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("POSTROOM_SECRET_KEY", SECRET)
    monkeypatch.setenv("POSTROOM_DATABASE_URL", f"postgresql://app:{PASSWORD}@db.internal/mail")
    monkeypatch.setenv("POSTROOM_LOG_FORMAT", "json")
    return config


def test_config_shows_effective_settings_with_secrets_masked(env: Path) -> None:
    result = CliRunner().invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output and PASSWORD not in result.output
    lines = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[1:-1]}
    assert lines["POSTROOM_SECRET_KEY"] == ["****", "environment"]
    assert lines["POSTROOM_DATABASE_URL"] == [
        "postgresql+asyncpg://app:***@db.internal/mail",
        "environment",
    ]
    assert lines["POSTROOM_LOG_FORMAT"] == ["json", "environment"]
    assert lines["POSTROOM_WORKER__CONCURRENCY"] == ["7", "config", "file"]
    assert lines["POSTROOM_PORT"] == ["8025", "default"]
    assert result.stdout.splitlines()[-1] == f"Config file: {env}"

    as_json = CliRunner().invoke(app, ["config", "--json"])
    values = json.loads(as_json.stdout)
    assert values["POSTROOM_WORKER__BATCH_SIZE"] == 100
    assert values["POSTROOM_SECRET_KEY"] == "****"
    assert SECRET not in as_json.stdout and PASSWORD not in as_json.stdout


@pytest.mark.parametrize(
    ("variable", "value"), [("POSTROOM_LOG_FORMAT", "xml"), ("POSTROOM_LOG_LEVEL", "loud")]
)
def test_config_refuses_an_invalid_log_setting(
    env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    for command in (["config"], ["serve"], ["worker", "--burst"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        [line] = result.stderr.splitlines()
        assert line.startswith(f"Error: invalid configuration: {variable[9:].lower()}:")
