"""Provider limits that hold across every worker process and host.

The ``limits`` JSON of a provider (every key optional)::

    {
      "rateLimit": 100,            # at most this many messages per rateDelta window
      "rateDelta": 60000,          # the window in milliseconds (default 1000)
      "hourly": 5000,              # at most this many per UTC clock hour
      "daily": 50000,              # at most this many per UTC day
      "maxMessageBytes": 10485760, # larger messages go to another provider
      "attachments": false,        # messages with attachments go to another provider
      "maxRecipients": 50          # messages with more recipients go to another provider
    }

The three counted limits are fixed windows aligned to the Unix epoch, the same
windows in every process: ``rateDelta`` windows start at multiples of
``rateDelta``, hourly and daily ones at UTC hours and midnights. As with
Nodemailer's ``rateLimit``, a burst at the end of one window and another at the
start of the next may put up to twice the limit into one ``rateDelta`` span that
straddles the boundary; each window itself never exceeds its limit.

Counters live in ``provider_limit_counters``. A process reserves slots with one
``INSERT … ON CONFLICT DO UPDATE … RETURNING`` for every window it needs slots in,
and for large limits takes a small batch at once (:attr:`Window.batch`), so a busy
worker pays one statement per batch rather than per message. A provider without
counted limits never touches the database here.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, case, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from postroom.db.models import ProviderLimitCounter, ProviderStat
from postroom.db.upsert import upsert
from postroom.errors import ConfigError
from postroom.providers.base import OutgoingMessage

log = logging.getLogger(__name__)
counters_t = cast(Table, ProviderLimitCounter.__table__)
stats_t = cast(Table, ProviderStat.__table__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
#: the keys ``limits`` may have; anything else is a typo and refused
LIMIT_KEYS = frozenset(
    {"rateLimit", "rateDelta", "hourly", "daily", "maxMessageBytes", "attachments", "maxRecipients"}
)
#: slots reserved per statement: at most this many ...
MAX_BATCH = 32
#: ... and at most this share of the window's limit, so idle processes hold little
BATCH_SHARE = 50
#: when the counters cannot be reached, the provider is treated as full this long
UNREACHABLE_BACKOFF = timedelta(seconds=5)


@dataclass(frozen=True, kw_only=True, slots=True)
class Window:
    """One counted limit: at most ``cap`` messages per window of ``length_ms``."""

    kind: str
    cap: int
    length_ms: int

    def start(self, now: datetime) -> datetime:
        ms = (now - EPOCH) // timedelta(milliseconds=1)
        return EPOCH + timedelta(milliseconds=ms - ms % self.length_ms)

    def end(self, start: datetime) -> datetime:
        return start + timedelta(milliseconds=self.length_ms)

    @property
    def batch(self) -> int:
        return max(1, min(MAX_BATCH, self.cap // BATCH_SHARE))


def _count(raw: Mapping[str, Any], key: str, *, minimum: int = 1) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(
            f"limits.{key} must be a whole number >= {minimum}, not {value!r}",
            field=f"limits.{key}",
        )
    return value


@dataclass(frozen=True, kw_only=True, slots=True)
class Limits:
    """A provider's parsed ``limits``."""

    windows: tuple[Window, ...] = ()
    max_message_bytes: int | None = None
    attachments: bool = True
    max_recipients: int | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None) -> Limits:
        """Limits from the stored JSON; ConfigError names the offending key."""
        raw = raw or {}
        unknown = sorted(set(raw) - LIMIT_KEYS)
        if unknown:
            known = ", ".join(sorted(LIMIT_KEYS))
            raise ConfigError(
                f"unknown limits key {unknown[0]!r} (known: {known})", field=f"limits.{unknown[0]}"
            )
        windows: list[Window] = []
        rate = _count(raw, "rateLimit")
        delta = _count(raw, "rateDelta", minimum=100)
        if delta is not None and delta > DAY_MS:
            raise ConfigError("limits.rateDelta must be at most one day", field="limits.rateDelta")
        if rate is not None:
            windows.append(Window(kind="rate", cap=rate, length_ms=delta or 1000))
        elif delta is not None:
            raise ConfigError("limits.rateDelta needs limits.rateLimit", field="limits.rateDelta")
        for kind, length in (("hourly", HOUR_MS), ("daily", DAY_MS)):
            cap = _count(raw, kind)
            if cap is not None:
                windows.append(Window(kind=kind, cap=cap, length_ms=length))
        attachments = raw.get("attachments", True)
        if not isinstance(attachments, bool):
            raise ConfigError(
                "limits.attachments must be true or false", field="limits.attachments"
            )
        return cls(
            windows=tuple(windows),
            max_message_bytes=_count(raw, "maxMessageBytes"),
            attachments=attachments,
            max_recipients=_count(raw, "maxRecipients"),
        )

    def refusal(self, message: OutgoingMessage) -> str | None:
        """Why this provider cannot take ``message`` at all (None: it can)."""
        size, largest = message.size, self.max_message_bytes
        if largest is not None and size > largest:
            return f"the message is {size} bytes, over maxMessageBytes {largest}"
        if not self.attachments and message.attachments:
            return "the message has attachments and this provider takes none"
        recipients, most = len(message.envelope_to), self.max_recipients
        if most is not None and recipients > most:
            return f"the message has {recipients} recipients, over maxRecipients {most}"
        return None


