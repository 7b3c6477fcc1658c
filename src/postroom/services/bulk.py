"""``POST /bulk``: many recipients, one shared message or template, one record and job each.

Everything is checked first (addresses, each recipient's template variables); a bad
recipient makes a 422 listing it by index and nothing is queued. Then the shared part is
stored once in ``email_bulks`` and one small job and record per recipient are inserted
(COPY on PostgreSQL) in a single transaction, so the 202 comes after all of it is
durable. The worker renders each message from the shared part and its own data.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from typing import Any, cast

import orjson
from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from postroom.db.engine import reader
from postroom.db.lookup import as_uuid
from postroom.db.models import EmailBulk, EmailRecord
from postroom.errors import IdempotencyKeyReused, MessageError, NotFound, RequestInvalid
from postroom.queue import store
from postroom.schemas.bulk import BulkAccepted, BulkProgress, BulkRequest
from postroom.services import bulkcopy
from postroom.services.sending import Sender, scope_idempotency_key
from postroom.services.status import ANY_OWNER
from postroom.templates.versions import Version
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
        (None: the facade), as for ``/send``, and a repeat with another request is
        refused (422), as there."""
        if idempotency_key is None:
            return await self._send(request, None, None, api_key_id)
        key = scope_idempotency_key(idempotency_key, api_key_id)
        fingerprint = bulk_fingerprint(request)

        async def find(conn: AsyncConnection, scoped: str) -> BulkAccepted | None:
            return await _accepted(conn, scoped, fingerprint)

        return await self.sender.idempotent(
            key, find, lambda: self._send(request, key, fingerprint, api_key_id)
        )

    async def _send(
        self,
        request: BulkRequest,
        idempotency_key: str | None,
        fingerprint: str | None,
        api_key_id: uuid.UUID | None,
    ) -> BulkAccepted:
        s = self.sender
        from_ = request.from_ or s._default_sender()
        now = s.clock.now()
        email_type = request.type
        recipients = request.recipients
        shared: dict[str, Any] = request.model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude={"recipients"}
        )
        shared["from"] = from_.model_dump(mode="json", exclude_none=True)
        template_id: uuid.UUID | None = None
        if request.template_id is not None:
            version, template_type = await s.templates.pin(
                request.template_id, request.template_version
            )
            if "type" not in request.model_fields_set:
                email_type = EmailType(template_type)
            subjects = _template_subjects(version, request)
            shared["templatePin"] = {"id": str(version.template_id), "version": version.version}
            template_id = version.template_id
        else:
            subjects = [request.subject or ""] * len(recipients)
        shared["type"] = email_type.value
        route = await s.directory.for_request(
            email_type, request.queue, scheduled_at=request.scheduled_at, now=now
        )
        if request.provider is not None:
            await s._check_provider(request.provider)
        queue = route.queue
        bulk_id = uuid.uuid4()
        fixed = store.BulkFixed(
            bulk_id=bulk_id,
            tag=request.tags[0] if request.tags else None,
            template_id=template_id,
            queue_id=queue.id,
            type=email_type.value,
            priority=request.priority or route.default_priority,
            max_attempts=request.max_attempts or queue.max_attempts or s.settings.max_attempts,
            scheduled_at=max(now, request.scheduled_at) if request.scheduled_at else now,
            created_at=now,
            api_key_id=api_key_id,
            sender_email=from_.email,
        )
        n = len(recipients)
        ids = (store.time_ordered_ids(n, now), store.time_ordered_ids(n, now))
        async with s.engine.begin() as conn:
            await conn.execute(
                insert(bulks_t).values(
                    id=bulk_id,
                    request=shared,
                    total=n,
                    queue_id=queue.id,
                    idempotency_key=idempotency_key,
                    request_hash=fingerprint,
                    api_key_id=api_key_id,
                    created_at=now,
                )
            )
            if conn.dialect.name == "postgresql":
                # built chunk by chunk while PostgreSQL takes in the ones before
                chunks = (
                    _rows(request, bulk_id, subjects, ids, start, start + bulkcopy.CHUNK)
                    for start in range(0, n, bulkcopy.CHUNK)
                )
                await bulkcopy.copy_bulk(conn, fixed, chunks)
            else:
                rows: dict[str, Any] = _rows(request, bulk_id, subjects, ids)
                await store.enqueue_bulk(conn, store.BulkRows(**fixed.columns(), **rows))
        return BulkAccepted(
            id=str(bulk_id),
            status="queued",
            queue_id=str(queue.id),
            recipients=len(recipients),
            created_at=now,
        )

    async def progress(
        self, bulk_id: str, *, owner: uuid.UUID | str | None = ANY_OWNER
    ) -> BulkProgress:
        """``owner`` limits it to one API key's bulk sends (None: the facade's), as
        ``GET /status`` does for a ``send``-scoped key: another's is not found."""
        as_id = as_uuid(bulk_id)
        async with reader(self.sender.engine).connect() as conn:
            row = None
            if as_id is not None:
                row = (await conn.execute(select(bulks_t).where(bulks_t.c.id == as_id))).first()
            if row is None or (owner != ANY_OWNER and row.api_key_id != owner):
                raise NotFound(f"there is no bulk send {bulk_id!r}")
            counts = (
                select(records_t.c.status, func.count())
                .where(records_t.c.bulk_id == row.id)
                .group_by(records_t.c.status)
            )
            by_status = {str(k): int(v) for k, v in (await conn.execute(counts)).all()}
        return _progress(row, by_status)


