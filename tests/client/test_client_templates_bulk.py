"""postroom.client's bulk and template methods against the real API app."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import pytest
import uvicorn
from sqlalchemy import Table, func, select

from postroom.api.app import create_app
from postroom.app import Postroom
from postroom.client import ApiError, AsyncPostroomClient, PostroomClient, RetryPolicy
from postroom.db.models import EmailBulk, EmailJob
from tests.client.test_client import LoseFirstAnswer

jobs_t = cast(Table, EmailJob.__table__)
bulks_t = cast(Table, EmailBulk.__table__)
NO_WAIT = RetryPolicy(attempts=3, backoff_s=0)
WELCOME: dict[str, Any] = {
    "name": "welcome",
    "subject": "Welcome, {{ name }}",
    "content": {"text": "Hello {{ name }}, your code is {{ code }}."},
    "variables": [
        {"name": "name", "example": "Ann"},
        {"name": "code", "type": "integer", "example": 3},
    ],
}
SENDER = {"email": "app@example.com"}


async def no_sleep(_: float) -> None:
    return None


async def rows(postroom: Postroom, table: Table) -> int:
    async with postroom.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


@pytest.fixture
async def api(postroom: Postroom, admin_key: str) -> AsyncIterator[AsyncPostroomClient]:
    transport = httpx.ASGITransport(app=create_app(postroom, workers=0))
    async with AsyncPostroomClient(
        "http://postroom.test", admin_key, transport=transport, retry=NO_WAIT, sleep=no_sleep
    ) as client:
        yield client


def people(n: int) -> list[dict[str, Any]]:
    return [{"email": f"p{i}@example.com", "templateData": {"code": i}} for i in range(n)]


async def test_templates_from_create_to_delete(api: AsyncPostroomClient) -> None:
    created = await api.create_template(WELCOME)
    assert created.name == "welcome" and created.version == 1
    assert [t.name for t in (await api.templates()).templates] == ["welcome"]
    assert (await api.template(created.id)).subject == "Welcome, {{ name }}"

    changed = await api.update_template("welcome", {"subject": "Hi {{ name }}"})
    assert changed.version == 2 and changed.subject == "Hi {{ name }}"
    preview = await api.preview_template("welcome", {"name": "Bo", "code": 7})
    assert preview.subject == "Hi Bo" and preview.text is not None and "code is 7" in preview.text
    first = await api.preview_template("welcome", {"name": "Bo", "code": 7}, version=1)
    assert first.version == 1 and first.subject == "Welcome, Bo"

    sent = await api.send_template(
        {
            "from": SENDER,
            "to": [{"email": "bo@example.com"}],
            "templateId": "welcome",
            "templateData": {"name": "Bo", "code": 7},
        }
    )
    assert (await api.status(sent.id)).subject == "Hi Bo"

    deleted = await api.delete_template("welcome")
    assert deleted.archived
    assert (await api.templates()).templates == []
    with pytest.raises(ApiError) as caught:
        await api.template("welcome")
    assert caught.value.status_code == 404
    with pytest.raises(ApiError) as bad:
        await api.create_template({**WELCOME, "subject": "{{ broken"})
    assert bad.value.status_code == 422


async def test_send_bulk_and_its_progress(api: AsyncPostroomClient, postroom: Postroom) -> None:
    await api.create_template(WELCOME)
    accepted = await api.send_bulk(
        {
            "from": SENDER,
            "templateId": "welcome",
            "templateData": {"name": "friend"},
            "recipients": people(4),
        }
    )
    assert accepted.recipients == 4 and accepted.status == "queued"
    progress = await api.bulk_status(accepted.id)
    assert progress.total == 4 and progress.queued == 4 and progress.by_status == {"queued": 4}
    assert await rows(postroom, jobs_t) == 4
    with pytest.raises(ApiError) as caught:
        await api.send_bulk({"from": SENDER, "templateId": "welcome", "recipients": people(1)})
    assert caught.value.status_code == 422
    assert caught.value.errors[0]["field"] == "recipients.0.templateData.name"
    with pytest.raises(ApiError) as missing:
        await api.bulk_status("00000000-0000-0000-0000-000000000000")
    assert missing.value.status_code == 404


async def test_a_lost_bulk_answer_is_retried_with_the_same_key(
    postroom: Postroom, admin_key: str
) -> None:
    lossy = LoseFirstAnswer(httpx.ASGITransport(app=create_app(postroom, workers=0)))
    async with AsyncPostroomClient(
        "http://postroom.test", admin_key, transport=lossy, retry=NO_WAIT, sleep=no_sleep
    ) as client:
        body = {
            "from": SENDER,
            "subject": "Hi",
            "content": {"text": "Hello"},
            "recipients": people(3),
        }
        for person in body["recipients"]:
            del person["templateData"]
        accepted = await client.send_bulk(body)
    assert len(lossy.keys) == 2 and lossy.keys[0] == lossy.keys[1] and lossy.keys[0]
    assert await rows(postroom, bulks_t) == 1 and await rows(postroom, jobs_t) == 3
    assert (await postroom.bulk.progress(accepted.id)).total == 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_blocking_client_against_a_running_server(
    postroom: Postroom, admin_key: str
) -> None:
    port = _free_port()
    config = uvicorn.Config(
        create_app(postroom, workers=0), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)

    def use() -> tuple[int, int, str]:
        with PostroomClient(f"http://127.0.0.1:{port}", admin_key, retry=NO_WAIT) as client:
            client.create_template(WELCOME)
            accepted = client.send_bulk(
                {
                    "from": SENDER,
                    "templateId": "welcome",
                    "templateData": {"name": "x"},
                    "recipients": people(2),
                },
                idempotency_key="once",
            )
            again = client.send_bulk(
                {
                    "from": SENDER,
                    "templateId": "welcome",
                    "templateData": {"name": "x"},
                    "recipients": people(2),
                },
                idempotency_key="once",
            )
            assert again.id == accepted.id
            sent = client.send_template(
                {
                    "from": SENDER,
                    "to": [{"email": "z@example.com"}],
                    "templateId": "welcome",
                    "templateData": {"name": "Zed", "code": 1},
                }
            )
            preview = client.preview_template("welcome")
            return (
                client.bulk_status(accepted.id).total,
                len(client.templates().templates),
                (client.status(sent.id).subject + "|" + preview.subject),
            )

    try:
        total, templates, subjects = await asyncio.to_thread(use)
    finally:
        server.should_exit = True
        await serving
    assert (total, templates, subjects) == (2, 1, "Welcome, Zed|Welcome, Ann")
    assert await rows(postroom, jobs_t) == 3
