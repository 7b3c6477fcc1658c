"""The spec's ``sendEmail``: validate, check, route, and enqueue in one transaction."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from email.utils import parseaddr
from typing import Any, TypeVar, cast

from pydantic import ValidationError
from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from postroom.clock import Clock
from postroom.config import Settings
from postroom.db.engine import reader
from postroom.db.lookup import by_name_or_id
from postroom.db.models import EmailProvider
from postroom.errors import ConfigError, Conflict, MessageError, RequestInvalid
from postroom.queue import store
from postroom.schemas.email import EmailRequest, EmailSender
from postroom.schemas.results import EmailSendResult
from postroom.services.batching import EnqueueBatcher
from postroom.services.router import QueueDirectory
from postroom.templates.versions import TemplateStore
from postroom.types import EmailType, JobStatus

providers_t = cast(Table, EmailProvider.__table__)
T = TypeVar("T")


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
        self.templates = TemplateStore(engine, clock)

    async def idempotent(
        self,
        key: str | None,
        find: Callable[[AsyncConnection, str], Awaitable[T | None]],
        create: Callable[[], Awaitable[T]],
    ) -> T:
        """Run ``create`` once per Idempotency-Key: a repeat answers what ``find`` finds.

        ``create`` stores ``key`` under a unique constraint, so a racing repeat fails
        with IntegrityError and answers with the winner's result. ``/send`` and
        ``/bulk`` both go through here.
        """
        if key is None:
            return await create()
        if len(key) > 255:
            raise MessageError("Idempotency-Key is longer than 255 characters")
        async with reader(self.engine).connect() as conn:
            found = await find(conn, key)
        if found is not None:
            return found
        try:
            return await create()
        except IntegrityError:
            async with reader(self.engine).connect() as conn:
                found = await find(conn, key)
            if found is None:
                raise Conflict("a request with this Idempotency-Key is being processed") from None
            return found

    async def send(
        self, request: EmailRequest, *, idempotency_key: str | None = None
    ) -> EmailSendResult:
        """Enqueue ``request``; returns once its job and records are committed."""
        return await self.idempotent(
            idempotency_key, _job_result, lambda: self._send(request, idempotency_key)
        )

    async def _send(self, request: EmailRequest, idempotency_key: str | None) -> EmailSendResult:
        sender = request.from_ or self._default_sender()
        now = self.clock.now()
        subject = request.subject or ""
        email_type = request.type
        pin: dict[str, Any] | None = None
        if request.template_id is not None:
            version, template_type = await self.templates.pin(
                request.template_id, request.template_version
            )
            data = request.template_data or {}
            version.check_data(data)
            # the subject is rendered now for the records; the body when the job is sent
            try:
                subject = version.render_subject(data)
            except MessageError as exc:
                raise RequestInvalid([{"field": "templateId", "message": exc.message}]) from None
            pin = {"id": str(version.template_id), "version": version.version}
            if "type" not in request.model_fields_set:
                email_type = EmailType(template_type)
        route = await self.directory.for_request(
            email_type, request.queue, scheduled_at=request.scheduled_at, now=now
        )
        queue = route.queue
        if request.provider is not None:
            await self._check_provider(request.provider)
        scheduled_at = max(now, request.scheduled_at) if request.scheduled_at else now
        job_id = uuid.uuid4()
        payload = request.model_dump(mode="json", by_alias=True, exclude_none=True)
        payload["from"] = sender.model_dump(mode="json", exclude_none=True)
        if pin is not None:
            payload.update(templatePin=pin, type=email_type.value)
        job = store.NewJob(
            id=job_id,
            queue_id=queue.id,
            type=email_type,
            priority=request.priority or route.default_priority,
            max_attempts=request.max_attempts or queue.max_attempts or self.settings.max_attempts,
            data={
                "request": payload,
                "metadata": {"source": request.source or "api", "userId": request.user_id},
            },
            scheduled_at=scheduled_at,
            created_at=now,
            idempotency_key=idempotency_key,
        )
        new_records = [
            store.NewRecord(
                recipient_email=r.email,
                recipient_type=r.type,
                recipient_name=r.name,
                sender_email=sender.email,
                subject=subject,
                type=email_type,
                metadata={**(request.metadata or {}), **(r.metadata or {})},
            )
            for r in request.to
        ]
        await self.batcher.submit(job, new_records)
        return EmailSendResult(
            id=str(job_id),
            status="queued",
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


async def _job_result(conn: AsyncConnection, key: str) -> EmailSendResult | None:
    row = await store.job_by_idempotency_key(conn, key)
    return None if row is None else _result_from_row(row)


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
