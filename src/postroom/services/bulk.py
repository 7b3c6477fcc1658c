"""``POST /bulk``: many recipients, one shared message or template, one record and job each.

Everything is checked first (addresses, each recipient's template variables); a bad
recipient makes a 422 listing it by index and nothing is queued. Then the shared part is
stored once in ``email_bulks`` and one small job and record per recipient are inserted
with multi-row INSERTs in a single transaction, so the 202 comes after all of it is
durable. The worker renders each message from the shared part and its own data.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from postroom.db.engine import reader
from postroom.db.lookup import as_uuid
from postroom.db.models import EmailBulk, EmailRecord
from postroom.errors import MessageError, NotFound, RequestInvalid
from postroom.queue import store
from postroom.schemas.bulk import BulkAccepted, BulkProgress, BulkRequest
from postroom.services.sending import Sender, scope_idempotency_key
from postroom.types import EmailType, RecordStatus

bulks_t = cast(Table, EmailBulk.__table__)
records_t = cast(Table, EmailRecord.__table__)

#: at most this many problems are listed in a 422 (the count says how many in all)
MAX_LISTED = 1000

#: record statuses that mean the message left Postroom
_SENT = {
    RecordStatus.SENT,
    RecordStatus.DELIVERED,
    RecordStatus.OPENED,
    RecordStatus.CLICKED,
    RecordStatus.BOUNCED,
    RecordStatus.COMPLAINED,
}


class BulkSender:
    def __init__(self, sender: Sender) -> None:
        self.sender = sender

    async def send(
        self,
        request: BulkRequest,
        *,
        idempotency_key: str | None = None,
        api_key_id: uuid.UUID | None = None,
    ) -> BulkAccepted:
        """Queue every recipient's message; ``idempotency_key`` is scoped to ``api_key_id``
        (None: the facade), as for ``/send``."""
        key = None
        if idempotency_key is not None:
            key = scope_idempotency_key(idempotency_key, api_key_id)
        return await self.sender.idempotent(key, _accepted, lambda: self._send(request, key))

    async def _send(self, request: BulkRequest, idempotency_key: str | None) -> BulkAccepted:
        s = self.sender
        from_ = request.from_ or s._default_sender()
        now = s.clock.now()
        email_type = request.type
        shared: dict[str, Any] = request.model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude={"recipients"}
        )
        shared["from"] = from_.model_dump(mode="json", exclude_none=True)
        subjects: list[str]
        template_id: uuid.UUID | None = None
        if request.template_id is not None:
            version, template_type = await s.templates.pin(
                request.template_id, request.template_version
            )
            if "type" not in request.model_fields_set:
                email_type = EmailType(template_type)
            common = request.template_data or {}
            problems: list[dict[str, str]] = []
            subjects = []
            per_recipient = bool(version.subject_names())
            for i, r in enumerate(request.recipients):
                data = {**common, **r.template_data} if r.template_data else common
                found = version.data_problems(data, prefix=f"recipients.{i}.templateData")
                if found:
                    problems += found
                elif per_recipient or not subjects:
                    try:
                        subjects.append(version.render_subject(data))
                    except MessageError as exc:
                        problems.append({"field": f"recipients.{i}", "message": exc.message})
                else:
                    subjects.append(subjects[0])
            if problems:
                total = len(problems)
                listed = problems[:MAX_LISTED]
                if total > MAX_LISTED:
                    listed.append({"field": "recipients", "message": f"{total} problems in all"})
                raise RequestInvalid(listed)
            shared["templatePin"] = {"id": str(version.template_id), "version": version.version}
            template_id = version.template_id
        else:
            subjects = [request.subject or ""] * len(request.recipients)
        shared["type"] = email_type.value
        route = await s.directory.for_request(
            email_type, request.queue, scheduled_at=request.scheduled_at, now=now
        )
        if request.provider is not None:
            await s._check_provider(request.provider)
        queue = route.queue
        scheduled_at = max(now, request.scheduled_at) if request.scheduled_at else now
        priority = request.priority or route.default_priority
        max_attempts = request.max_attempts or queue.max_attempts or s.settings.max_attempts
        bulk_id = uuid.uuid4()
        shared_meta = request.metadata or {}
        job_meta = {"source": "bulk", "bulkId": str(bulk_id)}
        items: list[tuple[store.NewJob, list[store.NewRecord]]] = []
        for r, subject in zip(request.recipients, subjects, strict=True):
            own: dict[str, Any] = {
                "to": [{"email": r.email, "name": r.name} if r.name else {"email": r.email}]
            }
            if r.template_data:
                own["templateData"] = r.template_data
            if r.metadata:
                own["metadata"] = r.metadata
            job = store.NewJob(
                id=uuid.uuid4(),
                queue_id=queue.id,
                type=email_type,
                priority=priority,
                max_attempts=max_attempts,
                data={"bulk": str(bulk_id), "request": own, "metadata": job_meta},
                scheduled_at=scheduled_at,
                created_at=now,
            )
            record = store.NewRecord(
                recipient_email=r.email,
                recipient_type="to",
                recipient_name=r.name,
                sender_email=from_.email,
                subject=subject,
                type=email_type,
                metadata={**shared_meta, **r.metadata} if r.metadata else shared_meta,
                bulk_id=bulk_id,
                tag=request.tags[0] if request.tags else None,
                template_id=template_id,
            )
            items.append((job, [record]))
        async with s.engine.begin() as conn:
            await conn.execute(
                insert(bulks_t).values(
                    id=bulk_id,
                    request=shared,
                    total=len(items),
                    queue_id=queue.id,
                    idempotency_key=idempotency_key,
                    created_at=now,
                )
            )
            await store.enqueue_bulk(conn, items)
        return BulkAccepted(
            id=str(bulk_id),
            status="queued",
            queue_id=str(queue.id),
            recipients=len(items),
            created_at=now,
        )

    async def progress(self, bulk_id: str) -> BulkProgress:
        as_id = as_uuid(bulk_id)
        async with reader(self.sender.engine).connect() as conn:
            row = None
            if as_id is not None:
                row = (await conn.execute(select(bulks_t).where(bulks_t.c.id == as_id))).first()
            if row is None:
                raise NotFound(f"there is no bulk send {bulk_id!r}")
            counts = (
                select(records_t.c.status, func.count())
                .where(records_t.c.bulk_id == row.id)
                .group_by(records_t.c.status)
            )
            by_status = {str(k): int(v) for k, v in (await conn.execute(counts)).all()}
        return _progress(row, by_status)


def _progress(row: Any, by_status: Mapping[str, int]) -> BulkProgress:
    return BulkProgress(
        id=str(row.id),
        total=row.total,
        queued=by_status.get(RecordStatus.QUEUED, 0),
        sent=sum(n for k, n in by_status.items() if k in _SENT),
        failed=by_status.get(RecordStatus.FAILED, 0) + by_status.get(RecordStatus.CANCELLED, 0),
        suppressed=by_status.get("suppressed", 0),
        by_status=dict(by_status),
        created_at=row.created_at,
    )


async def _accepted(conn: AsyncConnection, key: str) -> BulkAccepted | None:
    row = (await conn.execute(select(bulks_t).where(bulks_t.c.idempotency_key == key))).first()
    if row is None:
        return None
    return BulkAccepted(
        id=str(row.id),
        status="queued",
        queue_id=str(row.queue_id) if row.queue_id else "",
        recipients=row.total,
        created_at=row.created_at,
    )
