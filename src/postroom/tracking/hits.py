"""Opens and clicks, written a batch at a time (see :mod:`postroom.db.groupcommit`).

A request brings what it alone can tell: the token's email and recipient, the
time, the user agent and a machine reason read from the request (a proxy's agent,
a prefetch, a HEAD). A batch then needs three reads whatever its size (the
records, recent clicks on them, their tracking rows) to settle the rest of the
machine test (clicked on delivery, every link at once) and to store the events.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import namedtuple
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from postroom.db.models import EmailTracking, EmailTrackingEvent
from postroom.tracking import machines
from postroom.tracking.events import (
    RECORD_ROW_COLUMNS,
    NewEvent,
    driver_connection,
    record_many,
    record_rows,
    records_t,
)
from postroom.tracking.tokens import BadToken
from postroom.types import EventType

log = logging.getLogger(__name__)
tracking_t = cast(Table, EmailTracking.__table__)
events_t = cast(Table, EmailTrackingEvent.__table__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Hit:
    """One open (``url`` None) or click of a verified tracking link."""

    email_id: uuid.UUID
    #: lower-case
    recipient: str
    at: datetime
    user_agent: str
    ip: str | None
    url: str | None = None
    #: why a machine made it, as the request alone tells; None: the batch decides
    reason: str | None = None

    @property
    def kind(self) -> str:
        return EventType.OPENED if self.url is None else EventType.CLICKED


#: on PostgreSQL, :func:`record_rows`' columns, by two array parameters (a superset:
#: those emails' records to those addresses, narrowed by the keys in :func:`_records`),
#: run on the driver's connection: one statement text, prepared once per connection,
#: whose rows skip the SQL layer's result processing (the busiest read there is)
_RECORDS_PG = f"""
    SELECT {", ".join(f"r.{c}" for c in RECORD_ROW_COLUMNS)},
           t.id AS tracking_id, t.status AS tracking_status
    FROM email_records AS r LEFT OUTER JOIN email_tracking AS t ON t.email_id = r.id
    WHERE r.job_id = ANY($1::uuid[]) AND lower(r.recipient_email) = ANY($2::text[])
"""
#: a row of :data:`_RECORDS_PG`, read by attribute as :func:`record_rows` rows are
_Record = namedtuple("_Record", [*RECORD_ROW_COLUMNS, "tracking_id", "tracking_status"])  # type: ignore[misc]
#: each tracking row's recent clicks by its own index entries: only the tracking id
#: is inside the subquery, which OFFSET 0 keeps per row, so whatever the statistics
#: the scan is the (tracking id) index, growing with the batch and those recipients'
#: events, never a scan of every click of the last seconds by the (type, time) index
_RECENT_CLICKS_PG = """
    SELECT u.tracking_id, e.timestamp, e.data ->> 'url' AS url
    FROM unnest($1::uuid[]) AS u(tracking_id)
    CROSS JOIN LATERAL (
        SELECT e.timestamp, e.type, e.data FROM email_tracking_events AS e
        WHERE e.tracking_id = u.tracking_id
        OFFSET 0
    ) AS e
    WHERE e.type = 'clicked' AND e.timestamp >= $2
