"""Provider health as every process sees it: outcomes, checks, and a status.

Workers add up their send outcomes per provider and minute in memory
(:class:`OutcomeBuffer`) and write them every few seconds with one upsert, so
statistics cost no write per message. Health checks are claimed through
``provider_checks`` so that a fleet of workers checks each provider at most once
per interval. :func:`summarize` turns the last hour of both into what the API
shows; the rules are in :func:`status_of`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import Table, and_, case, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.db.engine import reader
from postroom.db.models import EmailProvider, ProviderCheck, ProviderStat
from postroom.db.upsert import upsert
from postroom.errors import MessageError, PostroomError, ProviderError, ProviderRejected
from postroom.providers import ratelimit
from postroom.providers.base import HealthResult, Provider

log = logging.getLogger(__name__)
stats_t = cast(Table, ProviderStat.__table__)
checks_t = cast(Table, ProviderCheck.__table__)
providers_t = cast(Table, EmailProvider.__table__)

Status = Literal["healthy", "degraded", "down"]
Outcome = Literal["sent", "failed", "throttled", "rejected"]

#: the status looks at this much recent history
RECENT = timedelta(minutes=5)
#: down: at least this many recent failures and nothing went through since
DOWN_AFTER_FAILURES = 3
#: degraded: at least this share of recent sends failed
DEGRADED_SHARE = 0.1
#: a ``check()`` that takes longer than this failed
CHECK_TIMEOUT_S = 30.0
#: statistics are kept this long
KEEP_STATS = timedelta(days=7)
#: the counting fields of a minute, summed when minutes are merged
_SUMMED = ("sent", "failed", "throttled", "rejected", "latency_ms_total", "latency_samples")


def minute_of(when: datetime) -> datetime:
    return when.replace(second=0, microsecond=0)


def outcome_of(error: BaseException | None) -> Outcome:
    """How a send's result counts: a refusal of the message is the provider answering;
    a "slow down" is throttling; anything else that went wrong counts against it."""
    if error is None:
        return "sent"
    if isinstance(error, ProviderRejected | MessageError):
        return "rejected"
    if isinstance(error, ProviderError) and error.context.get("rate_limited"):
        return "throttled"
    return "failed"


def describe(error: BaseException) -> str:
    """``<code>: <message>`` of an error, for statistics and logs."""
    if isinstance(error, PostroomError):
        return f"{error.code}: {error.message}"
    return f"internal: {type(error).__name__}"


@dataclass(slots=True)
class _Minute:
    sent: int = 0
    failed: int = 0
    throttled: int = 0
    rejected: int = 0
    latency_ms_total: float = 0.0
    latency_samples: int = 0
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_error: str | None = None


class OutcomeBuffer:
    """Send outcomes of this process, per provider and minute, until flushed."""

    def __init__(self) -> None:
        self._minutes: dict[tuple[uuid.UUID, datetime], _Minute] = {}

    def __len__(self) -> int:
        return len(self._minutes)

    def record(
        self,
        provider_id: uuid.UUID,
        at: datetime,
        outcome: Outcome,
        *,
        latency_ms: float | None = None,
        error: str | None = None,
    ) -> None:
        m = self._minutes.setdefault((provider_id, minute_of(at)), _Minute())
        if outcome == "sent":
            m.sent += 1
        elif outcome == "rejected":
            m.rejected += 1
        elif outcome == "throttled":
            m.throttled += 1
        else:
            m.failed += 1
        if latency_ms is not None:
            m.latency_ms_total += latency_ms
            m.latency_samples += 1
        if outcome in ("sent", "rejected"):  # the provider answered
            m.last_success_at = at
        else:
            m.last_failure_at, m.last_error = at, (error or "")[:1000] or None

    async def flush(self, engine: AsyncEngine) -> None:
        """Add the buffered outcomes to ``provider_stats``; kept for the next try on error."""
        if not self._minutes:
            return
        batch, self._minutes = self._minutes, {}
        try:
            await _add(engine, batch)
        except IntegrityError:  # a provider was deleted meanwhile: drop its outcomes
            async with reader(engine).connect() as conn:
                ids = {pid for pid, _ in batch}
                stmt = select(providers_t.c.id).where(providers_t.c.id.in_(ids))
                known = set((await conn.execute(stmt)).scalars())
            await _add(engine, {k: v for k, v in batch.items() if k[0] in known})
        except Exception:
            for key, m in batch.items():  # merge back, newest outcomes win the "last" fields
                self._minutes[key] = _merge(m, self._minutes.get(key))
            raise


def _merge(old: _Minute, new: _Minute | None) -> _Minute:
    if new is None:
        return old
    out = _Minute(**{name: getattr(old, name) + getattr(new, name) for name in _SUMMED})
    out.last_success_at = new.last_success_at or old.last_success_at
    out.last_failure_at = new.last_failure_at or old.last_failure_at
    out.last_error = new.last_error if new.last_failure_at else old.last_error
    return out


async def _add(engine: AsyncEngine, batch: Mapping[tuple[uuid.UUID, datetime], _Minute]) -> None:
    if not batch:
        return
    rows = [
        {"provider_id": pid, "minute": minute, **{f.name: getattr(m, f.name) for f in fields(m)}}
        for (pid, minute), m in sorted(batch.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))
    ]

    def later(col: Any, new: Any) -> Any:
        return case((new.is_(None), col), (col.is_(None), new), (new > col, new), else_=col)

    def add(t: Table, ex: Any) -> dict[str, Any]:
        values: dict[str, Any] = {name: t.c[name] + ex[name] for name in _SUMMED}
        values["last_success_at"] = later(t.c.last_success_at, ex.last_success_at)
        values["last_failure_at"] = later(t.c.last_failure_at, ex.last_failure_at)
        newer_failure = and_(
            ex.last_failure_at.is_not(None),
            (t.c.last_failure_at.is_(None)) | (ex.last_failure_at >= t.c.last_failure_at),
        )
        values["last_error"] = case((newer_failure, ex.last_error), else_=t.c.last_error)
        return values

    stmt = upsert(engine.dialect.name, stats_t, rows, keys=("provider_id", "minute"), set_=add)
    async with engine.begin() as conn:
        await conn.execute(stmt)


# -- checks ----------------------------------------------------------------------------


async def run_check(provider: Provider) -> HealthResult:
    """``provider.check()``, bounded in time; never raises."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await provider.check()
    except TimeoutError:
        return HealthResult(ok=False, detail=f"no answer within {CHECK_TIMEOUT_S:g}s")
    except Exception as exc:
        detail = exc.message if isinstance(exc, PostroomError) else type(exc).__name__
        return HealthResult(ok=False, detail=detail)


