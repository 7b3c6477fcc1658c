"""Provider routing: priority, circuit breaker, failover, limits, compatibility.

The router is driven directly where the breaker's state machine is the point, and
through a worker where the job's fate (deferred, attempts) is. Time is the manual
clock's: nothing sleeps.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from sqlalchemy import Table, select

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.compose.message import compose
from postroom.db.models import EmailJob, ProviderCheck, ProviderLimitCounter, ProviderStat
from postroom.errors import (
    ProviderAuthError,
    ProviderTransientError,
    ProviderUnavailable,
    UnsupportedFeature,
)
from postroom.providers import health
from postroom.providers.base import HealthResult, OutgoingMessage
from postroom.providers.fake import FakeProvider
from postroom.providers.routing import Candidate, NoProvider, ProviderRouter
from postroom.providers.slots import Slots
from tests.support.payloads import email
from tests.support.providers import add_provider, disable_all

counters_t = cast(Table, ProviderLimitCounter.__table__)
jobs_t = cast(Table, EmailJob.__table__)
checks_t = cast(Table, ProviderCheck.__table__)
stats_t = cast(Table, ProviderStat.__table__)


def message(size: int = 0, attachments: bool = False) -> OutgoingMessage:
    request: dict[str, Any] = {
        "from": {"email": "app@example.com"},
        "to": [{"email": "ann@example.com"}],
        "subject": "Hi",
        "content": {"text": "x" * size or "Hello"},
    }
    if attachments:
        request["attachments"] = [
            {"filename": "a.txt", "content": "aGk=", "contentType": "text/plain"}
        ]
    return compose(
        str(uuid.uuid4()), request, now=ManualClock().now(), message_id_domain="example.com"
    )


@pytest.fixture
async def router(postroom: Postroom) -> AsyncIterator[ProviderRouter]:
    r = postroom.provider_router()
    yield r
    await r.aclose()


async def pick(router: ProviderRouter, **kwargs: Any) -> str:
    """The name of the provider the router picks now (or the NoProvider code)."""
    choice = await router.acquire(message(), **kwargs)
    return choice.code if isinstance(choice, NoProvider) else choice.spec.name


async def chosen(router: ProviderRouter) -> Candidate:
    choice = await router.acquire(message())
    assert isinstance(choice, Candidate), choice
    return choice


async def candidates(router: ProviderRouter) -> list[Candidate]:
    await router.refresh()
    return router.candidates


def fail(router: ProviderRouter, c: Candidate, error: BaseException | None = None) -> None:
    router.report(c, error=error or ProviderTransientError("421 busy"), latency_ms=1.0)


async def two_providers(postroom: Postroom, **primary: Any) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="primary", type="fake", priority=200, **primary)
    await add_provider(postroom, name="backup", type="fake", priority=100)


# -- choice --------------------------------------------------------------------------


async def test_highest_priority_enabled_provider_first(
    postroom: Postroom, router: ProviderRouter
) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="low", type="fake", priority=10)
    await add_provider(postroom, name="high", type="fake", priority=500)
    await add_provider(postroom, name="off", type="fake", priority=900, enabled=False)
    assert await pick(router) == "high"


async def test_file_outbox_is_never_a_fallback_for_a_provider_that_worked(
    postroom: Postroom, router: ProviderRouter
) -> None:
    # the development outbox made at first start has priority 1; this one has less
    await add_provider(postroom, name="relay", type="fake", priority=0)
    c = await chosen(router)
    assert c.spec.name == "relay"
    router.report(c, error=None, latency_ms=1.0)
    router.report(c, error=ProviderAuthError("535 no"), latency_ms=1.0)
    assert await pick(router) == "unavailable"  # not the outbox


async def test_file_outbox_stands_in_while_no_provider_ever_worked(
    postroom: Postroom, router: ProviderRouter
) -> None:
    await add_provider(postroom, name="relay", type="fake", priority=0)
    c = await chosen(router)
    router.report(c, error=ProviderAuthError("535 no"), latency_ms=1.0)
    assert await pick(router) == "Development outbox"


async def test_file_outbox_never_stands_in_for_a_rate_limited_provider(
    postroom: Postroom, router: ProviderRouter
) -> None:
    await add_provider(postroom, name="relay", type="fake", priority=0, limits={"hourly": 1})
    assert await pick(router) == "relay"
    assert await pick(router) == "rate-limited"


async def test_file_outbox_is_not_used_once_a_provider_worked_in_another_process(
    postroom: Postroom, router: ProviderRouter
) -> None:
    await add_provider(postroom, name="relay", type="fake", priority=0)
    other = postroom.provider_router()
    try:
        c = await chosen(other)
        other.report(c, error=None, latency_ms=1.0)
        await other.flush()
    finally:
        await other.aclose()
    c = await chosen(router)
    router.report(c, error=ProviderAuthError("535 no"), latency_ms=1.0)
    assert await pick(router) == "unavailable"


async def test_failed_provider_goes_last_on_the_next_attempt(
    postroom: Postroom, router: ProviderRouter
) -> None:
    await two_providers(postroom)
    primary = await chosen(router)
    assert await pick(router, failed_provider_id=primary.id) == "backup"
    assert await pick(router) == "primary"


# -- circuit breaker -----------------------------------------------------------------


async def test_breaker_opens_after_consecutive_failures_and_fails_back_after_cooldown(
    postroom: Postroom, router: ProviderRouter, clock: ManualClock
) -> None:
    await two_providers(postroom)
    for _ in range(4):
        fail(router, await chosen(router))
    assert await pick(router) == "primary"  # four failures: still closed
    fail(router, await chosen(router))
    assert await pick(router) == "backup"  # five: open

    clock.advance(29)
    assert await pick(router) == "backup"
    clock.advance(2)  # cool-down over: check() passes, one probe goes to the primary
    probe = await chosen(router)
    assert probe.spec.name == "primary" and probe.state.breaker.state == "half-open"
    assert await pick(router) == "backup"  # only one probe at a time
    router.report(probe, error=None, latency_ms=3.0)
    assert probe.state.breaker.state == "closed"
    assert await pick(router) == "primary"


async def test_failed_probe_reopens_with_a_longer_cooldown(
    postroom: Postroom, router: ProviderRouter, clock: ManualClock
) -> None:
    await two_providers(postroom, monitoring={"failureThreshold": 1, "cooldownMs": 10_000})
    fail(router, await chosen(router))
    clock.advance(10)
    probe = await chosen(router)
    assert probe.spec.name == "primary"
    fail(router, probe)
    clock.advance(10)
    assert await pick(router) == "backup"  # cool-down doubled to 20 s
    clock.advance(10)
    assert await pick(router) == "primary"


async def test_a_failing_check_keeps_the_breaker_open_without_risking_a_message(
    postroom: Postroom, router: ProviderRouter, clock: ManualClock
) -> None:
    await two_providers(postroom, monitoring={"failureThreshold": 1})
    primary = await chosen(router)
    fail(router, primary)

    async def down() -> HealthResult:
        return HealthResult(ok=False, detail="connection refused")

    fake = cast(FakeProvider, primary.provider)
    fake.check = down  # type: ignore[method-assign]
    clock.advance(31)
    assert await pick(router) == "backup"
    assert primary.state.breaker.state == "open"
    assert fake.calls == 0  # no real message was tried on it


async def test_auth_error_opens_the_breaker_at_once(
    postroom: Postroom, router: ProviderRouter
) -> None:
    await two_providers(postroom)
    router.report(await chosen(router), error=ProviderAuthError("535 bad"), latency_ms=1.0)
    assert await pick(router) == "backup"


async def test_unreachable_provider_opens_the_breaker_at_once(
    postroom: Postroom, router: ProviderRouter
) -> None:
    await two_providers(postroom)
    fail(router, await chosen(router), ProviderUnavailable("cannot reach relay: refused"))
    assert await pick(router) == "backup"


async def test_a_busy_pool_says_nothing_about_the_provider(
    postroom: Postroom, router: ProviderRouter
) -> None:
    await two_providers(postroom, monitoring={"failureThreshold": 1})
    primary = await chosen(router)
    fail(router, primary, ProviderUnavailable("every connection busy", busy=True))
    assert primary.state.breaker.state == "closed"
    assert await pick(router) == "primary"


async def test_failures_seen_by_another_process_keep_the_provider_out(
    postroom: Postroom, clock: ManualClock
) -> None:
    """Three failures elsewhere make it down cluster-wide, though no breaker opened."""
    await two_providers(postroom)
    other = postroom.provider_router()
    try:
        for _ in range(3):
            fail(other, await chosen(other))
        assert await pick(other) == "primary"  # its own breaker needs five
        await other.flush()
    finally:
        await other.aclose()
    router = postroom.provider_router()
    try:
        assert await pick(router) == "backup"
        primary = next(c for c in router.candidates if c.spec.name == "primary")
        assert cast(FakeProvider, primary.provider).calls == 0
        clock.advance(31)  # the cool-down counts from the failures: check, then a probe
        assert await pick(router) == "primary"
    finally:
        await router.aclose()


async def test_a_failed_check_recorded_elsewhere_keeps_the_provider_out(
    postroom: Postroom, router: ProviderRouter, clock: ManualClock
) -> None:
    await two_providers(postroom)
    primary_id = next(c.id for c in await candidates(router) if c.spec.name == "primary")
    failed = HealthResult(ok=False, detail="connection refused")
    await health.record_check(postroom.engine, primary_id, failed, clock.now())
    await router.refresh(force=True)
    assert await pick(router) == "backup"
    clock.advance(31)  # its own check passes now: traffic returns
    assert await pick(router) == "primary"


async def test_waiters_for_a_connection_go_back_to_routing_when_the_breaker_opens(
    postroom: Postroom, router: ProviderRouter
) -> None:
    await two_providers(postroom)
    primary = await chosen(router)
    primary.state.slots = Slots(provider="primary", size=1, wait_s=60)
    holding = asyncio.Event()
    release = asyncio.Event()

    async def hold() -> None:
        async with router.slot(primary):
            holding.set()
            await release.wait()

    async def wait() -> None:
        async with router.slot(primary):
            pytest.fail("a waiter got the slot of a provider taken out of rotation")

    holder = asyncio.create_task(hold())
    await holding.wait()
    waiter = asyncio.create_task(wait())
    await asyncio.sleep(0)
    assert primary.state.slots.waiting == 1
    fail(router, primary, ProviderAuthError("535 bad"))
    with pytest.raises(ProviderUnavailable, match="out of rotation"):
        async with asyncio.timeout(1):
            await waiter
    release.set()
    await holder
    assert primary.state.slots.busy == 0


async def test_a_probe_that_found_no_free_connection_frees_its_turn(
    postroom: Postroom, router: ProviderRouter, clock: ManualClock
) -> None:
    await two_providers(postroom, monitoring={"failureThreshold": 1})
    fail(router, await chosen(router))
    clock.advance(31)
    probe = await chosen(router)
    assert probe.spec.name == "primary" and probe.state.breaker.state == "half-open"
    probe.state.slots = Slots(provider="primary", size=1, wait_s=0.01)
    async with probe.state.slots.hold():
        with pytest.raises(ProviderUnavailable):
            async with router.slot(probe):
                pass
    assert await pick(router) == "primary"  # the next message probes instead


async def test_a_connection_wait_has_its_own_deadline() -> None:
    slots = Slots(provider="relay", size=1, wait_s=0.05)
    async with slots.hold():
        with pytest.raises(ProviderUnavailable, match="busy") as info:
            async with slots.hold():
                pass
    assert info.value.context["busy"] is True
    async with slots.hold():  # the slot is free again
        assert slots.busy == 1


async def test_high_error_rate_opens_the_breaker(
    postroom: Postroom, router: ProviderRouter, clock: ManualClock
) -> None:
    monitoring = {"failureThreshold": 100, "minRequests": 6, "errorRateThreshold": 0.5}
    await two_providers(postroom, monitoring=monitoring)
    for n in range(6):
        c = await chosen(router)
        assert c.spec.name == "primary"
        if n % 2:
            fail(router, c)
        else:
            router.report(c, error=None, latency_ms=1.0)
        clock.advance(1)
    assert await pick(router) == "backup"


async def test_throttling_reply_pauses_the_provider_for_its_retry_after(
    postroom: Postroom, router: ProviderRouter, clock: ManualClock
) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="relay", type="fake")
    throttled = ProviderTransientError("421 4.7.0 slow down", retry_after=20, rate_limited=True)
    fail(router, await chosen(router), throttled)
    choice = await router.acquire(message())
    assert isinstance(choice, NoProvider) and choice.code == "rate-limited"
    assert choice.retry_after_s == pytest.approx(20)
    clock.advance(20)
    assert await pick(router) == "relay"


# -- limits --------------------------------------------------------------------------


async def test_rate_limit_moves_traffic_to_the_next_provider(
    postroom: Postroom, router: ProviderRouter
) -> None:
    await two_providers(postroom, limits={"rateLimit": 2, "rateDelta": 60_000})
    assert [await pick(router) for _ in range(3)] == ["primary", "primary", "backup"]


async def test_rate_limit_holds_across_routers_and_resets_with_the_window(
    postroom: Postroom, clock: ManualClock
) -> None:
    """Two routers stand for two worker processes: the count is in the database."""
    await disable_all(postroom)
    await add_provider(postroom, name="relay", type="fake", limits={"rateLimit": 3})
    routers = [postroom.provider_router(), postroom.provider_router()]
    try:
        picks = [await pick(routers[n % 2]) for n in range(6)]
        assert picks.count("relay") == 3
        blocked = await routers[0].acquire(message())
        assert isinstance(blocked, NoProvider) and blocked.code == "rate-limited"
        assert 0 < blocked.retry_after_s <= 1.0  # the 1 s window ends
        clock.advance(1)
        assert await pick(routers[1]) == "relay"
    finally:
        for r in routers:
            await r.aclose()


async def test_large_limits_reserve_slots_in_batches(
    postroom: Postroom, router: ProviderRouter
) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="relay", type="fake", limits={"hourly": 1000})

    async def used() -> int:
        async with postroom.engine.connect() as conn:
            return int((await conn.execute(select(counters_t.c.used))).scalar_one())

    await pick(router)
    assert await used() == 20  # 1000 // 50: one statement per 20 messages
    for _ in range(19):
        await pick(router)
    assert await used() == 20
    await pick(router)
    assert await used() == 40


async def test_concurrent_sends_share_one_reserved_batch(
    postroom: Postroom, router: ProviderRouter
) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="relay", type="fake", limits={"hourly": 1000})
    picks = await asyncio.gather(*(pick(router) for _ in range(30)))
    assert picks == ["relay"] * 30
    async with postroom.engine.connect() as conn:
        reserved = int((await conn.execute(select(counters_t.c.used))).scalar_one())
    assert reserved == 40  # two batches of 20, not one batch per send


async def test_hourly_quota_defers_until_the_next_hour(
    postroom: Postroom, clock: ManualClock
) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="relay", type="fake", limits={"hourly": 2})
    ids = [(await postroom.send(email())).id for _ in range(3)]
    worker = postroom.worker()
    try:
        await worker.drain()
        statuses = [await postroom.status(i) for i in ids]
        assert sorted(s.status for s in statuses) == ["queued", "sent", "sent"]
        [waiting] = [s for s in statuses if s.status == "queued"]
        assert waiting.attempts == 0
        assert waiting.attempt_log[-1].outcome == "deferred"
        assert waiting.attempt_log[-1].error_code == "rate-limited"
        async with postroom.engine.connect() as conn:
            due = (
                await conn.execute(
                    select(jobs_t.c.scheduled_at).where(jobs_t.c.id == uuid.UUID(waiting.id))
                )
            ).scalar_one()
        assert (due - clock.now()).total_seconds() == 3600  # the clock starts at 12:00:00
        clock.advance(3600)
        assert await worker.drain() == 1
    finally:
        await worker.aclose()
    assert (await postroom.status(waiting.id)).status == "sent"


# -- compatibility -------------------------------------------------------------------


async def test_messages_go_where_they_fit(postroom: Postroom, router: ProviderRouter) -> None:
    await two_providers(postroom, limits={"maxMessageBytes": 2000, "attachments": False})
    choice = await router.acquire(message())
    assert isinstance(choice, Candidate) and choice.spec.name == "primary"
    for big in (message(size=5000), message(attachments=True)):
        choice = await router.acquire(big)
        assert isinstance(choice, Candidate) and choice.spec.name == "backup"


async def test_a_message_no_provider_can_take_fails_at_once(postroom: Postroom) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="small", type="fake", limits={"maxMessageBytes": 1024})
    result = await postroom.send(email(content={"text": "x" * 5000}, maxAttempts=5))
    worker = postroom.worker()
    try:
        await worker.drain()
    finally:
        await worker.aclose()
    status = await postroom.status(result.id)
    assert (status.status, status.attempts) == ("failed", 1)
    assert status.error is not None and status.error["code"] == UnsupportedFeature.code
    assert "maxMessageBytes 1024" in status.error["message"]


# -- all providers down --------------------------------------------------------------


async def test_all_providers_down_defers_without_failing_or_spending_attempts(
    postroom: Postroom, clock: ManualClock
) -> None:
    await disable_all(postroom)
    for name, priority in (("primary", 200), ("backup", 100)):
        await add_provider(
            postroom,
            name=name,
            type="fake",
            priority=priority,
            config={"script": ["transient"]},
            monitoring={"failureThreshold": 1},
        )
    ids = [(await postroom.send(email(maxAttempts=3))).id for _ in range(3)]
    worker = postroom.worker()
    reachable = False

    async def check() -> HealthResult:
        return HealthResult(ok=reachable, detail="probe")

    try:
        await worker.drain()  # each provider fails once: both breakers open
        assert {c.state.breaker.state for c in worker.router.candidates} == {"open"}
        for c in worker.router.candidates:
            c.provider.check = check  # type: ignore[method-assign]
        spent = {i: (await postroom.status(i)).attempts for i in ids}
        for _ in range(4):  # every cool-down ends in a failed check: deferred again
            clock.advance(600)
            await worker.drain()
            statuses = [await postroom.status(i) for i in ids]
            assert {s.status for s in statuses} == {"queued"}
            assert {s.id: s.attempts for s in statuses} == spent
            assert {s.attempt_log[-1].error_code for s in statuses} == {"unavailable"}

        reachable = True
        for _ in range(5):
            clock.advance(600)
            await worker.drain()
    finally:
        await worker.aclose()
    statuses = [await postroom.status(i) for i in ids]
    assert {s.status for s in statuses} == {"sent"}
    assert all(s.attempts == spent[s.id] + 1 for s in statuses)


async def test_concurrent_acquires_share_one_probe(
    postroom: Postroom, router: ProviderRouter, clock: ManualClock
) -> None:
    await two_providers(postroom, monitoring={"failureThreshold": 1})
    fail(router, await chosen(router))
    clock.advance(31)
    picks = await asyncio.gather(*(pick(router) for _ in range(5)))
    assert sorted(picks) == ["backup"] * 4 + ["primary"]


# -- periodic checks and statistics --------------------------------------------------


async def test_periodic_checks_run_once_per_interval_across_processes(
    postroom: Postroom, clock: ManualClock
) -> None:
    await disable_all(postroom)
    provider_id = await add_provider(
        postroom, name="relay", type="fake", monitoring={"checkIntervalMs": 60_000}
    )
    routers = [postroom.provider_router(), postroom.provider_router()]
    calls: list[str] = []

    async def checked_at() -> Any:
        async with postroom.engine.connect() as conn:
            stmt = select(checks_t.c.checked_at).where(checks_t.c.provider_id == provider_id)
            return (await conn.execute(stmt)).scalar()

    async def maintain_all(expected: int) -> None:
        for n, r in enumerate(routers):
            await r.refresh(force=True)
            for c in r.candidates:

                async def check(n: int = n) -> HealthResult:
                    calls.append(f"router{n}")
                    return HealthResult(ok=True, latency_ms=1.0, detail="fine")

                c.provider.check = check  # type: ignore[method-assign]
            await r.maintain()
        for _ in range(100):  # the checks run as tasks; let them finish
            await asyncio.sleep(0.01)
            if len(calls) == expected and await checked_at() is not None:
                break

    try:
        await maintain_all(expected=1)
        assert calls == ["router0"]  # the second process found it claimed
        assert await checked_at() == clock.now()
        clock.advance(59)
        await maintain_all(expected=1)
        assert calls == ["router0"]
        clock.advance(2)
        await maintain_all(expected=2)
        assert len(calls) == 2
        assert await checked_at() == clock.now()
    finally:
        for r in routers:
            await r.aclose()


async def test_outcomes_are_written_in_batches_per_minute(
    postroom: Postroom, router: ProviderRouter, clock: ManualClock
) -> None:
    await disable_all(postroom)
    provider_id = await add_provider(postroom, name="relay", type="fake")
    for n in range(5):
        c = await chosen(router)
        router.report(c, error=None if n else ProviderTransientError("421"), latency_ms=10.0)
    async with postroom.engine.connect() as conn:
        assert (await conn.execute(select(stats_t))).all() == []  # nothing written per send
    await router.flush()
    clock.advance(60)
    router.report(await chosen(router), error=None, latency_ms=30.0)
    await router.flush()
    async with postroom.engine.connect() as conn:
        rows = (await conn.execute(select(stats_t).order_by(stats_t.c.minute))).all()
    assert [(r.provider_id, r.sent, r.failed, r.latency_samples) for r in rows] == [
        (provider_id, 4, 1, 4),
        (provider_id, 1, 0, 1),
    ]
    assert rows[0].last_error == "provider-transient: 421"