def _template_subjects(version: Version, request: BulkRequest) -> list[str]:
    """Each recipient's rendered subject, after checking every recipient's variables
    (RequestInvalid lists the problems by recipient index). A subject that reads no
    variable is rendered once."""
    common = request.template_data or {}
    check = version.data_checker()
    render = version.subject_renderer()
    per_recipient = bool(version.subject_names())
    problems: list[dict[str, str]] = []
    subjects: list[str] = []
    for i, r in enumerate(request.recipients):
        own = r.template_data
        data = ({**common, **own} if common else own) if own else common
        found = check(data, f"recipients.{i}.templateData")
        if found:
            problems += found
        elif per_recipient or not subjects:
            try:
                subjects.append(render(data))
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
    return subjects


def _rows(
    request: BulkRequest,
    bulk_id: uuid.UUID,
    subjects: list[str],
    ids: tuple[list[str], list[str]],
    start: int = 0,
    stop: int | None = None,
) -> dict[str, list[Any]]:
    """The per-recipient columns of ``store.BulkRows`` for recipients ``start:stop``:
    ids (``ids``: the jobs' and the records' of the whole request), and JSON encoded
    once.

    A job's data is ``{"bulk": id, "request": <the recipient's own part>, "metadata":
    ...}``; the worker joins it to the shared part (``queue.bulks``).
    """
    recipients = request.recipients[start:stop]
    dumps = orjson.dumps
    shared_meta = request.metadata or {}
    shared_meta_json = dumps(shared_meta).decode()
    bulk_str = str(bulk_id)
    job_meta = {"source": "bulk", "bulkId": bulk_str}
    # the job's JSON around its recipient's part, encoded once (the same bytes as
    # dumping the whole object each time)
    head = b'{"bulk":' + dumps(bulk_str) + b',"request":'
    tail = b',"metadata":' + dumps(job_meta) + b"}"
    job_data: list[str] = []
    metadata: list[str] = []
    emails: list[str] = []
    names: list[str | None] = []
    for r in recipients:
        email, name, data, meta = r.email, r.name, r.template_data, r.metadata
        own: dict[str, Any] = {"to": [{"email": email, "name": name} if name else {"email": email}]}
        if data:
            own["templateData"] = data
        if meta:
            own["metadata"] = meta
            metadata.append(dumps({**shared_meta, **meta}).decode())
        else:
            metadata.append(shared_meta_json)
        job_data.append((head + dumps(own) + tail).decode())
        emails.append(email)
        names.append(name)
    return {
        "job_ids": ids[0][start:stop],
        "record_ids": ids[1][start:stop],
        "job_data": job_data,
        "metadata": metadata,
        "emails": emails,
        "names": names,
        "subjects": subjects[start:stop],
    }


def bulk_fingerprint(request: BulkRequest) -> str:
    """SHA-256 of the validated request (key order and spacing do not matter), as
    ``/send``'s ``request_fingerprint``; recipients are encoded as plain lists, which
    is much cheaper than dumping 100,000 models."""
    shared = request.model_dump(
        mode="json", by_alias=True, exclude_none=True, exclude={"recipients"}
    )
    people = [[r.email, r.name, r.template_data, r.metadata] for r in request.recipients]
    canonical = orjson.dumps(
        {"request": shared, "recipients": people}, option=orjson.OPT_SORT_KEYS, default=str
    )
    return hashlib.sha256(canonical).hexdigest()


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


async def _accepted(conn: AsyncConnection, key: str, fingerprint: str) -> BulkAccepted | None:
    """The first response to ``key``; a different request under it is refused."""
    row = (await conn.execute(select(bulks_t).where(bulks_t.c.idempotency_key == key))).first()
    if row is None:
        return None
    if row.request_hash is not None and row.request_hash != fingerprint:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used with a different request; "
            "use a new key for a new bulk send",
            field="Idempotency-Key",
        )
    return BulkAccepted(
        id=str(row.id),
        status="queued",
        queue_id=str(row.queue_id) if row.queue_id else "",
        recipients=row.total,
        created_at=row.created_at,
    )