async def claim_check(
    engine: AsyncEngine, provider_id: uuid.UUID, now: datetime, interval_s: float
) -> datetime | None:
    """Claim the provider's check if nobody started one for ``interval_s``: None when
    this process should check it now, else when the next check is due."""
    interval = timedelta(seconds=interval_s)
    stmt = upsert(
        engine.dialect.name,
        checks_t,
        [{"provider_id": provider_id, "started_at": now}],
        keys=("provider_id",),
        set_=lambda _t, ex: {"started_at": ex.started_at},
        where=lambda t: t.c.started_at <= now - interval,
    ).returning(checks_t.c.provider_id)
    async with engine.begin() as conn:
        if (await conn.execute(stmt)).first() is not None:
            return None
        started = (
            await conn.execute(
                select(checks_t.c.started_at).where(checks_t.c.provider_id == provider_id)
            )
        ).scalar()
    return (started or now) + interval


async def record_check(
    engine: AsyncEngine, provider_id: uuid.UUID, result: HealthResult, now: datetime
) -> None:
    row = {
        "provider_id": provider_id,
        "started_at": now,
        "checked_at": now,
        "ok": result.ok,
        "latency_ms": result.latency_ms,
        "detail": result.detail[:1000],
    }
    stmt = upsert(
        engine.dialect.name,
        checks_t,
        [row],
        keys=("provider_id",),
        set_=lambda _t, ex: {k: ex[k] for k in ("checked_at", "ok", "latency_ms", "detail")},
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(stmt)
    except IntegrityError:
        log.info("provider %s was deleted before its check was recorded", provider_id)


async def purge(engine: AsyncEngine, now: datetime) -> None:
    async with engine.begin() as conn:
        await conn.execute(delete(stats_t).where(stats_t.c.minute < now - KEEP_STATS))


# -- what the API shows ----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class CheckSummary:
    at: datetime
    ok: bool
    latency_ms: float | None
    detail: str


@dataclass(frozen=True, kw_only=True, slots=True)
class HealthSummary:
    status: Status
    reason: str
    sent_last_hour: int = 0
    failed_last_hour: int = 0
    throttled_last_hour: int = 0
    rejected_last_hour: int = 0
    avg_latency_ms: float | None = None
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_error: str | None = None
    check: CheckSummary | None = None
    usage: list[ratelimit.WindowUsage] = field(default_factory=list)


@dataclass(kw_only=True, slots=True)
class _Tally:
    hour: _Minute = field(default_factory=_Minute)
    recent: _Minute = field(default_factory=_Minute)


async def summarize(
    engine: AsyncEngine, limits: Mapping[uuid.UUID, ratelimit.Limits], now: datetime
) -> dict[uuid.UUID, HealthSummary]:
    """The health of each provider in ``limits``, from what every process recorded."""
    ids = list(limits)
    tallies = {pid: _Tally() for pid in ids}
    checks: dict[uuid.UUID, CheckSummary] = {}
    if not ids:
        return {}
    recent_from = minute_of(now - RECENT) + timedelta(minutes=1)
    async with reader(engine).connect() as conn:
        stmt = (
            select(stats_t)
            .where(stats_t.c.provider_id.in_(ids), stats_t.c.minute > now - timedelta(hours=1))
            .order_by(stats_t.c.minute)
        )
        for row in (await conn.execute(stmt)).all():
            tally = tallies[row.provider_id]
            parts = (tally.hour, tally.recent) if row.minute >= recent_from else (tally.hour,)
            for part in parts:
                _accumulate(part, row)
        stmt = select(checks_t).where(
            checks_t.c.provider_id.in_(ids), checks_t.c.checked_at.is_not(None)
        )
        for row in (await conn.execute(stmt)).all():
            checks[row.provider_id] = CheckSummary(
                at=row.checked_at,
                ok=bool(row.ok),
                latency_ms=row.latency_ms,
                detail=row.detail or "",
            )
        usage = await ratelimit.usage(conn, limits, now)
    out = {}
    for pid in ids:
        hour = tallies[pid].hour
        status, reason = status_of(tallies[pid].recent, hour, checks.get(pid), usage[pid], now)
        out[pid] = HealthSummary(
            status=status,
            reason=reason,
            sent_last_hour=hour.sent,
            failed_last_hour=hour.failed,
            throttled_last_hour=hour.throttled,
            rejected_last_hour=hour.rejected,
            avg_latency_ms=(
                round(hour.latency_ms_total / hour.latency_samples, 1)
                if hour.latency_samples
                else None
            ),
            last_success_at=hour.last_success_at,
            last_failure_at=hour.last_failure_at,
            last_error=hour.last_error,
            check=checks.get(pid),
            usage=usage[pid],
        )
    return out


@dataclass(frozen=True, kw_only=True, slots=True)
class Down:
    """A provider the cluster-wide health says is down: since when, and why."""

    at: datetime
    reason: str


async def down(engine: AsyncEngine, ids: list[uuid.UUID], now: datetime) -> dict[uuid.UUID, Down]:
    """The providers among ``ids`` whose status is ``down`` (:func:`status_of`), with the
    time of the latest evidence (failure or failed check), so routing can skip them."""
    out: dict[uuid.UUID, Down] = {}
    summaries = await summarize(engine, {pid: ratelimit.Limits() for pid in ids}, now)
    for pid, summary in summaries.items():
        if summary.status != "down":
            continue
        times = [summary.last_failure_at]
        if summary.check is not None and not summary.check.ok:
            times.append(summary.check.at)
        at = max((t for t in times if t is not None), default=now)
        out[pid] = Down(at=at, reason=summary.reason)
    return out


async def proven(engine: AsyncEngine, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """The providers among ``ids`` that ever worked, as far as the statistics kept
    (:data:`KEEP_STATS`) and the latest check tell: a message went through or was
    answered, or the check passed."""
    if not ids:
        return set()
    answered = (stats_t.c.sent > 0) | (stats_t.c.rejected > 0)
    async with reader(engine).connect() as conn:
        sent = select(stats_t.c.provider_id).where(stats_t.c.provider_id.in_(ids), answered)
        checked = select(checks_t.c.provider_id).where(
            checks_t.c.provider_id.in_(ids), checks_t.c.ok.is_(True)
        )
        rows = await conn.execute(sent.union(checked))
        return set(rows.scalars())


def _accumulate(m: _Minute, row: Any) -> None:
    """Add a ``provider_stats`` row (rows come oldest first)."""
    m.sent += row.sent
    m.failed += row.failed
    m.throttled += row.throttled
    m.rejected += row.rejected
    m.latency_ms_total += row.latency_ms_total
    m.latency_samples += row.latency_samples
    m.last_success_at = row.last_success_at or m.last_success_at
    if row.last_failure_at is not None:
        m.last_failure_at, m.last_error = row.last_failure_at, row.last_error


def status_of(
    recent: _Minute,
    hour: _Minute,
    check: CheckSummary | None,
    usage: list[ratelimit.WindowUsage],
    now: datetime,
) -> tuple[Status, str]:
    """``down``: the latest evidence is failure (recent failures with nothing through
    since, an auth refusal, or a failed check); ``degraded``: some recent failures,
    throttling, or a limit reached; ``healthy`` otherwise."""
    good = [t for t in (hour.last_success_at, check.at if check and check.ok else None) if t]
    latest_good = max(good) if good else None
    failing = recent.last_failure_at is not None and (
        latest_good is None or recent.last_failure_at > latest_good
    )
    auth = (recent.last_error or "").startswith("provider-auth")
    if failing and (recent.failed >= DOWN_AFTER_FAILURES or auth):
        return "down", (
            f"{recent.failed} failed sends in the last 5 minutes and none went through since: "
            f"{recent.last_error}"
        )
    stale = now - timedelta(hours=1)
    if (
        check
        and not check.ok
        and check.at > stale
        and (latest_good is None or check.at > latest_good)
    ):
        return "down", f"the last check failed: {check.detail}"
    full = [u for u in usage if u.reserved >= u.limit]
    if full:
        u = max(full, key=lambda u: u.resets_at)
        return "degraded", (
            f"rate limited: {u.kind} limit of {u.limit} reached, resets at "
            f"{u.resets_at:%Y-%m-%dT%H:%M:%SZ}"
        )
    if recent.throttled:
        return "degraded", f"the provider throttled {recent.throttled} sends in the last 5 minutes"
    tried = recent.sent + recent.failed
    if recent.failed and recent.failed >= DEGRADED_SHARE * tried:
        return "degraded", (
            f"{recent.failed} of {tried} sends failed in the last 5 minutes: {recent.last_error}"
        )
    if hour.sent:
        return "healthy", f"{hour.sent} sent in the last hour"
    if check and check.ok:
        return "healthy", f"the last check passed: {check.detail}"
    return "healthy", "no traffic in the last hour"
