"""The spec's ``sendEmail``: validate, check, route, and enqueue in one transaction.

Idempotency follows the usual contract (Stripe; draft-ietf-httpapi-idempotency-key-header):
a key is scoped to the API key that sent it, a repeat within ``IDEMPOTENCY_WINDOW``
returns the first response exactly (``queued``, 0 attempts, whatever happened since),
and a repeat with another request is refused. The request's fingerprint is stored
with the job, in the same transaction, so the check holds across processes.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import Any, TypeVar, cast

import orjson
from pydantic import ValidationError
from sqlalchemy import Table, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from postroom.clock import Clock
from postroom.config import Settings
from postroom.db.engine import reader
from postroom.db.lookup import by_name_or_id
from postroom.db.models import EmailProvider
from postroom.errors import (
    ConfigError,
    Conflict,
    IdempotencyKeyReused,
    MessageError,
    RequestInvalid,
)
from postroom.queue import store
from postroom.schemas.email import EmailRequest, EmailSender
from postroom.schemas.results import EmailSendResult
from postroom.services import batching
from postroom.services.batching import EnqueueBatcher
from postroom.services.router import QueueDirectory
from postroom.templates.versions import TemplateStore
from postroom.types import EmailType, JobStatus, RecordStatus

providers_t = cast(Table, EmailProvider.__table__)
#: how long an Idempotency-Key holds; after it the key may be used for a new email
IDEMPOTENCY_WINDOW = timedelta(hours=24)
#: room for the ``<scope>:`` prefix in the 255-character column
MAX_IDEMPOTENCY_KEY = 200
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
        """Run ``create`` once per (scoped) Idempotency-Key: a repeat answers what ``find``
        finds. ``/bulk`` goes through here (``/send`` also compares request fingerprints).

        ``create`` stores ``key`` under a unique constraint, so a racing repeat fails
        with IntegrityError and answers with the winner's result.
        """
        if key is None:
            return await create()
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
        self,
        request: EmailRequest,
        *,
        idempotency_key: str | None = None,
        api_key_id: uuid.UUID | None = None,
    ) -> EmailSendResult:
        """Enqueue ``request``; returns once its job and records are committed.

        ``api_key_id`` is the sender (None: the in-process facade); it owns the
        email and scopes ``idempotency_key``.
        """
        dumped = request.model_dump(mode="json", by_alias=True, exclude_none=True)
        fingerprint = request_fingerprint(dumped)

        def earlier() -> str:
            return legacy_fingerprint(dumped)

        scoped_key = None
        if idempotency_key is not None:
            scoped_key = scope_idempotency_key(idempotency_key, api_key_id)
            if (first := await self.replayed(scoped_key, fingerprint, earlier)) is not None:
                return first
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
        # a copy: ``dumped`` stays what was fingerprinted
        payload = {**dumped, "from": sender.model_dump(mode="json", exclude_none=True)}
        if pin is not None:
            payload.update(templatePin=pin, type=email_type.value)
        metadata = {"source": request.source or "api", "userId": request.user_id}
        recipients = request.to
        tag = request.tags[0] if request.tags else None
        template_id = uuid.UUID(pin["id"]) if pin is not None else None

        def screened(blocked: dict[str, str]) -> batching.Item:
            """The job and records once the suppression list is read (in the commit's
            transaction): a suppressed recipient is never attempted; the others still go."""
            to = payload["to"]
            if blocked:
                to = [r for r in to if r["email"].lower() not in blocked]
            job = store.NewJob(
                id=job_id,
                queue_id=queue.id,
                type=email_type,
                priority=request.priority or route.default_priority,
                max_attempts=request.max_attempts
                or queue.max_attempts
                or self.settings.max_attempts,
                data={"request": {**payload, "to": to}, "metadata": metadata},
                scheduled_at=scheduled_at,
                created_at=now,
                idempotency_key=scoped_key,
                api_key_id=api_key_id,
                request_hash=fingerprint,
                status=JobStatus.PENDING if to else JobStatus.CANCELLED,
            )
            new_records = [
                store.NewRecord(
                    recipient_email=r.email,
                    recipient_type=r.type,
                    recipient_name=r.name,
                    sender_email=sender.email,
                    subject=subject,
                    type=email_type,
                    metadata={**(request.metadata or {}), **(r.metadata or {})}
                    | (
                        {"suppressed": blocked[r.email.lower()]}
                        if r.email.lower() in blocked
                        else {}
                    ),
                    status=RecordStatus.SUPPRESSED
                    if r.email.lower() in blocked
                    else RecordStatus.QUEUED,
                    tag=tag,
                    template_id=template_id,
                )
                for r in recipients
            ]
            return job, new_records

        screening = batching.Screening(email_type, [r.email for r in recipients], now, screened)
        return await self._commit(screening, scoped_key, fingerprint, len(recipients), earlier)

    async def commit(
        self,
        job: store.NewJob,
        new_records: Sequence[store.NewRecord],
        fingerprint: str,
        *,
        screen: bool = False,
    ) -> EmailSendResult:
        """Write ``job`` and its records (group commit); the first response to the job's
        Idempotency-Key when a concurrent request took it first. ``screen``: apply the
        suppression list in the commit (raw MIME; ``send`` screens its own way)."""
        work = (job, new_records)
        return await self._commit(
            work, job.idempotency_key, fingerprint, len(new_records), screen=screen
        )

    async def _commit(
        self,
        work: batching.Item | batching.Screening,
        scoped_key: str | None,
        fingerprint: str,
        recipients: int,
        earlier: Callable[[], str] | None = None,
        *,
        screen: bool = False,
    ) -> EmailSendResult:
        try:
            job = await self.batcher.submit(work, screen=screen)
        except IntegrityError:
            if scoped_key is None:
                raise
            return await self.after_race(scoped_key, fingerprint, earlier)
        return EmailSendResult(
            id=str(job.id),
            status="queued" if job.status == JobStatus.PENDING else "suppressed",
            queue_id=str(job.queue_id),
            job_id=str(job.id),
            attempts=0,
            created_at=job.created_at,
            scheduled_at=job.scheduled_at,
            recipients=recipients,
        )

    async def replayed(
        self, scoped_key: str, fingerprint: str, earlier: Callable[[], str] | None = None
    ) -> EmailSendResult | None:
        """The first response to ``scoped_key`` while it is within its window (a
        different request under it is refused); None when the key is free.
        ``earlier`` gives the fingerprint as an older version computed it."""
        async with reader(self.engine).connect() as conn:
            row = await store.job_by_idempotency_key(conn, scoped_key)
        if row is None:
            return None
        if row.created_at > self.clock.now() - IDEMPOTENCY_WINDOW:
            return _replay(row, fingerprint, earlier)
        await store.release_idempotency_key(self.engine, row.id, scoped_key)
        return None

    async def after_race(
        self, scoped_key: str, fingerprint: str, earlier: Callable[[], str] | None = None
    ) -> EmailSendResult:
        """The winner's response when a concurrent request took ``scoped_key`` first."""
        async with reader(self.engine).connect() as conn:
            row = await store.job_by_idempotency_key(conn, scoped_key)
        if row is None:
            raise Conflict("a request with this Idempotency-Key is being processed")
        return _replay(row, fingerprint, earlier)

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