"""


async def _records(conn: AsyncConnection, hits: Sequence[Hit]) -> dict[tuple[Any, str], Any]:
    """The records the hits are about, by (email id, lower-case recipient)."""
    keys = list({_key(h) for h in hits})
    found: Any
    if conn.dialect.name == "postgresql":
        driver = await driver_connection(conn)
        rows = await driver.fetch(
            _RECORDS_PG, list({k[0] for k in keys}), list({k[1] for k in keys})
        )
        found = [_Record(*r) for r in rows]
    else:
        found = await conn.execute(
            record_rows(
                records_t.c.job_id.in_({k[0] for k in keys}),  # narrowed by its index first
                tuple_(records_t.c.job_id, func.lower(records_t.c.recipient_email)).in_(keys),
            )
        )
    wanted = set(keys)
    return {key: r for r in found if (key := (r.job_id, r.recipient_email.lower())) in wanted}


async def _recent_clicks(
    conn: AsyncConnection, records: list[Any], since: datetime
) -> dict[uuid.UUID, list[tuple[datetime, str | None]]]:
    """Clicks on these records (:func:`_records` rows) since ``since``: (time, URL)
    per record id."""
    out: dict[uuid.UUID, list[tuple[datetime, str | None]]] = {r.id: [] for r in records}
    if not records:
        return out
    if conn.dialect.name == "postgresql":
        # by the tracking rows already read (a record without one has no clicks yet)
        by_tracking = {r.tracking_id: r.id for r in records if r.tracking_id is not None}
        if by_tracking:
            driver = await driver_connection(conn)
            for row in await driver.fetch(_RECENT_CLICKS_PG, list(by_tracking), since):
                out[by_tracking[row["tracking_id"]]].append((row["timestamp"], row["url"]))
        return out
    record_ids = list(out)
    rows = await conn.execute(
        select(tracking_t.c.email_id, events_t.c.timestamp, events_t.c.data)
        .join(tracking_t, tracking_t.c.id == events_t.c.tracking_id)
        .where(
            tracking_t.c.email_id.in_(record_ids),
            events_t.c.type == EventType.CLICKED,
            events_t.c.timestamp >= since,
        )
    )
    for row in rows:
        out[row.email_id].append((row.timestamp, (row.data or {}).get("url")))
    return out


async def write(conn: AsyncConnection, hits: Sequence[Hit]) -> list[uuid.UUID | Exception]:
    """Store ``hits`` in the caller's transaction: per hit its event id, or
    :class:`BadToken` when its message no longer exists."""
    records = await _records(conn, hits)
    window = timedelta(seconds=machines.BURST_WINDOW_S)
    clicked = list(
        {r.id: r for h in hits if h.url is not None and (r := records.get(_key(h)))}.values()
    )
    recent = await _recent_clicks(conn, clicked, min(h.at for h in hits) - window)
    events: list[NewEvent] = []
    slots: list[int] = []
    out: list[uuid.UUID | Exception] = []
    for hit in hits:
        rec = records.get(_key(hit))
        if rec is None:
            out.append(BadToken("the message of this link no longer exists"))
            continue
        since = None if rec.sent_at is None else (hit.at - rec.sent_at).total_seconds()
        if hit.url is None:
            reason = hit.reason or machines.open_by_timing(since)
            data: dict[str, Any] = {}
        else:
            mine = recent[rec.id]
            others = {u for at, u in mine if at >= hit.at - window} - {hit.url}
            reason = hit.reason or machines.click_by_timing(since, len(others))
            mine.append((hit.at, hit.url))
            data = {"url": hit.url}
        if reason:
            data["machine"] = reason
        slots.append(len(out))
        out.append(_NOT_STORED)  # replaced by the event id below
        events.append(
            NewEvent(
                record_id=rec.id,
                type=hit.kind,
                timestamp=hit.at,
                data=data,
                user_agent=hit.user_agent or None,
                ip_address=hit.ip,
                machine=reason is not None,
            )
        )
    ids = await record_many(conn, events, {r.id: r for r in records.values()}, all_new=True)
    for slot, event_id in zip(slots, ids, strict=True):
        # every event of an all-new batch is stored: None here is a lost write
        out[slot] = event_id if event_id is not None else RuntimeError("event not stored")
    return out


#: the place of a hit's answer until its event is stored (every one is replaced)
_NOT_STORED = RuntimeError("event not stored")


def _key(hit: Hit) -> tuple[uuid.UUID, str]:
    return (hit.email_id, hit.recipient)


class Writer:
    """The :class:`GroupCommit` writer: one transaction per batch.

    On PostgreSQL it keeps its connection from one batch to the next while batches
    keep coming: a pool checkout pings the server first (a begin, a query and a
    rollback), which cost a busy writer more than its batch's own statements. The
    connection goes back to the pool after ``idle_s`` without a batch, and is
    dropped after a failed batch (the next one checks out a fresh, pinged one).
    ``idle_s`` is short because a kept connection skips the pool's ping: a server
    restarted while it sat idle fails the next batch (503) instead of being caught
    by the ping, so only a connection that was busy a moment ago is trusted.
    """

    def __init__(self, engine: AsyncEngine, *, idle_s: float = 0.25) -> None:
        self.engine = engine
        self.idle_s = idle_s
        self._keep = engine.dialect.name == "postgresql"
        self._conn: AsyncConnection | None = None
        self._busy = False
        self._last = 0.0
        self._release: asyncio.TimerHandle | None = None
        self._closing: asyncio.Task[None] | None = None
        #: connections checked out, for tests
        self.checkouts = 0

    async def __call__(self, hits: Sequence[Hit]) -> list[uuid.UUID | Exception]:
        if not self._keep:
            async with self.engine.begin() as conn:
                return await write(conn, hits)
        if self._conn is None:
            self._conn = await self.engine.connect()
            self.checkouts += 1
        conn = self._conn
        self._busy = True
        try:
            async with conn.begin():
                return await write(conn, hits)
        except BaseException:
            # the transaction is rolled back; the connection may be broken: drop it
            self._conn = None
            await _close(conn)
            raise
        finally:
            self._busy = False
            self._last = asyncio.get_running_loop().time()
            if self._conn is not None and self._release is None:
                self._release = asyncio.get_running_loop().call_later(
                    self.idle_s, self._release_if_idle
                )

    def _release_if_idle(self) -> None:
        self._release = None
        if self._conn is None:
            return
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._last
        if self._busy or idle < self.idle_s:
            self._release = loop.call_later(self.idle_s - idle, self._release_if_idle)
            return
        conn, self._conn = self._conn, None
        self._closing = loop.create_task(_close(conn))

    async def aclose(self) -> None:
        """Give the kept connection back (on shutdown, after the last batch)."""
        if self._release is not None:
            self._release.cancel()
            self._release = None
        conn, self._conn = self._conn, None
        if conn is not None:
            await _close(conn)
        if self._closing is not None:
            await self._closing


async def _close(conn: AsyncConnection) -> None:
    try:
        await conn.close()
    except Exception:  # a broken connection: the pool discards it
        log.debug("closing the writer's connection failed", exc_info=True)


def writer(engine: AsyncEngine) -> Writer:
    """The :class:`GroupCommit` writer for ``engine``."""
    return Writer(engine)