@dataclass(kw_only=True, slots=True)
class Allowance:
    """What one process holds of one provider's windows: reserved slots, and a block.

    Slots are only good in the window they were reserved in; leftovers of a past
    window are dropped (they were counted, so the error is on the safe side).
    """

    windows: tuple[Window, ...]
    #: kind -> (window start, slots still held)
    held: dict[str, tuple[datetime, int]] = field(default_factory=dict)
    #: every slot of some window is taken until then: no need to ask the database
    blocked_until: datetime | None = None
    blocked_window: Window | None = None
    #: deferrals handed out during the current block, to spread them over windows
    deferred: int = 0
    #: one reservation at a time: concurrent sends would each reserve a batch and
    #: overwrite each other's, leaving slots counted in the database that nobody uses
    reserving: asyncio.Lock = field(default_factory=asyncio.Lock)

    def missing(self, now: datetime) -> list[tuple[Window, datetime]]:
        """Windows this process holds no slot in for ``now``."""
        out = []
        for window in self.windows:
            start = window.start(now)
            held = self.held.get(window.kind)
            if held is None or held[0] != start or held[1] <= 0:
                out.append((window, start))
        return out

    def take_one(self) -> None:
        for kind, (start, slots) in self.held.items():
            self.held[kind] = (start, slots - 1)

    def block(self, until: datetime, window: Window) -> None:
        if self.blocked_until != until:
            self.deferred = 0
        self.blocked_until, self.blocked_window = until, window

    def spread(self, now: datetime) -> datetime:
        """When a message deferred now should come back.

        The n-th deferral of a block goes to the window its turn falls in, given
        the limit, so that a large backlog does not wake up all at once at each
        window start only to be deferred again. :meth:`count_deferral` moves on.
        """
        if self.blocked_until is None or self.blocked_window is None:
            return now
        window = self.blocked_window
        ahead = self.deferred // window.cap
        return self.blocked_until + timedelta(milliseconds=window.length_ms * ahead)

    def count_deferral(self) -> None:
        self.deferred += 1


