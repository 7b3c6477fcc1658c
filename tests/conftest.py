"""Fixtures: settings, a migrated database per backend, a started Postroom, a manual clock."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from postroom.api.app import create_app
from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.config import Settings, WorkerSettings
from tests.support import databases


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return databases.sqlite_template(tmp_path_factory.mktemp("sqlite-template"))


@pytest.fixture(scope="session")
def _postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    server = os.environ.get(databases.PG_ENV)
    if not server:
        yield None
        return
    db = databases.PostgresDatabase(server)
    db.create(tmp_path_factory.mktemp("pg"))
    try:
        yield db.url
    finally:
        db.drop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.postgres`` tests run only on PostgreSQL: their SQLite cases are
    deselected (and with no PostgreSQL configured, the tests are)."""
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        on_sqlite = params is not None and params.params.get("backend") == "sqlite"
        (drop if on_sqlite and item.get_closest_marker("postgres") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(params=databases.backends())
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(
    backend: str, tmp_path: Path, _sqlite_template: Path, _postgres: str | None
) -> str:
    if backend == "sqlite":
        return databases.sqlite_copy(_sqlite_template, tmp_path / "var")
    assert _postgres is not None
    return _postgres


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        worker=WorkerSettings(concurrency=8, batch_size=16, poll_interval_s=0.05, lease_s=30),
    )


@pytest.fixture
async def postroom(settings: Settings, clock: ManualClock, backend: str) -> AsyncIterator[Postroom]:
    pr = Postroom(settings, clock=clock)
    if backend == "postgres":
        await databases.empty_tables(pr.engine)
    await pr.start(migrate_schema=False)
    try:
        yield pr
    finally:
        await pr.aclose()


@pytest.fixture
async def admin_key(postroom: Postroom) -> str:
    key, _ = await postroom.keys.create("test", ["admin"])
    return key


@pytest.fixture
async def client(postroom: Postroom, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """An API client with an admin key; no workers run (tests drive them)."""
    app = create_app(postroom, workers=0)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://postroom.test",
        headers={"Authorization": f"Bearer {admin_key}"},
    ) as c:
        yield c
