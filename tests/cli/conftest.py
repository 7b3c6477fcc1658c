"""A ``CliRunner`` on a migrated test database, configured through the environment."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from postroom.cli import app
from postroom.config import Settings
from postroom.db.engine import create_engine
from tests.support import databases


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
