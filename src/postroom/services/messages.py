"""The message log: find emails, and read what Postroom sent.

An email is a job; its recipients are records. A search matches an email when
one of its records matches the recipient, subject, provider and date filters, its
job the status filter and its request the tag filter. Results are newest first,
one page at a time.

The content of an email is the MIME Postroom sent: the development outbox's
``.eml`` file when the ``file`` provider wrote one (the very bytes), otherwise the
message composed again from the stored request (same body, headers and
attachments; only ``Date`` and ``Message-ID`` are those of the first attempt when
the outbox has them).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, and_, exists, func, select, type_coerce
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.compose.message import compose
from postroom.db.engine import reader
from postroom.db.models import (
    EmailJob,
    EmailProvider,
    EmailRecord,
    EmailTracking,
    EmailTrackingEvent,
)
from postroom.errors import NotFound
from postroom.services.status import EMAIL_STATUS
from postroom.types import JobStatus

jobs_t = cast(Table, EmailJob.__table__)
records_t = cast(Table, EmailRecord.__table__)
providers_t = cast(Table, EmailProvider.__table__)
tracking_t = cast(Table, EmailTracking.__table__)
events_t = cast(Table, EmailTrackingEvent.__table__)

PAGE_SIZE = 50
#: the email statuses a search may ask for -> job statuses
STATUS_FILTER: dict[str, JobStatus] = {v: JobStatus(k) for k, v in EMAIL_STATUS.items()}


@dataclass(frozen=True, kw_only=True, slots=True)
class Search:
    recipient: str = ""
    subject: str = ""
    status: str = ""
    provider: str = ""
    tag: str = ""
    #: only emails a provider of this type took (``file``: the outbox)
    provider_type: str = ""
    day_from: date | None = None
    day_to: date | None = None
    page: int = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class MessageRow:
    id: str
    created_at: datetime
    subject: str
    status: str
    recipients: list[str]
    providers: list[str]
    tags: list[str]


@dataclass(frozen=True, kw_only=True, slots=True)
class SearchPage:
    rows: list[MessageRow]
    page: int
    has_next: bool
    search: Search = field(default_factory=Search)


@dataclass(frozen=True, kw_only=True, slots=True)
class StoredMessage:
    id: str
    mime: bytes
    #: True: the outbox file as written; False: composed again from the request
    from_outbox: bool
    request: dict[str, Any]


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped.lower()}%"


@dataclass(frozen=True, kw_only=True, slots=True)
class TrackingEvent:
    """One delivery, open, click, bounce... of one recipient, for the timeline."""

    timestamp: datetime
    type: str
    recipient: str
    user_agent: str | None


class MessageLog:
    def __init__(self, engine: AsyncEngine, *, data_dir: Path, message_id_domain: str) -> None:
        self._engine = engine
        self._data_dir = data_dir
        self._message_id_domain = message_id_domain

    async def search(self, search: Search, *, page_size: int = PAGE_SIZE) -> SearchPage:
        """One page of the emails that match ``search``, newest first."""
        conds: list[Any] = []
        rec_conds: list[Any] = [records_t.c.job_id == jobs_t.c.id]
        if search.recipient:
            rec_conds.append(
                func.lower(records_t.c.recipient_email).like(_like(search.recipient), escape="\\")
            )
        if search.subject:
            rec_conds.append(
                func.lower(records_t.c.subject).like(_like(search.subject), escape="\\")
            )
        if search.provider:
            by_name = select(providers_t.c.id).where(providers_t.c.name == search.provider)
            rec_conds.append(records_t.c.provider_id.in_(by_name.scalar_subquery()))
        if search.provider_type:
            by_type = select(providers_t.c.id).where(providers_t.c.type == search.provider_type)
            rec_conds.append(records_t.c.provider_id.in_(by_type.scalar_subquery()))
        if len(rec_conds) > 1:
            conds.append(exists(select(records_t.c.id).where(and_(*rec_conds))))
        if search.status:
            conds.append(jobs_t.c.status == STATUS_FILTER[search.status])
        if search.day_from:
            conds.append(jobs_t.c.created_at >= _midnight(search.day_from))
        if search.day_to:
            conds.append(jobs_t.c.created_at < _midnight(search.day_to + timedelta(days=1)))
        if search.tag:
            conds.append(self._has_tag(search.tag))
        page = max(1, search.page)
        stmt = (
            select(jobs_t.c.id, jobs_t.c.created_at, jobs_t.c.status, jobs_t.c.data)
            .where(and_(True, *conds))
            .order_by(jobs_t.c.created_at.desc(), jobs_t.c.id.desc())
            .limit(page_size + 1)
            .offset((page - 1) * page_size)
        )
        async with reader(self._engine).connect() as conn:
            jobs = (await conn.execute(stmt)).all()
            ids = [j.id for j in jobs[:page_size]]
            recs = (
                await conn.execute(
                    select(records_t.c.job_id, records_t.c.recipient_email, providers_t.c.name)
                    .outerjoin(providers_t, providers_t.c.id == records_t.c.provider_id)
                    .where(records_t.c.job_id.in_(ids))
                    .order_by(records_t.c.created_at, records_t.c.recipient_email)
                )
            ).all()
        by_job: dict[uuid.UUID, list[Any]] = {}
        for r in recs:
            by_job.setdefault(r.job_id, []).append(r)
        rows = [_row(j, by_job.get(j.id, [])) for j in jobs[:page_size]]
        return SearchPage(rows=rows, page=page, has_next=len(jobs) > page_size, search=search)

    def _has_tag(self, tag: str) -> Any:
        if self._engine.dialect.name == "postgresql":
            data = type_coerce(jobs_t.c.data, JSONB)
            return data["request"]["tags"].contains([tag])
        each = func.json_each(jobs_t.c.data, "$.request.tags").table_valued("value")
        return exists(select(1).select_from(each).where(each.c.value == tag))

    async def providers(self) -> list[str]:
        """Every provider's name, for the search form."""
        async with reader(self._engine).connect() as conn:
            names = await conn.execute(select(providers_t.c.name).order_by(providers_t.c.name))
            return sorted({n for (n,) in names})

    async def stored(self, email_id: str) -> StoredMessage:
        """The email's MIME: the outbox file when there is one, else composed again."""
        try:
            key = uuid.UUID(email_id)
        except ValueError:
            raise NotFound(f"no email with id {email_id!r}") from None
        async with reader(self._engine).connect() as conn:
            job = (await conn.execute(select(jobs_t).where(jobs_t.c.id == key))).first()
            if job is None:
                raise NotFound(f"no email with id {email_id!r}")
            dirs = (
                await conn.execute(
                    select(providers_t.c.config)
                    .join(records_t, records_t.c.provider_id == providers_t.c.id)
                    .where(records_t.c.job_id == key, providers_t.c.type == "file")
                    .distinct()
                )
            ).all()
        request = dict((job.data or {}).get("request") or {})
        for (config,) in dirs:
            path = self._outbox_path(config or {}, str(key))
            if path.is_file():
                return StoredMessage(
                    id=str(key), mime=path.read_bytes(), from_outbox=True, request=request
                )
        if "from" not in request or "to" not in request:
            raise NotFound(f"email {email_id!r} has no stored content")
        message = compose(
            str(key), request, now=job.created_at, message_id_domain=self._message_id_domain
        )
        return StoredMessage(id=str(key), mime=message.mime, from_outbox=False, request=request)

    async def events(self, email_id: str) -> list[TrackingEvent]:
        """The tracking events of every recipient of the email, oldest first."""
        stmt = (
            select(
                events_t.c.timestamp,
                events_t.c.type,
                events_t.c.user_agent,
                records_t.c.recipient_email,
            )
            .join(tracking_t, tracking_t.c.id == events_t.c.tracking_id)
            .join(records_t, records_t.c.id == tracking_t.c.email_id)
            .where(records_t.c.job_id == uuid.UUID(email_id))
            .order_by(events_t.c.timestamp, events_t.c.id)
        )
        async with reader(self._engine).connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            TrackingEvent(
                timestamp=r.timestamp,
                type=r.type,
                recipient=r.recipient_email,
                user_agent=r.user_agent,
            )
            for r in rows
        ]

    def _outbox_path(self, config: dict[str, Any], email_id: str) -> Path:
        # the same rule as providers.file.FileProvider.from_spec and path_for
        directory = Path(config.get("directory") or "outbox")
        if not directory.is_absolute():
            directory = self._data_dir / directory
        return directory / f"{email_id}.eml"


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0, 0), tzinfo=UTC)


def _row(job: Any, recs: list[Any]) -> MessageRow:
    request = (job.data or {}).get("request") or {}
    return MessageRow(
        id=str(job.id),
        created_at=job.created_at,
        subject=str(request.get("subject", "")),
        status=EMAIL_STATUS.get(job.status, job.status),
        recipients=[r.recipient_email for r in recs],
        providers=sorted({r.name for r in recs if r.name}),
        tags=[str(t) for t in request.get("tags") or ()],
    )
