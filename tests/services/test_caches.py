"""The per-process caches on the ``POST /send`` path: API keys and queues.

Requests that arrive together when an entry is missing or has expired share one
database read; a revoked key stops working within the documented bound.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.app import Postroom
from postroom.errors import AuthError
from postroom.services import keys as keys_module
from postroom.services.keys import KeyStore
from postroom.services.router import QueueDirectory


@contextmanager
def selects(engine: AsyncEngine) -> Iterator[Counter[str]]:
    """Counts the SELECTs on each table while the block runs."""
    seen: Counter[str] = Counter()

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        text = statement.lower()
        if text.lstrip().startswith("select"):
            for table in ("api_keys", "email_queues"):
                if f"from {table}" in text:
                    seen[table] += 1

    event.listen(engine.sync_engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", note)


async def test_concurrent_requests_share_one_key_check(postroom: Postroom) -> None:
    key, info = await postroom.keys.create("app", ["send"])
    store = KeyStore(postroom.engine, postroom.clock)  # a fresh process's empty cache
    with selects(postroom.engine) as seen:
        found = await asyncio.gather(*(store.verify(key) for _ in range(20)))
        assert {f.id for f in found} == {info.id}
        await store.verify(key)  # cached now
    assert seen["api_keys"] == 1


async def test_concurrent_bad_keys_all_fail(postroom: Postroom) -> None:
    store = KeyStore(postroom.engine, postroom.clock)
    results = await asyncio.gather(
        *(store.verify("pr_00000000_nope") for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, AuthError) for r in results)


async def test_a_key_revoked_elsewhere_stops_working_after_the_cache_bound(
    postroom: Postroom, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, info = await postroom.keys.create("app", ["send"])
    api_process = KeyStore(postroom.engine, postroom.clock)
    await api_process.verify(key)
    await postroom.keys.revoke(info.prefix)  # another process (the CLI)
    await api_process.verify(key)  # within the bound: still cached here
    later = keys_module.time.monotonic() + keys_module.CACHE_TTL_S
    monkeypatch.setattr(keys_module, "time", SimpleNamespace(monotonic=lambda: later))
    with pytest.raises(AuthError, match="revoked"):
        await api_process.verify(key)


async def test_concurrent_sends_share_one_queue_load(postroom: Postroom) -> None:
    directory = QueueDirectory(postroom.engine)
    with selects(postroom.engine) as seen:
        found = await asyncio.gather(*(directory.get("transactional") for _ in range(20)))
        assert {q.name for q in found if q} == {"transactional"}
    assert seen["email_queues"] == 1
