"""A bulk send's shared part: read once however many of its sends start at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event

from postroom.app import Postroom
from postroom.errors import ComposeError
from postroom.queue.bulks import SharedRequests


async def test_sends_starting_together_wait_for_one_read(postroom: Postroom) -> None:
    accepted = await postroom.send_bulk(
        {
            "from": {"email": "news@example.com"},
            "subject": "Hi",
            "content": {"text": "Hello"},
            "recipients": [{"email": f"u{i}@example.com"} for i in range(3)],
        }
    )
    reads: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "email_bulks" in statement:
            reads.append(statement)

    event.listen(postroom.engine.sync_engine, "before_cursor_execute", count)
    try:
        shared = SharedRequests(postroom.engine)
        jobs = [{"bulk": accepted.id, "request": {"to": [{"email": f"u{i}@example.com"}]}}
                for i in range(40)]  # fmt: skip
        merged = await asyncio.gather(*(shared.request(job) for job in jobs))
        assert len(reads) == 1
        assert {m["to"][0]["email"] for m in merged} == {f"u{i}@example.com" for i in range(40)}
        assert all(m["subject"] == "Hi" for m in merged)
        await shared.request(jobs[0])  # cached now
        assert len(reads) == 1
        # a missing bulk send fails every waiter, and is looked up again next time
        gone = {"bulk": "00000000-0000-0000-0000-000000000000", "request": {"to": []}}
        results = await asyncio.gather(
            *(shared.request(gone) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, ComposeError) for r in results) and len(reads) == 2
        with pytest.raises(ComposeError):
            await shared.request(gone)
        assert len(reads) == 3
    finally:
        event.remove(postroom.engine.sync_engine, "before_cursor_execute", count)
