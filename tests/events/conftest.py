"""A real HTTP receiver on loopback, an SMTP server behind the real worker, and helpers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from postroom.app import Postroom
from tests.providers.fake_esp import FakeESP, Recorded, Reply
from tests.providers.smtp_server import SMTPServer
from tests.support.providers import only_smtp_provider

ENDPOINTS = "/api/system/email/webhooks/endpoints"


class Receiver(FakeESP):
    """Answers 204 unless scripted otherwise; records every request."""

    name = "receiver"

    def handle(self, request: Recorded) -> Reply:
        return self.scripted() or Reply(204)

    @property
    def url(self) -> str:
        return f"{self.base_url}/hooks"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def smtp(postroom: Postroom) -> AsyncIterator[SMTPServer]:
    async with only_smtp_provider(postroom, "relay") as server:
        yield server


def verify(secret: str, request: Recorded) -> dict[str, Any]:
    """Standard Webhooks verification written from the specification, apart from
    Postroom's own signing code; returns the parsed body."""
    key = base64.b64decode(secret.split("_", 1)[1])
    msg_id = request.headers["webhook-id"]
    timestamp = request.headers["webhook-timestamp"]
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + request.body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    offered = [
        s.split(",", 1)[1]
        for s in request.headers["webhook-signature"].split(" ")
        if s.startswith("v1,")
    ]
    assert any(hmac.compare_digest(expected, s) for s in offered), "bad signature"
    body: dict[str, Any] = json.loads(request.body)
    return body


async def create_endpoint(client: httpx.AsyncClient, url: str, **fields: Any) -> dict[str, Any]:
    body = {"url": url, "allowNetworks": ["127.0.0.0/8"], **fields}
    response = await client.post(ENDPOINTS, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def drain_mail(postroom: Postroom) -> int:
    worker = postroom.worker()
    try:
        return await worker.drain()
    finally:
        await worker.aclose()


async def dispatch(postroom: Postroom) -> int:
    """Run a dispatcher, as ``postroom worker`` does, until nothing is due."""
    worker = postroom.worker()
    try:
        return await worker.webhooks.drain()
    finally:
        await worker.aclose()


async def deliveries(client: httpx.AsyncClient, endpoint_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"{ENDPOINTS}/{endpoint_id}/deliveries")
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["deliveries"]
    return found
