"""A database that cannot serve is 503 (or 507 when full) with the reason; never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.util import await_only

from postroom.api.app import create_app
from postroom.app import Postroom
from tests.support.payloads import email as email_body

API = "/api/system/email"


def _limit_pages(postroom: Postroom, pages: list[int]) -> None:
    """``PRAGMA max_page_count`` on every connection: SQLite's own "disk is full"."""

    @event.listens_for(postroom.engine.sync_engine, "connect")
    def _limit(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA max_page_count = {pages[0]}")
        cursor.close()


async def _page_count(postroom: Postroom) -> int:
    from sqlalchemy import text

    async with postroom.engine.connect() as conn:
        return int((await conn.execute(text("PRAGMA page_count"))).scalar_one())


async def test_a_full_sqlite_disk_is_507_with_the_reason_and_fails_healthz(
    client: httpx.AsyncClient, postroom: Postroom, backend: str
) -> None:
    if backend != "sqlite":
        pytest.skip("max_page_count is SQLite's")
    assert (await client.get("/healthz")).status_code == 200
    pages = [await _page_count(postroom)]
    _limit_pages(postroom, pages)
    await postroom.engine.dispose()

    for _ in range(200):
        response = await client.post(f"{API}/send", json=email_body())
        if response.status_code != 202:
            break
    assert response.status_code == 507, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "database or disk is full" in response.json()["detail"]
    assert response.headers["retry-after"]

    health = await client.get("/healthz")
    assert health.status_code == 507, health.text
    assert "database or disk is full" in health.json()["detail"]

    pages[0] += 1000  # space is freed
    await postroom.engine.dispose()
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.post(f"{API}/send", json=email_body())).status_code == 202


@pytest.fixture
async def terminate_once(postroom: Postroom, backend: str) -> AsyncIterator[list[str]]:
    """Terminate the backend of the first statement that mentions a watched table.

    The statement then meets what a PostgreSQL restart does to a request under way:
    ``terminating connection due to administrator command`` or a closed connection.
    """
    if backend != "postgres":
        pytest.skip("terminates a PostgreSQL backend")
    url = make_url(postroom.settings.effective_database_url).set(drivername="postgresql")
    admin = await asyncpg.connect(url.render_as_string(hide_password=False))
    watched: list[str] = []

    def _kill(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not watched or watched[0] not in statement:
            return
        watched.clear()
        pid = conn.connection.dbapi_connection._connection.get_server_pid()
        await_only(admin.execute("SELECT pg_terminate_backend($1)", pid))
        while await_only(admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid=$1", pid)):
            pass  # the backend is going away; wait until it is gone

    event.listen(postroom.engine.sync_engine, "before_cursor_execute", _kill)
    try:
        yield watched
    finally:
        event.remove(postroom.engine.sync_engine, "before_cursor_execute", _kill)
        await admin.close()


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("method", "path", "table"),
    [
        ("POST", "/send", "INSERT INTO email_jobs"),
        ("GET", "/status/{id}", "FROM email_jobs"),
        ("GET", "/queues", "email_queues"),
        ("GET", "/providers", "email_providers"),
        ("POST", "/send", "FROM api_keys"),
    ],
)
async def test_a_terminated_postgres_connection_is_503_on_every_route(
    postroom: Postroom,
    terminate_once: list[str],
    method: str,
    path: str,
    table: str,
    backend: str,
) -> None:
    key, _ = await postroom.keys.create("k", ["admin"])
    sent = await postroom.send(email_body())
    transport = httpx.ASGITransport(app=create_app(postroom, workers=0), raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://postroom.test",
        headers={"Authorization": f"Bearer {key}"},
    ) as client:
        terminate_once.append(table)
        body = email_body() if method == "POST" else None
        response = await client.request(method, API + path.format(id=sent.id), json=body)

        assert not terminate_once, "the watched statement did not run"
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["retry-after"]
        assert response.json()["type"] == "urn:postroom:problem:unavailable"
        # and the next request, on a fresh connection, works
        again = await client.request(method, API + path.format(id=sent.id), json=body)
        assert again.status_code in (200, 202), again.text


async def test_a_bad_query_stays_a_500(
    postroom: Postroom, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import text

    from postroom.services import status

    async def bad_query(engine: Any, *_args: Any, **_kwargs: Any) -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT no_such_column FROM email_jobs"))

    monkeypatch.setattr(status, "get_status", bad_query)
    transport = httpx.ASGITransport(app=create_app(postroom, workers=0), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://postroom.test") as client:
        response = await client.get(
            f"{API}/status/00000000-0000-0000-0000-000000000000",
            headers={"Authorization": f"Bearer {admin_key}"},
        )
    assert response.status_code == 500
    assert response.json()["type"] == "urn:postroom:problem:internal"


class _DriverError(Exception):
    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("message", "sqlstate", "status"),
    [
        ("the database system is starting up", "57P03", 503),
        ("the database system is shutting down", "57P03", 503),
        ("the database system is not yet accepting connections", "57P03", 503),
        ("connection was closed in the middle of operation", None, 503),
        ("terminating connection due to administrator command", "57P01", 503),
        ("sorry, too many clients already", "53300", 503),
        ("could not extend file: No space left on device", "53100", 507),
        ("database or disk is full", None, 507),
        ("database is locked", None, 503),
        ('syntax error at or near "SELEC"', "42601", None),
        ('column "nope" does not exist', "42703", None),
        ("no such table: email_jobz", None, None),
    ],
)
def test_which_driver_errors_mean_the_database_cannot_serve(
    message: str, sqlstate: str | None, status: int | None
) -> None:
    from sqlalchemy.exc import DBAPIError

    from postroom.api import dbfailure

    failure = dbfailure.classify(DBAPIError("SELECT 1", {}, _DriverError(message, sqlstate)))
    assert (failure.http_status if failure else None) == status
    if failure is not None:
        assert message in failure.reason
