"""A bulk send of 10,000 recipients reaches a real SMTP server, each with their own data."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from postroom.app import Postroom
from tests.providers.smtp_server import SMTPServer
from tests.support.databases import production_backend
from tests.support.providers import add_provider, disable_all

API = "/api/system/email"
N = 10_000


@pytest.fixture
async def smtp(postroom: Postroom) -> AsyncIterator[SMTPServer]:
    async with SMTPServer() as server:
        await disable_all(postroom)
        await add_provider(
            postroom,
            name="relay",
            type="smtp",
            config={"host": server.host, "port": server.port, "socketTimeout": 5000},
        )
        yield server


# one database: the bulk path is tested on both elsewhere; this run takes a minute or more
@pytest.mark.parametrize("backend", production_backend())
async def test_ten_thousand_recipients_each_get_their_own_message(
    client: httpx.AsyncClient, postroom: Postroom, smtp: SMTPServer
) -> None:
    template = {
        "name": "receipt",
        "subject": "Receipt {{ number }}",
        "content": {
            "text": "Hello {{ name }}, you paid {{ amount }} EUR.",
            "html": "<p>{{ name }}</p>",
        },
        "variables": [
            {"name": "name"},
            {"name": "number", "type": "integer"},
            {"name": "amount", "type": "number"},
        ],
    }
    assert (await client.post(f"{API}/templates", json=template)).status_code == 201
    body = {
        "from": {"email": "shop@example.com"},
        "templateId": "receipt",
        "recipients": [
            {
                "email": f"buyer{i}@example.com",
                "templateData": {"name": f"Buyer {i}", "number": i, "amount": i / 4},
            }
            for i in range(N)
        ],
    }
    response = await client.post(f"{API}/bulk", json=body)
    assert response.status_code == 202, response.text

    worker = postroom.worker()
    try:
        while await worker.drain():
            pass
    finally:
        await worker.aclose()

    assert len(smtp.received) == N
    seen = set()
    for received in smtp.received:
        [rcpt] = received.rcpt_tos
        i = int(rcpt.removeprefix("buyer").removesuffix("@example.com"))
        message = received.message()
        assert message["Subject"] == f"Receipt {i}"
        text = message.get_body(("plain",))
        assert text is not None
        assert text.get_content().strip() == f"Hello Buyer {i}, you paid {i / 4} EUR."
        seen.add(i)
    assert seen == set(range(N))
    progress = (await client.get(f"{API}/bulk/{response.json()['id']}")).json()
    assert (progress["sent"], progress["queued"], progress["failed"]) == (N, 0, 0)