def scope_idempotency_key(key: str, api_key_id: uuid.UUID | None) -> str:
    """``<scope>:<key>``: each API key (and the facade, ``local``) has its own keys."""
    if not key.strip():
        raise MessageError("Idempotency-Key must not be empty", field="Idempotency-Key")
    if len(key) > MAX_IDEMPOTENCY_KEY:
        raise MessageError(
            f"Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY} characters",
            field="Idempotency-Key",
        )
    return f"{api_key_id.hex if api_key_id else 'local'}:{key}"


def request_fingerprint(payload: dict[str, Any]) -> str:
    """SHA-256 of the validated request as dumped, with sorted keys, so key order and
    spacing do not matter. orjson: a tenth of the standard library's time."""
    try:
        canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer past 64 bits, which orjson does not write
        return legacy_fingerprint(payload)
    return hashlib.sha256(canonical).hexdigest()


def legacy_fingerprint(payload: dict[str, Any]) -> str:
    """The fingerprint as versions before orjson computed it (they differ only in how
    some numbers are written, e.g. ``1e-05``): a repeat of a request accepted by one
    of them still matches it."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(
    row: Any, fingerprint: str, earlier: Callable[[], str] | None = None
) -> EmailSendResult:
    """The first response again, exactly: what the job is doing now is ``GET /status``'s."""
    stored = row.request_hash
    if stored is not None and stored != fingerprint and (earlier is None or stored != earlier()):
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used with a different request; "
            "use a new key for a new email",
            field="Idempotency-Key",
        )
    request = row.data.get("request", {})
    scheduled_at = row.created_at
    if request.get("scheduledAt"):
        scheduled_at = max(row.created_at, datetime.fromisoformat(request["scheduledAt"]))
    return EmailSendResult(
        id=str(row.id),
        # a job cancelled at acceptance had every recipient suppressed
        status="suppressed" if row.status == JobStatus.CANCELLED else "queued",
        queue_id=str(row.queue_id) if row.queue_id else None,
        job_id=str(row.id),
        attempts=0,
        created_at=row.created_at,
        scheduled_at=scheduled_at,
        recipients=len(request.get("to", [])),
    )
