"""A stored request that cannot be composed fails its job at once, with the reason."""

from __future__ import annotations

import uuid
from typing import Any, cast

import pytest
from sqlalchemy import Table, func, select, update
from sqlalchemy.exc import DBAPIError

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.db.models import EmailJob, EmailJobAttempt
from tests.support.payloads import email
from tests.support.providers import add_provider, disable_all

jobs_t = cast(Table, EmailJob.__table__)
attempts_t = cast(Table, EmailJobAttempt.__table__)

#: requests as they might sit in the queue from before a check existed
POISON: dict[str, dict[str, Any]] = {
    "surrogate-header": {"headers": {"X-Tag": "a\ud800"}},  # SQLite only: PostgreSQL refuses it
    "surrogate-name": {"from": {"email": "app@example.com", "name": "\ud800"}},  # likewise
    "injected-header": {"headers": {"X-Tag": "a\r\nBcc: eve@example.com"}},
    "forbidden-header": {"headers": {"DKIM-Signature": "v=1; forged"}},
    "long-content-type": {
        "attachments": [{"filename": "a", "content": "aGk=", "contentType": "a/" + "x" * 9999}]
    },
    "bad-base64": {"attachments": [{"filename": "a", "content": "aGk"}]},
}


async def poison_job(postroom: Postroom, job_id: uuid.UUID, change: dict[str, Any]) -> None:
    async with postroom.engine.begin() as conn:
        data = (await conn.execute(select(jobs_t.c.data).where(jobs_t.c.id == job_id))).scalar_one()
        data["request"].update(change)
        await conn.execute(update(jobs_t).where(jobs_t.c.id == job_id).values(data=data))


@pytest.mark.parametrize("poison", sorted(POISON))
async def test_a_message_that_cannot_be_composed_fails_at_once(
    postroom: Postroom, clock: ManualClock, backend: str, poison: str
) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="fake", type="fake")
    result = await postroom.send(email(maxAttempts=5))
    job_id = uuid.UUID(result.id)
    if backend == "postgres" and poison.startswith("surrogate"):
        # PostgreSQL refuses a lone surrogate in JSON, so such a job cannot exist there
        # (and the API must refuse the request rather than fail on the INSERT)
        with pytest.raises(DBAPIError, match="invalid input syntax for type json"):
            await poison_job(postroom, job_id, POISON[poison])
        return
    await poison_job(postroom, job_id, POISON[poison])

    worker = postroom.worker()
    try:
        assert await worker.drain() == 1
        for _ in range(3):  # nothing comes back for another attempt
            clock.advance(3600)
            assert await worker.drain() == 0
    finally:
        await worker.aclose()

    status = await postroom.status(result.id)
    assert (status.status, status.attempts) == ("failed", 1)
    assert status.error is not None and status.error["code"] == "compose"
    assert [(a.outcome, a.error_code) for a in status.attempt_log] == [("failed", "compose")]
    assert status.attempt_log[0].error and len(status.attempt_log[0].error) > 10
    assert status.recipients[0].status == "failed"
    async with postroom.engine.connect() as conn:
        attempts = await conn.execute(
            select(func.count()).select_from(attempts_t).where(attempts_t.c.job_id == job_id)
        )
        assert attempts.scalar_one() == 1
