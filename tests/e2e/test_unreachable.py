"""A provider that cannot be reached costs no attempt: the message fails over or waits.

The unreachable provider is an SMTP relay on a closed loopback port (the connection
is refused at once). Time is the manual clock's; nothing sleeps.
"""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from postroom.app import Postroom
from postroom.clock import ManualClock
from tests.providers.smtp_server import SMTPServer
from tests.support.payloads import email
from tests.support.providers import add_provider, disable_all

API = "/api/system/email"
#: the README's quick-start message
QUICK_START = {
    "to": [{"email": "ann@example.com", "name": "Ann"}],
    "from": {"email": "app@example.com"},
    "subject": "Welcome",
    "content": {"text": "Hello Ann", "html": "<p>Hello Ann</p>"},
}


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def smtp_provider(name: str, port: int, priority: int) -> dict[str, object]:
    return {
        "name": name,
        "type": "smtp",
        "priority": priority,
        "config": {"host": "127.0.0.1", "port": port},
    }


async def drain(postroom: Postroom) -> int:
    worker = postroom.worker()
    try:
        return await worker.drain()
    finally:
        await worker.aclose()


async def test_quick_start_send_reaches_the_outbox_past_an_unreachable_provider(
    client: httpx.AsyncClient, postroom: Postroom, closed_port: int
) -> None:
    added = await client.post(
        f"{API}/providers", json=smtp_provider("Primary SMTP", closed_port, 200)
    )
    assert added.status_code == 201, added.text
    sent = (await client.post(f"{API}/send", json=QUICK_START)).json()

    assert await drain(postroom) == 1

    outbox = Path(postroom.settings.data_dir) / "outbox" / f"{sent['id']}.eml"
    assert b"Hello Ann" in outbox.read_bytes()
    status = (await client.get(f"{API}/status/{sent['id']}")).json()
    assert status["status"] == "sent" and status["provider"] == "Development outbox"
    assert status["attempts"] == 1  # the delivery; the unreachable relay took none
    record = await postroom.status(sent["id"])
    assert [a.outcome for a in record.attempt_log] == ["sent"]


async def test_unreachable_provider_fails_over_within_the_attempt(
    postroom: Postroom, closed_port: int
) -> None:
    async with SMTPServer() as secondary:
        await disable_all(postroom)
        await add_provider(
            postroom,
            name="primary",
            type="smtp",
            priority=200,
            config={"host": "127.0.0.1", "port": closed_port},
        )
        await add_provider(
            postroom,
            name="secondary",
            type="smtp",
            priority=100,
            config={"host": secondary.host, "port": secondary.port},
        )
        ids = [(await postroom.send(email(maxAttempts=3))).id for _ in range(4)]
        assert await drain(postroom) == 4

    assert len(secondary.received) == 4
    for email_id in ids:
        status = await postroom.status(email_id)
        assert (status.status, status.provider, status.attempts) == ("sent", "secondary", 1)
        assert [a.outcome for a in status.attempt_log] == ["sent"]


async def test_with_every_provider_unreachable_messages_wait_and_say_why(
    postroom: Postroom, clock: ManualClock, closed_port: int
) -> None:
    await disable_all(postroom)
    await add_provider(
        postroom,
        name="primary",
        type="smtp",
        config={"host": "127.0.0.1", "port": closed_port},
    )
    email_id = (await postroom.send(email(maxAttempts=3))).id
    for _ in range(6):  # far past three attempts' worth of retries
        await drain(postroom)
        clock.advance(600)

    status = await postroom.status(email_id)
    assert (status.status, status.attempts) == ("queued", 0)
    assert len(status.attempt_log) >= 6
    assert {a.outcome for a in status.attempt_log} == {"deferred"}
    last = status.attempt_log[-1]
    assert "primary" in (last.error or "") and "cannot reach" in (last.error or "")


async def test_a_provider_that_worked_is_not_replaced_by_the_outbox_when_it_goes_down(
    postroom: Postroom,
) -> None:
    server = SMTPServer()
    await server.__aenter__()
    try:
        await add_provider(
            postroom,
            name="relay",
            type="smtp",
            priority=200,
            config={"host": server.host, "port": server.port},
        )
        first = (await postroom.send(email())).id
        assert await drain(postroom) == 1
        assert len(server.received) == 1
    finally:
        await server.__aexit__(None, None, None)
    # the relay is gone now (connections refused); the outbox is still enabled
    second = (await postroom.send(email())).id
    await drain(postroom)

    assert (await postroom.status(first)).provider == "relay"
    status = await postroom.status(second)
    assert (status.status, status.attempts) == ("queued", 0)
    assert [a.outcome for a in status.attempt_log] == ["deferred"]
    outbox = Path(postroom.settings.data_dir) / "outbox"
    assert not outbox.exists() or not any(outbox.iterdir())
