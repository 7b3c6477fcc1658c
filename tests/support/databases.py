"""Migrated test databases: SQLite always, PostgreSQL when POSTROOM_TEST_DATABASE_URL is set.

Migrating is the slow part, so each backend is migrated once per session:
SQLite into a template file that every test copies, PostgreSQL into a fresh
database whose tables are emptied between tests. When the PostgreSQL URL is set
but the server is unreachable, tests fail; they never skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from postroom.config import Settings
from postroom.db import migrate
from postroom.db.engine import create_engine
from postroom.db.models import Base

PG_ENV = "POSTROOM_TEST_DATABASE_URL"


def backends() -> list[str]:
    return ["sqlite", "postgres"] if os.environ.get(PG_ENV) else ["sqlite"]


def production_backend() -> list[str]:
    """The one backend for the slowest end-to-end runs: PostgreSQL when set, else SQLite.

    Use as ``@pytest.mark.parametrize("backend", production_backend())``; it keeps a
    minute-long run from being repeated on both databases when the faster tests
    already cover each of them.
    """
    return backends()[-1:]


def _async_pg_url(url: str) -> str:
    return Settings(database_url=url).effective_database_url


async def _migrate(url: str, data_dir: Path) -> None:
    engine = create_engine(Settings(database_url=url, data_dir=data_dir))
    try:
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()


def sqlite_template(directory: Path) -> Path:
    path = directory / "template.db"
    asyncio.run(_migrate(f"sqlite:///{path}", directory))
    return path


def sqlite_copy(template: Path, data_dir: Path) -> str:
    data_dir.mkdir(parents=True, exist_ok=True)
    target = data_dir / "postroom.db"
    shutil.copyfile(template, target)
    return f"sqlite+aiosqlite:///{target}"


class PostgresDatabase:
    """A database created for this session on the server of POSTROOM_TEST_DATABASE_URL."""

    def __init__(self, server_url: str) -> None:
        base = make_url(_async_pg_url(server_url))
        self.name = f"postroom_test_{uuid.uuid4().hex[:10]}"
        self.admin_url = base.render_as_string(hide_password=False)
        self.url = base.set(database=self.name).render_as_string(hide_password=False)

    async def _admin(self, sql: str) -> None:
        engine = create_async_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    def create(self, data_dir: Path) -> None:
        asyncio.run(self._admin(f'CREATE DATABASE "{self.name}"'))
        asyncio.run(_migrate(self.url, data_dir))

    def drop(self) -> None:
        asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


async def empty_tables(engine: AsyncEngine) -> None:
    """Remove every row (PostgreSQL between tests); the schema stays."""
    names = ", ".join(t.name for t in Base.metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {names} CASCADE"))


def statements_naming(engine: AsyncEngine, table: str) -> list[str]:
    """A list that collects each statement ``engine`` runs from now on that names
    ``table`` (for tests that count queries; the listener lives as long as the engine)."""
    seen: list[str] = []

    def note(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if table in statement:
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    return seen
