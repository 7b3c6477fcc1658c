"""The logic of the public pixel, click and unsubscribe routes.

Each request verifies its token first; a bad, tampered or expired token records
nothing and redirects nowhere. Every open and click is recorded (flagged when
made by a machine); an unsubscribe is recorded once, however often it is posted.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from postroom.clock import Clock
from postroom.db.models import EmailRecord, EmailTracking, EmailTrackingEvent
from postroom.tracking import machines, suppressions
from postroom.tracking.context import TrackingContext
from postroom.tracking.events import NewEvent, record_event
from postroom.tracking.tokens import BadToken
from postroom.types import EventType

records_t = cast(Table, EmailRecord.__table__)
tracking_t = cast(Table, EmailTracking.__table__)
events_t = cast(Table, EmailTrackingEvent.__table__)

#: a transparent 1x1 GIF
PIXEL = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00"
    b"\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)


class Links:
    def __init__(
        self, engine: AsyncEngine, ctx: TrackingContext, clock: Clock, *, soft_limit: int = 0
    ) -> None:
        self.engine = engine
        self.ctx = ctx
        self.clock = clock
        self.soft_limit = soft_limit

    def payload(self, token: str, kind: str) -> dict[str, Any]:
        return self.ctx.signer.verify(token, kind, now=self.clock.now())

    async def _record(self, conn: AsyncConnection, payload: Mapping[str, Any]) -> Any:
        try:
            email_id = uuid.UUID(str(payload.get("e")))
        except ValueError:
            raise BadToken() from None
        rec = (
            await conn.execute(
                select(records_t).where(
                    records_t.c.job_id == email_id,
                    func.lower(records_t.c.recipient_email) == str(payload.get("r", "")).lower(),
                )
            )
        ).first()
        if rec is None:
            raise BadToken("the message of this link no longer exists")
        return rec

    def _since_sent(self, rec: Any) -> float | None:
        if rec.sent_at is None:
            return None
        return float((self.clock.now() - rec.sent_at).total_seconds())

    async def open(
        self, token: str, user_agent: str, ip: str | None, headers: Mapping[str, str]
    ) -> None:
        payload = self.payload(token, "o")
        now = self.clock.now()
        async with self.engine.begin() as conn:
            rec = await self._record(conn, payload)
            reason = machines.machine_open(user_agent, headers, self._since_sent(rec))
            await record_event(
                conn,
                NewEvent(
                    record_id=rec.id,
                    type=EventType.OPENED,
                    timestamp=now,
                    data={"machine": reason} if reason else {},
                    event_id=uuid.uuid4().hex,
                    user_agent=user_agent or None,
                    ip_address=ip,
                    machine=reason is not None,
                ),
            )

    async def click(
        self, token: str, method: str, user_agent: str, ip: str | None, headers: Mapping[str, str]
    ) -> str:
        """Record the click; the URL bound in the token, the only place it redirects to."""
        payload = self.payload(token, "c")
        url = payload.get("u")
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise BadToken()
        now = self.clock.now()
        async with self.engine.begin() as conn:
            rec = await self._record(conn, payload)
            burst = await self._other_links_clicked(conn, rec.id, url, now)
            reason = machines.scanner_click(
                user_agent, method, headers, self._since_sent(rec), burst
            )
            await record_event(
                conn,
                NewEvent(
                    record_id=rec.id,
                    type=EventType.CLICKED,
                    timestamp=now,
                    data={"url": url, **({"machine": reason} if reason else {})},
                    event_id=uuid.uuid4().hex,
                    user_agent=user_agent or None,
                    ip_address=ip,
                    machine=reason is not None,
                ),
            )
        return url

    async def _other_links_clicked(
        self, conn: AsyncConnection, record_id: uuid.UUID, url: str, now: Any
    ) -> int:
        since = now - timedelta(seconds=machines.BURST_WINDOW_S)
        rows = await conn.execute(
            select(events_t.c.data)
            .join(tracking_t, tracking_t.c.id == events_t.c.tracking_id)
            .where(
                and_(
                    tracking_t.c.email_id == record_id,
                    events_t.c.type == EventType.CLICKED,
                    events_t.c.timestamp >= since,
                )
            )
        )
        return len({(r.data or {}).get("url") for r in rows} - {url})

    async def unsubscribe(self, token: str, *, via: str) -> str:
        """Unsubscribe the address the token names from marketing mail; idempotent."""
        payload = self.payload(token, "u")
        now = self.clock.now()
        async with self.engine.begin() as conn:
            rec = await self._record(conn, payload)
            event_id = await record_event(
                conn,
                NewEvent(
                    record_id=rec.id,
                    type=EventType.UNSUBSCRIBED,
                    timestamp=now,
                    data={"via": via},
                    event_id="one-click",
                ),
            )
            await suppressions.add(
                conn,
                rec.recipient_email,
                scope="marketing",
                reason="unsubscribe",
                now=now,
                source_event_id=event_id,
            )
        return str(rec.recipient_email)
