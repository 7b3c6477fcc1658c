"""The worker's DKIM key lookup: one query for the sends of a batch that miss together."""

from __future__ import annotations

import asyncio
from typing import Any

from postroom.app import Postroom
from postroom.templates.domains import DomainKeys
from tests.support.databases import statements_naming


def count_key_queries(postroom: Postroom) -> list[str]:
    return statements_naming(postroom.engine, "email_dkim_keys")


async def test_sends_that_miss_together_share_one_lookup(postroom: Postroom) -> None:
    await postroom.domains.add("example.com", algorithm="ed25519")
    keys = DomainKeys(postroom.engine, postroom.fernet, postroom.clock)
    seen = count_key_queries(postroom)
    found = await asyncio.gather(*(keys.signer("example.com") for _ in range(50)))
    assert len(seen) == 1
    assert all(k is not None and k.domain == "example.com" for k in found)
    # a domain without a key: also one lookup, and the answer is cached
    none = await asyncio.gather(*(keys.signer("other.example") for _ in range(20)))
    assert none == [None] * 20 and len(seen) == 2
    assert await keys.signer("other.example") is None and len(seen) == 2


async def test_a_failed_lookup_fails_every_waiting_send_and_is_tried_again(
    postroom: Postroom, monkeypatch: Any
) -> None:
    keys = DomainKeys(postroom.engine, postroom.fernet, postroom.clock)
    calls = 0

    async def broken(domain: str) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        raise ConnectionError("database down")

    monkeypatch.setattr(keys, "_load_signer", broken)
    outcomes = await asyncio.gather(
        *(keys.signer("example.com") for _ in range(10)), return_exceptions=True
    )
    assert calls == 1 and all(isinstance(o, ConnectionError) for o in outcomes)
    monkeypatch.undo()
    assert await keys.signer("example.com") is None  # tried again, not cached as failed
