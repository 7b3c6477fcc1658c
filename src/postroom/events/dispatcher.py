"""The dispatcher: fan events out to endpoints, POST them signed, write back how it went.

``postroom worker`` (and every in-process worker of ``postroom serve``) runs one
beside its send loop. Each step fans out the outbox, leases due deliveries, POSTs
them concurrently and writes the outcomes back in one transaction
(``events.deliveries`` holds the argument for why nothing is lost). Every
connection goes through the providers' SSRF guard (``providers.egress``): an
endpoint reaches only public addresses, or the networks in its ``allowNetworks``.
Redirects are not followed: a 3xx is a failed attempt.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.clock import Clock
from postroom.errors import PostroomError
from postroom.events import deliveries, retry, signing
from postroom.events.deliveries import Claimed, Outcome
from postroom.providers.egress import (
    AddressGuard,
    ClientPerRequest,
    Resolver,
    parse_networks,
    resolve_host,
)

log = logging.getLogger(__name__)

#: how long a receiver has to answer one POST
TIMEOUT_S = 10.0
#: how much of a refusing answer's body the delivery log keeps
EXCERPT_CHARS = 300
#: finished deliveries stay in the log this long
LOG_RETENTION = timedelta(days=30)
#: how often a dispatcher deletes finished deliveries past the retention (the first
#: time a minute after it starts)
PRUNE_INTERVAL_S = 3600.0
PRUNE_FIRST_S = 60.0


class Dispatcher:
    """Delivers event webhooks until cancelled (``run``) or until none is due (``drain``)."""

    def __init__(
        self,
        engine: AsyncEngine,
        fernet: Fernet,
        clock: Clock,
        *,
        worker_id: str,
        batch_size: int = 50,
        concurrency: int = 10,
        lease_s: float = 60.0,
        poll_interval_s: float = 1.0,
        timeout_s: float = TIMEOUT_S,
        resolver: Resolver = resolve_host,
    ) -> None:
        self.engine = engine
        self.fernet = fernet
        self.clock = clock
        self.id = worker_id
        self.batch_size = batch_size
        self.lease_s = max(lease_s, timeout_s * 2)
        self.poll_interval_s = poll_interval_s
        self.timeout_s = timeout_s
        self._resolver = resolver
        self._limit = asyncio.Semaphore(concurrency)
        self._tokens = (f"{worker_id}#w{n}" for n in itertools.count(1))
        #: per endpoint and address policy, a client per POST in flight
        self._clients: dict[tuple[uuid.UUID, tuple[str, ...]], ClientPerRequest] = {}
        self._next_prune = time.monotonic() + PRUNE_FIRST_S

    async def run(self) -> None:
        """Deliver until cancelled; a failing step is logged and tried again."""
        while True:
            try:
                busy = await self.step()
            except Exception:
                log.exception("webhook dispatcher %s: step failed", self.id)
                busy = 0
            if not busy:
                await asyncio.sleep(self.poll_interval_s)

    async def drain(self, *, max_rounds: int = 1000) -> int:
        """Deliver everything due now; returns how many POSTs were made."""
        posted = 0
        await deliveries.reap(self.engine, now=self.clock.now())
        for _ in range(max_rounds):
            before = posted
            await deliveries.fan_out(self.engine, now=self.clock.now(), limit=1000)
            posted += await self._deliver_due()
            if posted == before:
                break
        return posted

    async def step(self) -> int:
        """One round: take back expired leases, fan out, deliver what is due. With
        nothing to do it costs one read."""
        now = self.clock.now()
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_INTERVAL_S
            await deliveries.prune(self.engine, before=now - LOG_RETENTION)
        outbox, due, expired = await deliveries.pending_work(self.engine, now=now)
        if expired:
            await deliveries.reap(self.engine, now=now)
        fanned = 0
        if outbox:
            fanned = await deliveries.fan_out(self.engine, now=now, limit=1000)
        if not (outbox or due or expired):
            return 0
        return fanned + await self._deliver_due()

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def _deliver_due(self) -> int:
        claimed = await deliveries.claim(
            self.engine,
            token=next(self._tokens),
            limit=self.batch_size,
            now=self.clock.now(),
            lease_s=self.lease_s,
        )
        if not claimed:
            return 0
        endpoints = await deliveries.endpoint_secrets(self.engine, [c.endpoint_id for c in claimed])
        outcomes = await asyncio.gather(
            *(self._post(c, endpoints.get(c.endpoint_id)) for c in claimed)
        )
        await deliveries.finish(self.engine, outcomes, now=self.clock.now())
        return len(claimed)

    async def _post(self, delivery: Claimed, endpoint: Any) -> Outcome:
        async with self._limit:
            started = self.clock.now()
            t0 = time.perf_counter()
            code: int | None = None
            try:
                if endpoint is None:
                    raise PostroomError("the endpoint was deleted")
                secret = self._secret(endpoint.secret)
                body = delivery.payload.encode()
                headers = signing.headers(
                    secret, f"msg_{delivery.id.hex}", int(started.timestamp()), body
                )
                headers["user-agent"] = "Postroom-Webhooks"
                with self._clients_of(endpoint).client() as client:
                    response = await client.post(endpoint.url, content=body, headers=headers)
                code = response.status_code
                error = None if 200 <= code < 300 else _refusal(response)
            except PostroomError as exc:  # the SSRF guard's refusal among them
                error = exc.message.replace("config.allowNetworks", "allowNetworks")
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            latency_ms = (time.perf_counter() - t0) * 1000
        if error is None:
            outcome, next_at = "delivered", None
        elif retry.gives_up(delivery.attempt, delivery.max_attempts):
            outcome, next_at = "failed", None
        else:
            outcome = "retry"
            next_at = self.clock.now() + timedelta(seconds=retry.delay_s(delivery.attempt))
        return Outcome(
            delivery=delivery,
            started_at=started,
            outcome=outcome,
            status_code=code,
            latency_ms=round(latency_ms, 3),
            error=error,
            next_attempt_at=next_at,
        )

    def _secret(self, stored: str) -> str:
        try:
            return self.fernet.decrypt(stored.encode()).decode()
        except InvalidToken:
            raise PostroomError(
                "the endpoint's secret cannot be decrypted: POSTROOM_SECRET_KEY differs from "
                "the key it was stored with"
            ) from None

    def _clients_of(self, endpoint: Any) -> ClientPerRequest:
        allow = tuple(str(n) for n in endpoint.allow_networks or ())
        key = (endpoint.id, allow)
        clients = self._clients.get(key)
        if clients is None:
            guard = AddressGuard(
                provider="webhook endpoint",
                allow=parse_networks(list(allow)),
                resolver=self._resolver,
            )
            clients = ClientPerRequest(guard, timeout=self.timeout_s, follow_redirects=False)
            self._clients[key] = clients
        return clients


def _refusal(response: httpx.Response) -> str:
    excerpt = response.text[:EXCERPT_CHARS].strip()
    return f"HTTP {response.status_code}" + (f": {excerpt}" if excerpt else "")
