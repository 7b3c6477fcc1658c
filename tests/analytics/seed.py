"""Rows for analytics tests: jobs, recipient records and tracking events with chosen
timestamps, inserted as the engine and delivery tracking write them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert, select

from postroom.app import Postroom
from postroom.db.models import (
    EmailJob,
    EmailQueue,
    EmailRecord,
    EmailTemplate,
    EmailTracking,
    EmailTrackingEvent,
)

jobs_t = cast(Table, EmailJob.__table__)
records_t = cast(Table, EmailRecord.__table__)
queues_t = cast(Table, EmailQueue.__table__)
tracking_t = cast(Table, EmailTracking.__table__)
events_t = cast(Table, EmailTrackingEvent.__table__)
templates_t = cast(Table, EmailTemplate.__table__)


async def queue_ids(postroom: Postroom) -> dict[str, uuid.UUID]:
    async with postroom.engine.connect() as conn:
        return {r.name: r.id for r in await conn.execute(select(queues_t.c.name, queues_t.c.id))}


@dataclass
class Seeder:
    postroom: Postroom

    async def message(
        self,
        *,
        queue_id: uuid.UUID,
        provider_id: uuid.UUID | None,
        created: datetime,
        type: str = "transactional",
        tags: list[str] | None = None,
        job_status: str = "completed",
        failed_at: datetime | None = None,
        template_id: uuid.UUID | None = None,
        recipients: list[dict[str, Any]],
    ) -> list[uuid.UUID]:
        """One job with a record per entry of ``recipients`` (status and timestamps).
        As tracking does, a person's first open or click is also the first of any kind
        unless ``opened_any_at`` / ``clicked_any_at`` (a machine's, earlier) are given."""
        job_id = uuid.uuid4()
        request: dict[str, Any] = {"subject": "s"}
        if tags is not None:
            request["tags"] = tags
        if template_id is not None:
            request["templatePin"] = {"id": str(template_id), "version": 1}
        ids = []
        async with self.postroom.engine.begin() as conn:
            await conn.execute(
                insert(jobs_t).values(
                    id=job_id,
                    queue_id=queue_id,
                    type=type,
                    status=job_status,
                    data={"request": request},
                    scheduled_at=created,
                    created_at=created,
                    failed_at=failed_at,
                )
            )
            for i, given in enumerate(recipients):
                r = dict(given)
                r.setdefault("opened_any_at", r.get("opened_at"))
                r.setdefault("clicked_any_at", r.get("clicked_at"))
                r.setdefault("tag", tags[0] if tags else None)
                r.setdefault("template_id", template_id)
                rid = uuid.uuid4()
                ids.append(rid)
                await conn.execute(
                    insert(records_t).values(
                        id=rid,
                        job_id=job_id,
                        provider_id=provider_id,
                        queue_id=queue_id,
                        recipient_email=f"r{i}-{rid.hex[:6]}@example.com",
                        sender_email="from@example.com",
                        subject="s",
                        type=type,
                        created_at=created,
                        **r,
                    )
                )
        return ids

    async def template(self, name: str, when: datetime) -> uuid.UUID:
        template_id = uuid.uuid4()
        async with self.postroom.engine.begin() as conn:
            await conn.execute(
                insert(templates_t).values(
                    id=template_id,
                    name=name,
                    type="transactional",
                    subject="s",
                    content={"text": "t"},
                    created_at=when,
                    updated_at=when,
                )
            )
        return template_id

    async def event(self, record_id: uuid.UUID, type: str, when: datetime) -> None:
        async with self.postroom.engine.begin() as conn:
            tid = uuid.uuid4()
            await conn.execute(
                insert(tracking_t).values(
                    id=tid,
                    email_id=record_id,
                    delivery_id=f"d-{tid.hex[:8]}",
                    recipient_email="x@example.com",
                    tracking_enabled=True,
                    status=type,
                    created_at=when,
                    updated_at=when,
                )
            )
            await conn.execute(
                insert(events_t).values(id=uuid.uuid4(), tracking_id=tid, type=type, timestamp=when)
            )
