"""Choose the provider for a message: the highest priority one that is healthy,
within its limits and able to take the message.

- **Health**: a circuit breaker per provider and process (``providers.breaker``).
  A provider whose breaker is open is skipped until its cool-down is over; then
  its ``check()`` must pass and one message goes through before it gets traffic
  again, which is how traffic fails back to a recovered primary. The breaker also
  opens at once when the provider cannot be reached (``ProviderUnavailable``), and
  when the cluster-wide health (``providers.health``: failed checks, recent
  failures of every process) says the provider is down, so a process does not
  spend messages' attempts to learn what the cluster already knows.
- **Connection slots**: each provider takes at most its pool size of sends at once
  (``providers.slots``); a send waits for a slot only ``slotWaitMs``, and every
  waiter goes back to routing when the breaker opens.
- **Limits**: ``rateLimit``/``hourly``/``daily`` are counted in the database for the
  whole cluster (``providers.ratelimit``); size, attachments and recipients are
  checked here. A message no enabled provider can ever take fails at once.
- **Failover**: when the previous attempt failed at a provider, the others are
  tried first. A provider that could not be reached is ``skip``ped and the next one
  is tried within the same attempt. When no provider can take a message now,
  :class:`NoProvider` says when to try again, and the worker defers the job without
  spending an attempt.
- **The development outbox** (``file``) stands in only for providers that never
  worked. With other providers enabled it takes mail while every one of them is
  unavailable (unreachable, breaker open, down cluster-wide) and none of them has
  ever delivered a message or passed a check: the setup of a first real provider,
  where mail would otherwise wait on a typo. Once one has worked, an outage is a
  real outage: mail waits in the queue and never lands in a local file, and being
  rate limited never sends mail to the outbox.
- **Statistics**: outcomes are added up in memory and written every few seconds by
  a background task, which also runs the periodic health checks
  (``providers.health``).

Provider rows are reloaded periodically, so providers added or changed through the
API reach running workers without a restart; instances are rebuilt (and their
breaker and limit state reset) only when their row changed. The candidates and
their state live in ``providers.candidates``; choosing, reporting and the upkeep
stay together here because they all read and change that state.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.clock import Clock
from postroom.db.engine import reader
from postroom.errors import (
    PostroomError,
    ProviderAuthError,
    ProviderError,
    ProviderUnavailable,
    UnsupportedFeature,
)
from postroom.providers import health, ratelimit, registry
from postroom.providers.base import HealthResult, OutgoingMessage
from postroom.providers.candidates import (
    ENABLED_IN_ORDER,
    Candidate,
    NoProvider,
    ProviderState,
    Wait,
    build,
    last_resort,
    routable,
    spec_of,
)
from postroom.providers.slots import Slots

__all__ = [
    "ENABLED_IN_ORDER",
    "Candidate",
    "NoProvider",
    "ProviderRouter",
    "ProviderState",
    "last_resort",
    "routable",
    "spec_of",
]

log = logging.getLogger(__name__)
#: how long to wait before trying a job again when no provider is enabled at all
NO_PROVIDER_DELAY_S = 15.0
#: how often statistics are written and due health checks looked for
MAINTENANCE_S = 5.0
#: how long a provider that asked us to slow down, without saying how long, is left alone
THROTTLE_S = 60.0
#: when to try again a provider skipped for a busy pool (its breaker is closed)
BUSY_RETRY_S = 5.0
#: how often old limit counters and statistics are deleted
PURGE_EVERY = timedelta(minutes=10)


class ProviderRouter:
    """The enabled providers of this process, and the choice among them."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        fernet: Fernet,
        context: registry.ProviderContext,
        clock: Clock,
        refresh_s: float = 5.0,
        maintenance_s: float = MAINTENANCE_S,
    ) -> None:
        self._engine = engine
        self._fernet = fernet
        self._context = context
        self._clock = clock
        self._refresh_s = refresh_s
        self._maintenance_s = maintenance_s
        self._loaded_at: datetime | None = None
        self._loading = asyncio.Lock()
        self._candidates: list[Candidate] = []
        #: the providers messages may go to: the file outbox only when nothing else is enabled
        self._pool: list[Candidate] = []
        #: the file outbox when other providers are enabled: only while they are unavailable
        self._last_resort: list[Candidate] = []
        #: providers the cluster-wide health says are down, and those that ever worked
        self._down: dict[uuid.UUID, health.Down] = {}
        self._proven: set[uuid.UUID] = set()
        self._broken: dict[uuid.UUID, str] = {}
        self._limiter = ratelimit.Limiter(engine)
        self._outcomes = health.OutcomeBuffer()
        self._maintenance: asyncio.Task[None] | None = None
        self._checks: dict[uuid.UUID, asyncio.Task[bool]] = {}
        self._next_claim: dict[uuid.UUID, datetime] = {}
        self._purged_at: datetime | None = None

    @property
    def candidates(self) -> list[Candidate]:
        return list(self._candidates)

    # -- provider rows -----------------------------------------------------------------

    def _fresh(self) -> bool:
        loaded = self._loaded_at
        return loaded is not None and (self._clock.now() - loaded).total_seconds() < self._refresh_s

    async def refresh(self, *, force: bool = False) -> None:
        """Reload the enabled providers when the last load is older than ``refresh_s``.

        Concurrent callers wait for the first load; later, while one caller reloads,
        the others go on with the providers loaded before.
        """
        if not force and (self._fresh() or (self._loading.locked() and self._loaded_at)):
            return
        async with self._loading:
            if not force and self._fresh():
                return
            await self._load()
            self._loaded_at = self._clock.now()

    async def _load(self) -> None:
        async with reader(self._engine).connect() as conn:
            rows = (await conn.execute(ENABLED_IN_ORDER)).all()
        current = {c.id: c for c in self._candidates}
        fresh: list[Candidate] = []
        for row in rows:
            old = current.pop(row.id, None)
            if old is not None and old.updated_at == row.updated_at:
                fresh.append(old)
                continue
            if old is not None:
                await old.provider.aclose()
            candidate = self._build(row)
            if candidate is not None:
                fresh.append(candidate)
        for gone in current.values():
            await gone.provider.aclose()
        self._candidates = fresh
        self._pool = routable(fresh, lambda c: c.spec.type)
        self._last_resort = last_resort(fresh, lambda c: c.spec.type)
        try:
            ids = [c.id for c in fresh]
            self._down = await health.down(self._engine, ids, self._clock.now())
            self._proven = await health.proven(self._engine, ids)
        except Exception:  # the breakers still work without the shared view
            log.exception("cannot read the providers' cluster-wide health")

    def _build(self, row: Any) -> Candidate | None:
        try:
            candidate = build(row, self._fernet, self._context)
        except Exception as exc:  # one bad row must not stop the others
            message = exc.message if isinstance(exc, PostroomError) else repr(exc)
            if self._broken.get(row.id) != message:
                log.error("provider %r is misconfigured: %s", row.name, message)
            self._broken[row.id] = message
            return None
        self._broken.pop(row.id, None)
        return candidate

    # -- choosing ----------------------------------------------------------------------

    async def acquire(
        self,
        message: OutgoingMessage,
        *,
        failed_provider_id: uuid.UUID | None = None,
        only: str | None = None,
        skip: Mapping[uuid.UUID, str] | None = None,
    ) -> Candidate | NoProvider:
        """The provider to send ``message`` through now, or why there is none.

        A slot under the provider's limits is taken for the message. When the
        previous attempt failed at ``failed_provider_id``, the other providers are
        tried first (failover); the failed one stays last in line. ``skip`` holds the
        providers this message could not reach just now (id -> why): they are not
        tried again and their reason is part of a :class:`NoProvider`. ``only`` (a
        provider's name or id) pins the message to that provider: the request
        chose it explicitly, so no other provider is tried, not even as failover.

        Raises:
            UnsupportedFeature: no enabled provider can ever take this message
                (too large, attachments, too many recipients).
        """
        await self.refresh()
        self._start_maintenance()
        pool = self._pool
        if only is not None:
            pool = [c for c in self._candidates if only in (c.spec.id, c.spec.name)]
        if not pool:
            return NoProvider(
                retry_after_s=NO_PROVIDER_DELAY_S,
                code="no-provider",
                reason=f"provider {only!r} is not enabled" if only else "no provider is enabled",
            )
        fitting = [c for c in pool if c.limits.refusal(message) is None]
        if not fitting:
            why = "; ".join(f"{c.spec.name}: {c.limits.refusal(message)}" for c in pool)
            raise UnsupportedFeature(f"no enabled provider can take this message ({why})")
        skip = skip or {}
        # stable sort: priority order, the provider that just failed last
        ordered = sorted(fitting, key=lambda c: c.id == failed_provider_id)
        waits = [self._skipped(c, skip[c.id]) for c in ordered if c.id in skip]
        for candidate in ordered:
            if candidate.id in skip:
                continue
            wait = await self._admit(candidate)
            if wait is None:
                return candidate
            waits.append(wait)
        if only is None and self._outbox_may_stand_in(waits):
            for outbox in self._last_resort:
                if outbox.id not in skip and await self._admit(outbox) is None:
                    log.warning(
                        "every provider is unavailable: mail goes to %r (%s)",
                        outbox.spec.name,
                        "; ".join(f"{w.candidate.spec.name}: {w.detail}" for w in waits),
                    )
                    return outbox
        return self._defer(waits)

    def _outbox_may_stand_in(self, waits: list[Wait]) -> bool:
        """Every provider is unavailable, and none of them ever worked."""
        return all(
            w.code == "unavailable"
            and w.candidate.id not in self._proven
            and w.candidate.state.alive_at is None
            for w in waits
        )

    def _skipped(self, c: Candidate, why: str) -> Wait:
        now = self._clock.now()
        breaker = c.state.breaker
        until = (
            breaker.wait_until(now)
            if breaker.state == "open"
            else now + timedelta(seconds=BUSY_RETRY_S)
        )
        return Wait(candidate=c, code="unavailable", until=until, detail=why)

    def slot(self, candidate: Candidate) -> _Slot:
        """Hold one of the provider's connection slots for a send (``providers.slots``).

        Raises (on entering):
            ProviderUnavailable: no slot in time, or the provider was taken out of
                rotation while waiting: nothing was sent.
        """
        return _Slot(candidate)

    def _cluster_down(self, c: Candidate, now: datetime) -> None:
        """Open ``c``'s breaker when the cluster found it down after our last sign of life."""
        evidence = self._down.get(c.id)
        state = c.state
        if evidence is None or (state.down_seen_at and evidence.at <= state.down_seen_at):
            return
        state.down_seen_at = evidence.at
        if state.alive_at is not None and evidence.at <= state.alive_at:
            return
        if state.breaker.seen_down(min(evidence.at, now)):
            self._opened(c, f"down cluster-wide: {evidence.reason}")

    async def _admit(self, c: Candidate) -> Wait | None:
        """Take ``c`` for one message (None), or say why not."""
        now = self._clock.now()
        state = c.state
        self._cluster_down(c, now)
        if state.throttled_until is not None and now < state.throttled_until:
            return Wait(
                candidate=c,
                code="rate-limited",
                until=state.throttled_until,
                detail="the provider asked to slow down",
            )
        gate = state.breaker.gate(now)
        if gate == "check":
            ok = await self._check(c)
            now = self._clock.now()
            if ok:
                state.alive_at = now
            state.breaker.checked_result(ok, now)
            gate = "probe" if ok else "wait"
        if gate == "wait":
            return Wait(
                candidate=c,
                code="unavailable",
                until=state.breaker.wait_until(now),
                detail=f"circuit {state.breaker.state} after failures",
            )
        if c.limits.windows:
            until = await self._limiter.take(c.id, state.allowance, now)
            if until is not None:
                return Wait(
                    candidate=c,
                    code="rate-limited",
                    until=max(until, state.allowance.spread(now)),
                    detail=f"limit reached until {until:%H:%M:%S}Z",
                    limited=True,
                )
        if gate == "probe":
            state.breaker.dispatched(now)
        return None

    def _defer(self, waits: list[Wait]) -> NoProvider:
        now = self._clock.now()
        first = min(waits, key=lambda w: w.until)
        if first.limited:
            first.candidate.state.allowance.count_deferral()
        reason = "; ".join(f"{w.candidate.spec.name}: {w.detail}" for w in waits)
        return NoProvider(
            retry_after_s=max(0.0, (first.until - now).total_seconds()),
            code="rate-limited" if any(w.code == "rate-limited" for w in waits) else "unavailable",
            reason=f"no provider can take the message now ({reason})",
        )

    def report(
        self, candidate: Candidate, *, error: BaseException | None, latency_ms: float
    ) -> None:
        """Tell the router how a send through ``candidate`` went (breaker, statistics)."""
        now = self._clock.now()
        breaker = candidate.state.breaker
        before = breaker.state
        if isinstance(error, ProviderUnavailable) and error.context.get("busy"):
            return  # only this process's connections were full: no verdict on the provider
        if error is None or health.outcome_of(error) == "rejected":
            candidate.state.alive_at = now
        if error is None:
            breaker.success(now)
            self._outcomes.record(candidate.id, now, "sent", latency_ms=latency_ms)
            return self._log_transition(candidate, before, None)
        detail = health.describe(error)
        outcome = health.outcome_of(error)
        if outcome == "rejected":  # the provider answered; the message was the problem
            breaker.success(now)
            self._outcomes.record(candidate.id, now, outcome, latency_ms=latency_ms)
        elif outcome == "throttled":
            breaker.success(now)
            retry_after = error.retry_after if isinstance(error, ProviderError) else None
            candidate.state.throttled_until = now + timedelta(seconds=retry_after or THROTTLE_S)
            self._outcomes.record(candidate.id, now, outcome, error=detail)
        else:
            # credentials refused, or not reachable at all: no point in more tries
            if isinstance(error, ProviderAuthError | ProviderUnavailable):
                breaker.trip(now)
            else:
                breaker.failure(now)
            self._outcomes.record(candidate.id, now, outcome, error=detail)
        self._log_transition(candidate, before, detail)

    def _log_transition(self, c: Candidate, before: str, detail: str | None) -> None:
        after = c.state.breaker.state
        if after == before:
            return
        if after == "open":
            self._opened(c, detail)
        elif after == "closed":
            log.info("provider %r: circuit closed, traffic resumes", c.spec.name)

    def _opened(self, c: Candidate, detail: str | None) -> None:
        """The breaker opened: say so, and send the messages waiting for a slot back."""
        retry = c.state.breaker.retry_at
        log.warning(
            "provider %r: circuit opened until %s: %s",
            c.spec.name,
            f"{retry:%H:%M:%S}Z" if retry else "?",
            detail,
        )
        if c.state.slots is not None:
            c.state.slots.abandon(f"circuit open: {detail}")

    # -- checks, statistics, housekeeping ----------------------------------------------

    async def check(self, candidate: Candidate) -> HealthResult:
        """Run the provider's ``check()`` (bounded in time, never raises) and record it."""
        result = await health.run_check(candidate.provider)
        try:
            await health.record_check(self._engine, candidate.id, result, self._clock.now())
        except Exception:
            log.exception("provider %r: cannot record its check", candidate.spec.name)
        return result

    async def _check(self, candidate: Candidate) -> bool:
        return (await self.check(candidate)).ok

    async def _periodic_check(self, candidate: Candidate) -> bool:
        try:
            return await self._check(candidate)
        finally:
            self._checks.pop(candidate.id, None)

    async def flush(self) -> None:
        """Write the outcomes recorded so far to the database."""
        await self._outcomes.flush(self._engine)

    async def maintain(self) -> None:
        """Write statistics, start the health checks that are due, purge old counters."""
        await self.refresh()
        await self.flush()
        now = self._clock.now()
        for c in self._candidates:
            interval = c.state.breaker.settings.check_interval_s
            if interval <= 0 or c.id in self._checks or now < self._next_claim.get(c.id, now):
                continue
            due = await health.claim_check(self._engine, c.id, now, interval)
            self._next_claim[c.id] = due or now + timedelta(seconds=interval)
            if due is None:
                self._checks[c.id] = asyncio.create_task(self._periodic_check(c))
        if self._purged_at is None or now - self._purged_at >= PURGE_EVERY:
            self._purged_at = now
            rate_windows = [
                (c.id, w) for c in self._candidates for w in c.limits.windows if w.kind == "rate"
            ]
            await ratelimit.purge(self._engine, rate_windows, now)
            await health.purge(self._engine, now)

    def _start_maintenance(self) -> None:
        if self._maintenance is None and self._maintenance_s > 0:
            self._maintenance = asyncio.create_task(self._maintain_forever())

    async def _maintain_forever(self) -> None:
        while True:
            await asyncio.sleep(self._maintenance_s)
            try:
                await self.maintain()
            except Exception:  # the next round tries again
                log.exception("provider maintenance failed")

    async def aclose(self) -> None:
        tasks = [t for t in (self._maintenance, *self._checks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._maintenance = None
        try:
            await self.flush()
        except Exception:
            log.exception("provider statistics could not be written at shutdown")
        for candidate in self._candidates:
            await candidate.provider.aclose()
        self._candidates = []
        self._pool = []
        self._last_resort = []


class _Slot:
    """``ProviderRouter.slot``: a plain async context manager, entered once a message
    (a generator-based one costs several times more)."""

    __slots__ = ("_candidate", "_held")

    def __init__(self, candidate: Candidate) -> None:
        self._candidate = candidate
        self._held: Slots | None = None

    async def __aenter__(self) -> None:
        slots = self._candidate.state.slots
        if slots is None:
            return
        try:
            await slots.acquire()
        except ProviderUnavailable:
            self._candidate.state.breaker.withdrawn()
            raise
        self._held = slots

    async def __aexit__(self, *exc: object) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.release()
