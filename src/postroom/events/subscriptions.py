"""Which event kinds some enabled endpoint wants: a per-process cache, so that the
send and tracking paths spend nothing on webhooks when no endpoint is registered.

The set is read at most once per ``REFRESH_S`` per engine (one small query, in
whichever transaction asks next) and dropped at once when this process changes
an endpoint. Another process sees a change within ``REFRESH_S``: an endpoint
receives the events that happen from then on (events are not written for kinds
nobody wanted when they happened). Deliveries are fanned out by the dispatcher
against the endpoints enabled at that moment, so a stale "wanted" costs only an
outbox row that fans out to nobody.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import Pool

from postroom.db.models import WebhookEndpoint
from postroom.events.catalog import PREFIX, EventKind

endpoints_t = cast(Table, WebhookEndpoint.__table__)

#: how long another process's endpoint change may go unseen
REFRESH_S = 2.0

ALL_KINDS = frozenset(k.value for k in EventKind)


@dataclass(slots=True)
class _Entry:
    kinds: frozenset[str]
    expires: float


#: keyed by the engine's pool, which ``db.engine.reader``'s engine shares
_cache: weakref.WeakKeyDictionary[Pool, _Entry] = weakref.WeakKeyDictionary()
#: the monotonic clock the cache runs on (tests may replace it)
monotonic: Callable[[], float] = time.monotonic


def kinds_of(event_types: Any) -> frozenset[str]:
    """The kinds an endpoint's ``event_types`` filter admits (empty: all)."""
    if not event_types:
        return ALL_KINDS
    return frozenset(str(t).removeprefix(PREFIX) for t in event_types)


async def wanted(conn: AsyncConnection) -> frozenset[str]:
    """The kinds at least one enabled endpoint receives (empty: write nothing)."""
    pool = conn.sync_engine.pool
    entry = _cache.get(pool)
    now = monotonic()
    if entry is not None and now < entry.expires:
        return entry.kinds
    rows = await conn.execute(select(endpoints_t.c.event_types).where(endpoints_t.c.enabled))
    kinds: frozenset[str] = frozenset()
    for (types,) in rows:
        kinds |= kinds_of(types)
    _cache[pool] = _Entry(kinds, now + REFRESH_S)
    return kinds


def cached(engine: AsyncEngine) -> frozenset[str] | None:
    """:func:`wanted` while its cached answer is fresh, else None: no connection needed."""
    entry = _cache.get(engine.sync_engine.pool)
    return entry.kinds if entry is not None and monotonic() < entry.expires else None


def invalidate(engine: AsyncEngine) -> None:
    """Forget the cached set: this process changed an endpoint."""
    _cache.pop(engine.sync_engine.pool, None)
