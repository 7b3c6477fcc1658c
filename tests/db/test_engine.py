"""Engine behaviour: SQLite locking, migrations on both databases."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, literal, select, text

from postroom.app import Postroom
from postroom.config import Settings
from postroom.db import migrate
from postroom.db.engine import create_engine, reader, write_turn
from postroom.db.types import JSONType
from tests.support.payloads import email


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = create_engine(Settings(data_dir=tmp_path))
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA synchronous"))).scalar() == 2  # FULL
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 30_000
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_an_open_read_never_blocks_a_writer(
    postroom: Postroom, backend: str, tmp_path: Path
) -> None:
    """Readers hold no write lock; writers queue behind each other, not behind reads."""
    postroom.settings.sqlite_busy_timeout_ms = 50
    other = Postroom(postroom.settings, clock=postroom.clock)
    try:
        async with reader(postroom.engine).connect() as conn:
            await conn.execute(select(text("1")))  # the read transaction is open
            result = await other.send(email())  # a write from another connection
            assert result.status == "queued"
    finally:
        await other.aclose()


async def test_migrations_go_down_and_up(postroom: Postroom) -> None:
    head = migrate.head_revision()
    assert await migrate.current_revision(postroom.engine) == head
    await migrate.downgrade(postroom.engine, "base")
    assert await migrate.current_revision(postroom.engine) is None
    await migrate.upgrade(postroom.engine)
    assert await migrate.is_current(postroom.engine)


async def test_existing_queues_get_the_retry_defaults(postroom: Postroom) -> None:
    from sqlalchemy import update

    from postroom.services.router import queues_t

    await migrate.downgrade(postroom.engine, "0002")
    async with postroom.engine.begin() as conn:
        await conn.execute(update(queues_t).values(retry={"maxAttempts": 3}))
        await conn.execute(
            update(queues_t).where(queues_t.c.name == "bulk").values(retry={"maxAttempts": 8})
        )
    await migrate.upgrade(postroom.engine)
    async with postroom.engine.connect() as conn:
        rows = dict((await conn.execute(select(queues_t.c.name, queues_t.c.retry))).all())
    defaults = {"backoff": "exponential", "baseDelaySeconds": 30, "maxDelaySeconds": 3600}
    assert rows["transactional"] == {"maxAttempts": 5, **defaults}
    assert rows["bulk"] == {"maxAttempts": 8, **defaults}  # set by hand: kept
    await migrate.downgrade(postroom.engine, "0002")
    async with postroom.engine.connect() as conn:
        rows = dict((await conn.execute(select(queues_t.c.name, queues_t.c.retry))).all())
    assert rows["transactional"] == {"maxAttempts": 3} and rows["bulk"] == {"maxAttempts": 8}
    await migrate.upgrade(postroom.engine)


@pytest.mark.postgres
async def test_postgres_sessions_never_jit_compile(postroom: Postroom) -> None:
    # a JIT compile costs 100 ms or more per statement: ten times a claim's work
    async with postroom.engine.connect() as conn:
        assert (await conn.execute(text("SHOW jit"))).scalar() == "off"


async def test_json_columns_keep_every_value_exactly(postroom: Postroom) -> None:
    value = {"big": 2**70, "small": -(2**63), "text": "Grüße ✉", "nested": [1.5, None, True]}
    async with postroom.engine.connect() as conn:
        stored = (await conn.execute(select(literal(value, type_=JSONType)))).scalar()
    assert stored == value
    assert isinstance(stored["big"], int)


async def test_write_turns_queue_this_process_s_sqlite_writers(tmp_path: Path) -> None:
    """With no busy timeout at all, two overlapping write transactions of one process
    both commit when they take turns: the second begins once the first has committed
    (without the turn, its BEGIN IMMEDIATE fails at once with "database is locked")."""
    engine = create_engine(Settings(data_dir=tmp_path, sqlite_busy_timeout_ms=0))
    order: list[str] = []
    began, arrived = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with write_turn(engine), engine.begin() as conn:
            order.append("a begins")
            await conn.execute(text("INSERT INTO t (name) VALUES ('a')"))
            began.set()
            await arrived.wait()
            # time for the second writer to reach its BEGIN (or, taking turns, to queue)
            await asyncio.sleep(0.05)
            order.append("a commits")

    async def second() -> None:
        await began.wait()
        arrived.set()
        async with write_turn(engine), engine.begin() as conn:
            order.append("b begins")
            await conn.execute(text("INSERT INTO t (name) VALUES ('b')"))
        order.append("b commits")

    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (name TEXT)"))
        await asyncio.gather(first(), second())
        async with reader(engine).connect() as conn:
            names = (await conn.execute(text("SELECT name FROM t ORDER BY name"))).scalars()
            assert list(names) == ["a", "b"]
        assert order == ["a begins", "a commits", "b begins", "b commits"]
    finally:
        await engine.dispose()


async def test_write_turns_are_sqlite_only(postroom: Postroom, backend: str) -> None:
    """One lock per SQLite database (its pool), whichever engine object reaches it;
    none on PostgreSQL, whose writers lock rows, not the database."""
    turn = write_turn(postroom.engine)
    assert isinstance(turn, asyncio.Lock) == (backend == "sqlite")
    if backend == "sqlite":
        assert write_turn(reader(postroom.engine)) is turn


def test_write_turns_follow_the_event_loop(tmp_path: Path) -> None:
    """An engine used from one event loop after another (a CLI command's second
    ``asyncio.run``) gets a lock of the loop it runs in: an asyncio lock that had a
    writer wait in the first loop cannot be waited on in the next."""
    engine = create_engine(Settings(data_dir=tmp_path, sqlite_busy_timeout_ms=0))

    async def create() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (n INTEGER)"))

    async def overlapping_writes() -> None:
        async def write(n: int) -> None:
            async with write_turn(engine), engine.begin() as conn:
                await conn.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
                await asyncio.sleep(0.01)  # the others queue for their turn meanwhile

        await asyncio.gather(*(write(n) for n in range(3)))

    async def count() -> int:
        async with reader(engine).connect() as conn:
            total = (await conn.execute(text("SELECT count(*) FROM t"))).scalar_one()
        await engine.dispose()
        return int(total)

    asyncio.run(create())
    asyncio.run(overlapping_writes())
    asyncio.run(overlapping_writes())
    assert asyncio.run(count()) == 6


async def test_a_write_cancelled_mid_statement_leaves_sqlite_unlocked(tmp_path: Path) -> None:
    """A task cancelled while its statement runs (as a worker's shutdown cancels its
    webhook dispatcher) gives SQLite's write lock back: the next writer does not wait
    out the busy timeout and fail with "database is locked"."""
    engine = create_engine(Settings(data_dir=tmp_path, sqlite_busy_timeout_ms=200))
    running = threading.Event()

    def slow(seconds: float) -> int:
        running.set()
        time.sleep(seconds)
        return 1

    @event.listens_for(engine.sync_engine, "connect")
    def _functions(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.create_function("slow", 1, slow)

    async def write(value: int, *, then_slow: bool = False) -> None:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": value})
            if then_slow:
                await conn.execute(text("SELECT slow(0.3)"))

    gc.disable()  # the collector would free the lock too, but only when it happens to run
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (v INTEGER)"))
        task = asyncio.create_task(write(1, then_slow=True))
        while not running.is_set():
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await write(2)  # "database is locked" after 200 ms without the rollback
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT v FROM t"))).scalars().all() == [2]
    finally:
        gc.enable()
        await engine.dispose()
