"""The spec's ``sendEmail``: validate, check, route, and enqueue in one transaction."""

from __future__ import annotations

import uuid
from email.utils import parseaddr
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.clock import Clock
from postroom.config import Settings
from postroom.db.engine import reader
from postroom.db.lookup import by_name_or_id
from postroom.db.models import EmailProvider
from postroom.errors import ConfigError, Conflict, MessageError
from postroom.queue import store
from postroom.schemas.email import EmailRequest, EmailSender
from postroom.schemas.results import EmailSendResult
from postroom.services.batching import EnqueueBatcher
from postroom.services.router import QueueDirectory
from postroom.tracking import suppressions
from postroom.types import JobStatus, RecordStatus

providers_t = cast(Table, EmailProvider.__table__)


class Sender:
    """Accepts requests and makes them durable."""

    def __init__(
        self, engine: AsyncEngine, settings: Settings, clock: Clock, directory: QueueDirectory
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.directory = directory
        self.batcher = EnqueueBatcher(engine)

    async def send(
        self, request: EmailRequest, *, idempotency_key: str | None = None
    ) -> EmailSendResult:
        """Enqueue ``request``; returns once its job and records are committed."""
        if idempotency_key is not None:
            if len(idempotency_key) > 255:
                raise MessageError("Idempotency-Key is longer than 255 characters")
            async with reader(self.engine).connect() as conn:
                row = await store.job_by_idempotency_key(conn, idempotency_key)
            if row is not None:
                return _result_from_row(row)
        sender = request.from_ or self._default_sender()
        now = self.clock.now()
        route = await self.directory.for_request(
            request.type, request.queue, scheduled_at=request.scheduled_at, now=now
        )
        queue = route.queue
        if request.provider is not None:
            await self._check_provider(request.provider)
        scheduled_at = max(now, request.scheduled_at) if request.scheduled_at else now
        job_id = uuid.uuid4()
        payload = request.model_dump(mode="json", by_alias=True, exclude_none=True)
        payload["from"] = sender.model_dump(mode="json", exclude_none=True)
        async with reader(self.engine).connect() as conn:
            blocked = await suppressions.suppressed(
                conn, (r.email for r in request.to), request.type, now
            )
        if blocked:
            # a suppressed recipient is never attempted; the others still go
            payload["to"] = [r for r in payload["to"] if r["email"].lower() not in blocked]
        job = store.NewJob(
            id=job_id,
            queue_id=queue.id,
            type=request.type,
            priority=request.priority or route.default_priority,
            max_attempts=request.max_attempts or queue.max_attempts or self.settings.max_attempts,
            data={
                "request": payload,
                "metadata": {"source": request.source or "api", "userId": request.user_id},
            },
            scheduled_at=scheduled_at,
            created_at=now,
            idempotency_key=idempotency_key,
            status=JobStatus.PENDING if payload["to"] else JobStatus.CANCELLED,
        )
        new_records = [
            store.NewRecord(
                recipient_email=r.email,
                recipient_type=r.type,
                recipient_name=r.name,
                sender_email=sender.email,
                subject=request.subject,
                type=request.type,
                metadata={**(request.metadata or {}), **(r.metadata or {})}
                | ({"suppressed": blocked[r.email.lower()]} if r.email.lower() in blocked else {}),
                status=RecordStatus.SUPPRESSED
                if r.email.lower() in blocked
                else RecordStatus.QUEUED,
            )
            for r in request.to
        ]
        try:
            await self.batcher.submit(job, new_records)
        except IntegrityError:
            if idempotency_key is None:
                raise
            # the same key raced us; answer with the winner's result
            async with reader(self.engine).connect() as conn:
                row = await store.job_by_idempotency_key(conn, idempotency_key)
            if row is None:
                raise Conflict("a request with this Idempotency-Key is being processed") from None
            return _result_from_row(row)
        return EmailSendResult(
            id=str(job_id),
            status="queued" if payload["to"] else "suppressed",
            queue_id=str(queue.id),
            job_id=str(job_id),
            attempts=0,
            created_at=now,
            scheduled_at=scheduled_at,
            recipients=len(new_records),
        )

    async def _check_provider(self, ident: str) -> None:
        """A request may pin a provider that exists (enabled or not: it may come back)."""
        cond = by_name_or_id(providers_t, "name", ident)
        async with reader(self.engine).connect() as conn:
            found = (await conn.execute(select(providers_t.c.id).where(cond))).first()
        if found is None:
            raise MessageError(f"there is no provider {ident!r}", field="provider")

    def _default_sender(self) -> EmailSender:
        if not self.settings.default_from:
            raise MessageError(
                "the request has no 'from' address and POSTROOM_DEFAULT_FROM is not set",
                field="from",
            )
        name, address = parseaddr(self.settings.default_from)
        try:
            return EmailSender(email=address, name=name or None)
        except ValidationError as exc:
            raise ConfigError(f"POSTROOM_DEFAULT_FROM is not a valid address: {exc}") from None


def _result_from_row(row: Any) -> EmailSendResult:
    status = "queued" if row.status in (JobStatus.PENDING, JobStatus.PROCESSING) else row.status
    return EmailSendResult(
        id=str(row.id),
        status=status,
        queue_id=str(row.queue_id) if row.queue_id else None,
        job_id=str(row.id),
        attempts=row.attempts,
        created_at=row.created_at,
        scheduled_at=row.scheduled_at,
        recipients=len(row.data.get("request", {}).get("to", [])),
    )
