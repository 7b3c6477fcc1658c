"""Failover and failback between two real SMTP servers (aiosmtpd), through the API.

The primary answers every connection with 421; the breaker opens and traffic goes
to the secondary. Once the primary accepts again and the cool-down is over (the
manual clock moves, nothing sleeps), its check passes, one probe goes through and
traffic returns to it.
"""

from __future__ import annotations

from typing import Any

import httpx

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.queue.worker import Worker
from tests.providers.smtp_server import SMTPServer
from tests.support.payloads import email
from tests.support.providers import disable_all
from tests.support.queues import SPEC_RETRY, set_retry

API = "/api/system/email"
PASSWORD = "primary-relay-password-4711"


class Responses:
    """Every response body the test saw, to prove the password is in none of them."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.bodies: list[str] = []

    async def __call__(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.client.request(method, API + path, **kwargs)
        self.bodies.append(response.text)
        assert response.status_code < 300, response.text
        return response


async def send(api: Responses, n: int) -> None:
    for _ in range(n):
        await api("POST", "/send", json=email())


async def drain(worker: Worker, clock: ManualClock, rounds: int = 5) -> None:
    """Process what is due, moving the clock past retry backoffs between rounds."""
    for _ in range(rounds):
        await worker.drain()
        clock.advance(5)


async def test_failover_to_the_secondary_and_failback_after_cooldown(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    api = Responses(client)
    async with SMTPServer(users={"ann": PASSWORD}) as primary, SMTPServer() as secondary:
        primary.script("GREETING", "421 4.3.2 Service not available, closing channel", times=None)
        await disable_all(postroom)
        for name, server, priority, auth in (
            ("primary", primary, 200, {"user": "ann", "password": PASSWORD}),
            ("secondary", secondary, 100, {}),
        ):
            config = {"host": server.host, "port": server.port, "socketTimeout": 2000}
            body = {"name": name, "type": "smtp", "priority": priority, "config": config}
            await api("POST", "/providers", json={**body, "authentication": auth})

        await set_retry(postroom, SPEC_RETRY)  # this test is about failover, not backoff
        worker = postroom.worker()
        try:
            await send(api, 20)
            await drain(worker, clock)

            assert len(secondary.received) == 20
            assert primary.received == [] and primary.connections >= 5
            await worker.router.flush()
            providers = {p["name"]: p for p in (await api("GET", "/providers")).json()["providers"]}
            assert providers["primary"]["health"]["status"] in ("down", "degraded")
            assert providers["primary"]["health"]["failedLastHour"] >= 5
            assert "421 4.3.2" in providers["primary"]["health"]["lastError"]
            assert providers["secondary"]["health"]["status"] == "healthy"
            assert providers["secondary"]["health"]["sentLastHour"] == 20
            check = (await api("POST", "/providers/primary/test")).json()
            assert check["ok"] is False and "421" in check["detail"]
            statuses = [
                (await api("GET", f"/status/{r.message()['X-Postroom-Id']}")).json()
                for r in secondary.received
            ]
            assert {s["status"] for s in statuses} == {"sent"}
            assert {s["provider"] for s in statuses} == {"secondary"}

            # the primary recovers; within the cool-down it still gets nothing
            primary.unscript()
            await send(api, 3)
            await worker.drain()
            assert primary.received == [] and len(secondary.received) == 23

            clock.advance(30)  # cool-down over: check, one probe, then all traffic
            await send(api, 5)
            await worker.drain()
            assert len(primary.received) >= 1
            probed = len(primary.received)
            await send(api, 10)
            await worker.drain()
            assert len(primary.received) == probed + 10
            assert len(secondary.received) == 23 + 5 - probed
            assert primary.auth_log[-1].success and primary.auth_log[-1].user == "ann"

            await worker.router.flush()
            providers = {p["name"]: p for p in (await api("GET", "/providers")).json()["providers"]}
            assert providers["primary"]["health"]["status"] != "down"
            assert providers["primary"]["health"]["sentLastHour"] == probed + 10
        finally:
            await worker.aclose()
    assert all(PASSWORD not in body for body in api.bodies)
    assert any("****" in body for body in api.bodies)