class Limiter:
    """Takes slots for messages, from this process's allowance or the shared counters."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def take(
        self, provider_id: uuid.UUID, allowance: Allowance, now: datetime
    ) -> datetime | None:
        """Take one slot in every window of the provider: None when taken, else when
        to try again (the end of the first full window)."""
        if allowance.blocked_until is not None:
            if now < allowance.blocked_until:
                return allowance.blocked_until
            allowance.blocked_until = allowance.blocked_window = None
        if not allowance.missing(now):
            allowance.take_one()
            return None
        async with allowance.reserving:
            return await self._reserve(provider_id, allowance, now)

    async def _reserve(
        self, provider_id: uuid.UUID, allowance: Allowance, now: datetime
    ) -> datetime | None:
        if allowance.blocked_until is not None and now < allowance.blocked_until:
            return allowance.blocked_until  # another send found the window full meanwhile
        needed = allowance.missing(now)  # another send may have reserved meanwhile
        if needed:
            try:
                granted = await reserve(
                    self._engine, provider_id, [(w, s, w.batch) for w, s in needed]
                )
            except Exception:  # fail closed: no slot without the shared count
                log.exception("provider %s: cannot reserve limit slots", provider_id)
                return now + UNREACHABLE_BACKOFF
            full: list[tuple[datetime, Window]] = []
            for window, start in needed:
                got = granted.get(window.kind, 0)
                allowance.held[window.kind] = (start, got)
                if got <= 0:
                    full.append((window.end(start), window))
            if full:
                until, window = max(full, key=lambda item: item[0])
                allowance.block(until, window)
                return until
        allowance.take_one()
        return None


async def reserve(
    engine: AsyncEngine,
    provider_id: uuid.UUID,
    wanted: Sequence[tuple[Window, datetime, int]],
) -> dict[str, int]:
    """Reserve up to ``n`` slots in each ``(window, start, n)``; slots granted per kind.

    One statement: a window row is created with the request, or its ``used`` grows
    by what still fits under ``cap``. Rows are written in one fixed order (the
    windows' order) so that concurrent reservations cannot deadlock.
    """
    rows = [
        {
            "provider_id": provider_id,
            "kind": window.kind,
            "window_start": start,
            "cap": window.cap,
            "used": min(n, window.cap),
            "granted": min(n, window.cap),
        }
        for window, start, n in wanted
    ]

    def grow(t: Table, ex: Any) -> dict[str, Any]:
        fits = case(
            (t.c.used >= ex.cap, 0),
            (t.c.used + ex.granted <= ex.cap, ex.granted),
            else_=ex.cap - t.c.used,
        )
        return {"used": t.c.used + fits, "granted": fits, "cap": ex.cap}

    stmt = upsert(
        engine.dialect.name,
        counters_t,
        rows,
        keys=("provider_id", "kind", "window_start"),
        set_=grow,
    ).returning(counters_t.c.kind, counters_t.c.granted)
    async with engine.begin() as conn:
        result = (await conn.execute(stmt)).all()
    return {row.kind: int(row.granted) for row in result}


@dataclass(frozen=True, kw_only=True, slots=True)
class WindowUsage:
    """How full one of a provider's windows is now."""

    kind: str
    limit: int
    #: messages sent in the window (see :func:`usage`)
    used: int
    #: slots reserved in the window by every process, sent or still held for sends to come
    reserved: int
    window_ms: int
    resets_at: datetime


async def usage(
    conn: AsyncConnection, limits: Mapping[uuid.UUID, Limits], now: datetime
) -> dict[uuid.UUID, list[WindowUsage]]:
    """The current window of every counted limit, for each provider in ``limits``.

    ``reserved`` is the counter routing enforces: processes reserve slots a batch
    at a time, so it runs ahead of what was sent. ``used`` counts the messages sent,
    from the per-minute statistics (written every few seconds), for windows that are
    whole minutes; a shorter window has no minute to count in, so it shows ``reserved``.
    """
    current = {(pid, w.kind): (w, w.start(now)) for pid, lim in limits.items() for w in lim.windows}
    used: dict[tuple[uuid.UUID, str], int] = {}
    sent = await _sent(conn, current)
    if current:
        conds = [
            and_(
                counters_t.c.provider_id == pid,
                counters_t.c.kind == kind,
                counters_t.c.window_start == start,
            )
            for (pid, kind), (_, start) in current.items()
        ]
        stmt = select(counters_t.c.provider_id, counters_t.c.kind, counters_t.c.used).where(
            or_(*conds)
        )
        used = {(r.provider_id, r.kind): int(r.used) for r in (await conn.execute(stmt)).all()}
    out: dict[uuid.UUID, list[WindowUsage]] = {pid: [] for pid in limits}
    for (pid, kind), (window, start) in current.items():
        reserved = min(used.get((pid, kind), 0), window.cap)
        out[pid].append(
            WindowUsage(
                kind=kind,
                limit=window.cap,
                used=sent.get((pid, kind), reserved),
                reserved=reserved,
                window_ms=window.length_ms,
                resets_at=window.end(start),
            )
        )
    return out


async def _sent(
    conn: AsyncConnection, current: Mapping[tuple[uuid.UUID, str], tuple[Window, datetime]]
) -> dict[tuple[uuid.UUID, str], int]:
    """Messages sent in each current window that is a whole number of minutes."""
    whole = {key: ws for key, ws in current.items() if ws[0].length_ms % MINUTE_MS == 0}
    if not whole:
        return {}
    ids = {pid for pid, _ in whole}
    since = min(start for _, start in whole.values())
    stmt = select(stats_t.c.provider_id, stats_t.c.minute, stats_t.c.sent).where(
        stats_t.c.provider_id.in_(ids), stats_t.c.minute >= since
    )
    out = dict.fromkeys(whole, 0)
    for row in (await conn.execute(stmt)).all():
        for (pid, kind), (_, start) in whole.items():
            if pid == row.provider_id and row.minute >= start:
                out[(pid, kind)] += int(row.sent)
    return out


async def purge(
    engine: AsyncEngine, rate_windows: Iterable[tuple[uuid.UUID, Window]], now: datetime
) -> None:
    """Drop counters of windows that are over: rate windows of each provider before
    its current one, every counter older than two days."""
    async with engine.begin() as conn:
        for provider_id, window in rate_windows:
            await conn.execute(
                delete(counters_t).where(
                    counters_t.c.provider_id == provider_id,
                    counters_t.c.kind == window.kind,
                    counters_t.c.window_start < window.start(now),
                )
            )
        await conn.execute(
            delete(counters_t).where(counters_t.c.window_start < now - timedelta(days=2))
        )
