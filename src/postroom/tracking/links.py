"""The logic of the public pixel, click and unsubscribe routes.

Each request verifies its token first; a bad, tampered or expired token records
nothing and redirects nowhere. Every open and click is recorded (flagged when
made by a machine) and committed before the answer, a batch of concurrent ones
in one transaction; an unsubscribe is recorded once, however often it is posted.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from postroom.clock import Clock
from postroom.db.groupcommit import GroupCommit
from postroom.db.models import EmailRecord, EmailTracking, EmailTrackingEvent
from postroom.tracking import machines, suppressions
from postroom.tracking.context import TrackingContext
from postroom.tracking.events import NewEvent, record_event
from postroom.tracking.hits import Hit
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
        self,
        engine: AsyncEngine,
        ctx: TrackingContext,
        clock: Clock,
        recorder: GroupCommit[Hit, uuid.UUID],
    ) -> None:
        self.engine = engine
        self.ctx = ctx
        self.clock = clock
        #: opens and clicks are committed a batch at a time
        self.recorder = recorder

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

    def _hit(self, payload: Mapping[str, Any]) -> tuple[uuid.UUID, str]:
        try:
            return uuid.UUID(str(payload.get("e"))), str(payload.get("r", "")).lower()
        except ValueError:
            raise BadToken() from None

    async def open(
        self, token: str, user_agent: str, ip: str | None, headers: Mapping[str, str]
    ) -> None:
        """Record the open; returns once its batch is committed."""
        email_id, recipient = self._hit(self.payload(token, "o"))
        await self.recorder.submit(
            Hit(
                email_id=email_id,
                recipient=recipient,
                at=self.clock.now(),
                user_agent=user_agent,
                ip=ip,
                reason=machines.open_by_request(user_agent, headers),
            )
        )

    async def click(
        self, token: str, method: str, user_agent: str, ip: str | None, headers: Mapping[str, str]
    ) -> str:
        """Record the click; the URL bound in the token, the only place it redirects to."""
        payload = self.payload(token, "c")
        url = payload.get("u")
        if not isinstance(url, str) or not url.lower().startswith(("http://", "https://")):
            raise BadToken()
        email_id, recipient = self._hit(payload)
        await self.recorder.submit(
            Hit(
                email_id=email_id,
                recipient=recipient,
                at=self.clock.now(),
                user_agent=user_agent,
                ip=ip,
                url=url,
                reason=machines.click_by_request(user_agent, method, headers),
            )
        )
        return url

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
