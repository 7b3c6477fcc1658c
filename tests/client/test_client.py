"""postroom.client against the real API app (ASGI), and its retries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import cast

import httpx
import pytest
from sqlalchemy import Table, func, select

from postroom.api.app import create_app
from postroom.app import Postroom
from postroom.client import (
    ApiError,
    ApiUnavailable,
    AsyncPostroomClient,
    PostroomClient,
    RetryPolicy,
)
from postroom.db.models import EmailJob
from tests.support.payloads import email as email_body

jobs_t = cast(Table, EmailJob.__table__)
NO_WAIT = RetryPolicy(attempts=3, backoff_s=0)


async def no_sleep(_: float) -> None:
    return None


async def job_count(postroom: Postroom) -> int:
    async with postroom.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(jobs_t))).scalar_one())


class LoseFirstAnswer(httpx.AsyncBaseTransport):
    """Delivers every request, but the first answer is lost on the way back."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.keys: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.keys.append(request.headers.get("idempotency-key"))
        response = await self.inner.handle_async_request(request)
        if len(self.keys) == 1:
            await response.aread()
            raise httpx.ReadError("connection reset", request=request)
        return response


@pytest.fixture
async def api(postroom: Postroom, admin_key: str) -> AsyncIterator[AsyncPostroomClient]:
    transport = httpx.ASGITransport(app=create_app(postroom, workers=0))
    async with AsyncPostroomClient(
        "http://postroom.test", admin_key, transport=transport, retry=NO_WAIT, sleep=no_sleep
    ) as client:
        yield client


async def test_send_status_raw_and_queues(api: AsyncPostroomClient, postroom: Postroom) -> None:
    sent = await api.send(email_body(subject="From the client"))
    assert sent.status == "queued"
    status = await api.status(sent.id)
    assert status.subject == "From the client" and status.recipients[0].email == "ann@example.com"

    message = EmailMessage()
    message["From"] = "app@example.com"
    message["To"] = "ann@example.com"
    message["Bcc"] = "eve@example.com"
    message["Subject"] = "Raw from the client"
    message.set_content("hello")
    raw = await api.send_raw(message)
    assert raw.recipients == 2
    assert (await api.status(raw.id)).subject == "Raw from the client"

    names = {q.name for q in (await api.queues()).queues}
    assert {"transactional", "bulk"} <= names
    assert await job_count(postroom) == 2


async def test_errors_carry_the_problem(api: AsyncPostroomClient, postroom: Postroom) -> None:
    with pytest.raises(ApiError) as caught:
        await api.send(email_body(to=[{"email": "not an address"}]))
    assert caught.value.status_code == 422
    assert caught.value.errors[0]["field"].startswith("to.0")
    with pytest.raises(ApiError) as missing:
        await api.status("00000000-0000-0000-0000-000000000000")
    assert missing.value.status_code == 404
    assert await job_count(postroom) == 0


async def test_a_lost_answer_is_retried_with_the_same_idempotency_key(
    postroom: Postroom, admin_key: str
) -> None:
    lossy = LoseFirstAnswer(httpx.ASGITransport(app=create_app(postroom, workers=0)))
    async with AsyncPostroomClient(
        "http://postroom.test", admin_key, transport=lossy, retry=NO_WAIT, sleep=no_sleep
    ) as client:
        result = await client.send(email_body())
    assert len(lossy.keys) == 2 and lossy.keys[0] == lossy.keys[1] and lossy.keys[0]
    assert await job_count(postroom) == 1  # the retry got the first answer back
    assert (await postroom.status(result.id)).status == "queued"


def test_sync_client_retries_503_honouring_retry_after_then_gives_up() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(503, headers={"Retry-After": "2"}, json={"title": "busy"})

    waits: list[float] = []
    client = PostroomClient(
        "http://postroom.test",
        "pr_x",
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=3, backoff_s=0.1),
        sleep=waits.append,
    )
    with client, pytest.raises(ApiError) as caught:
        client.send(email_body(), idempotency_key="k-1")
    assert caught.value.status_code == 503
    assert waits == [2.0, 2.0]
    assert [r.headers["idempotency-key"] for r in seen] == ["k-1"] * 3
    assert all(r.headers["authorization"] == "Bearer pr_x" for r in seen)


def test_sync_client_unreachable_is_one_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = PostroomClient(
        "http://postroom.test", "k", transport=httpx.MockTransport(handler), retry=NO_WAIT
    )
    with client, pytest.raises(ApiUnavailable, match="cannot reach Postroom"):
        client.status("x")
