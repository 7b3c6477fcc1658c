"""Engines: SQLite in WAL mode with immediate transactions, PostgreSQL with a pool."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import weakref
from collections.abc import AsyncIterator
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, Pool

from postroom.config import Settings

#: execution option marking read-only work (see ``reader``)
READ_ONLY_OPTION = "postroom_read_only"


def json_dumps(value: Any) -> str:
    """JSON columns' serializer: orjson (several times faster than ``json`` on job
    payloads), with ``json`` for what orjson refuses, such as integers past 64 bits."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


def create_engine(settings: Settings, **kwargs: Any) -> AsyncEngine:
    """The async engine for ``settings``; SQLite gets its pragmas and data directory."""
    kwargs.setdefault("json_serializer", json_dumps)
    # (reading stays with ``json``: orjson turns integers past 64 bits into floats)
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, **kwargs)
        _configure_sqlite(engine, settings.sqlite_busy_timeout_ms)
        return engine
    # a pool large enough for the API's concurrency: overflow connections are
    # opened and closed per checkout, which is costly under steady load
    kwargs.setdefault("pool_size", settings.database_pool_size)
    kwargs.setdefault("max_overflow", settings.database_max_overflow)
    kwargs.setdefault("pool_pre_ping", True)
    # JIT compiles a query whose estimated cost passes jit_above_cost, which costs
    # 100 ms or more each time: ruinous for short OLTP statements (a claim planned
    # with disabled paths carries a huge nominal cost) and more than the analytics
    # queries gain. Off for Postroom's own sessions only.
    connect_args = dict(kwargs.pop("connect_args", {}))
    connect_args["server_settings"] = {"jit": "off", **connect_args.get("server_settings", {})}
    return create_async_engine(url, connect_args=connect_args, **kwargs)


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    """WAL, synchronous=FULL, a busy timeout, and ``BEGIN IMMEDIATE`` transactions.

    pysqlite's deferred BEGIN takes the write lock only at the first write; two
    such transactions that both read first can deadlock with SQLITE_BUSY, which
    the busy timeout does not retry. Taking the lock at BEGIN makes writers queue
    behind the busy timeout instead, so "database is locked" does not happen.
    Read-only work goes through :func:`reader`, whose transactions stay deferred:
    in WAL mode readers need no lock and never wait for writers.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    @event.listens_for(engine.sync_engine.pool, "invalidate")
    def _on_invalidate(dbapi_conn: Any, _record: ConnectionPoolEntry, _exc: Any) -> None:
        """End the transaction of a connection given up mid-statement (a task cancelled
        while its statement ran), before the pool closes it.

        Closed with a statement still referenced (by the cancelled task's traceback,
        until the garbage collector frees it), a SQLite connection stays open as a
        "zombie", and its transaction, SQLite's write lock included, with it: every
        other writer waited out its busy timeout and failed with "database is locked".
        The rollback runs on the driver's thread after that statement.
        """
        with contextlib.suppress(Exception):  # already broken: closing is all that is left
            dbapi_conn.rollback()


#: each SQLite pool's lock, with the event loop it serves (a lock is bound to one)
_WRITE_TURNS: weakref.WeakKeyDictionary[Pool, tuple[asyncio.AbstractEventLoop, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


def write_turn(engine: AsyncEngine) -> contextlib.AbstractAsyncContextManager[Any]:
    """Held around a frequent write transaction (a claim, a write-back, a group commit).

    On SQLite this process's writers then take turns in an asyncio lock, the next one
    resuming as soon as the previous one is done, instead of in SQLite's busy handler,
    which sleeps 1, 2, 5, 10, ... ms between tries (a worker's claims kept meeting its
    own write-backs there: one worker on SQLite delivered 15 % less). Writers in
    other processes still queue behind the busy timeout. Nothing on PostgreSQL,
    whose writers lock rows.
    """
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    pool, loop = engine.sync_engine.pool, asyncio.get_running_loop()
    held = _WRITE_TURNS.get(pool)
    if held is None or held[0] is not loop:
        held = _WRITE_TURNS[pool] = (loop, asyncio.Lock())
    return held[1]


@contextlib.asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """``engine.begin()`` inside this process's write turn (:func:`write_turn`): the
    transaction of a frequent writer (claims, write-backs, webhook deliveries)."""
    async with write_turn(engine), engine.begin() as conn:
        yield conn


@functools.lru_cache(maxsize=32)
def reader(engine: AsyncEngine) -> AsyncEngine:
    """The same engine (same pool) for read-only work.

    On SQLite its transactions do not take the write lock; on PostgreSQL it is the
    engine itself in all but name.
    """
    return engine.execution_options(**{READ_ONLY_OPTION: True})


def session_factory(engine: AsyncEngine) -> async_sessionmaker[Any]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def asyncpg_connection(conn: AsyncConnection) -> Any:
    """The driver's (asyncpg's) connection under ``conn``, for statements sent past the
    SQL layer (PostgreSQL only; the caller owns any transaction on it)."""
    return (await conn.get_raw_connection()).driver_connection
