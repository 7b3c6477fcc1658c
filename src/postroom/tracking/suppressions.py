"""Addresses Postroom will not send to, and what adds them.

Scope ``global`` stops all mail to the address; ``marketing`` only mail of type
marketing (one-click unsubscribes). Hard bounces and complaints add a global
suppression, soft bounces after ``suppress_after_soft_bounces`` in a row (no
delivery in between). Addresses are kept lower-case.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import io
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from postroom.db.engine import reader
from postroom.db.models import EmailRecord, EmailSuppression, EmailTracking, EmailTrackingEvent
from postroom.errors import MessageError, NotFound
from postroom.tracking.events import insert_ignore
from postroom.types import EmailType, EventType, JobStatus, RecordStatus

if TYPE_CHECKING:  # the queue's store imports this module
    from postroom.queue.store import NewJob, NewRecord

    Item = tuple[NewJob, Sequence[NewRecord]]

suppressions_t = cast(Table, EmailSuppression.__table__)
records_t = cast(Table, EmailRecord.__table__)
tracking_t = cast(Table, EmailTracking.__table__)
events_t = cast(Table, EmailTrackingEvent.__table__)

SCOPES = ("global", "marketing")
REASONS = ("hard-bounce", "soft-bounce", "complaint", "unsubscribe", "manual")
PAGE_SIZE = 100
CSV_FIELDS = ("email", "scope", "reason", "createdAt", "expiresAt")


def _check(email: str, scope: str, reason: str) -> str:
    address = email.strip().lower()
    if "@" not in address or len(address) > 255 or any(c.isspace() for c in address):
        raise MessageError(f"{email!r} is not an email address", field="email")
    if scope not in SCOPES:
        raise MessageError(f"scope must be one of {', '.join(SCOPES)}", field="scope")
    if reason not in REASONS:
        raise MessageError(f"reason must be one of {', '.join(REASONS)}", field="reason")
    return address


async def add(
    conn: AsyncConnection,
    email: str,
    *,
    scope: str,
    reason: str,
    now: datetime,
    source_event_id: uuid.UUID | None = None,
    expires_at: datetime | None = None,
) -> bool:
    """Suppress ``email`` in ``scope``; False if it already was."""
    address = _check(email, scope, reason)
    row = {
        "id": uuid.uuid4(),
        "email": address,
        "scope": scope,
        "reason": reason,
        "source_event_id": source_event_id,
        "created_at": now,
        "expires_at": expires_at,
    }
    result = await conn.execute(insert_ignore(conn, suppressions_t, row))
    return bool(result.rowcount)


def _active(now: datetime) -> Any:
    return or_(suppressions_t.c.expires_at.is_(None), suppressions_t.c.expires_at > now)


def scopes_for(email_type: str) -> list[str]:
    """The suppression scopes that stop mail of ``email_type``."""
    return ["global"] + (["marketing"] if email_type == EmailType.MARKETING else [])


async def suppressed(
    conn: AsyncConnection, emails: Iterable[str], email_type: str, now: datetime
) -> dict[str, str]:
    """Which of ``emails`` may not receive mail of ``email_type``: lower-case address -> reason."""
    wanted = {e.strip().lower() for e in emails}
    if not wanted:
        return {}
    scopes = scopes_for(email_type)
    rows = await conn.execute(
        select(suppressions_t.c.email, suppressions_t.c.reason).where(
            suppressions_t.c.email.in_(wanted), suppressions_t.c.scope.in_(scopes), _active(now)
        )
    )
    return {r.email: r.reason for r in rows}


async def screen(conn: AsyncConnection, items: Sequence[Item]) -> list[Item]:
    """``items`` as they may be sent: suppressed recipients marked, with one query for all.

    A suppressed recipient's record is ``suppressed`` with the reason in its
    metadata and leaves the job's ``request.to`` (the envelope the worker sends
    to); a job left with nobody is ``cancelled``. Used by the group commit for raw
    MIME (SMTP relay, ``POST /send/raw``), inside the transaction that stores the
    jobs, so it adds a query per batch, not per message.
    """
    wanted = {r.recipient_email.lower() for _, records in items for r in records}
    if not wanted:
        return list(items)
    now = min(job.created_at for job, _ in items)
    rows = await conn.execute(
        select(suppressions_t.c.email, suppressions_t.c.scope, suppressions_t.c.reason).where(
            suppressions_t.c.email.in_(wanted), _active(now)
        )
    )
    found: dict[str, dict[str, str]] = {}
    for row in rows:
        found.setdefault(row.email, {})[row.scope] = row.reason
    if not found:
        return list(items)
    return [_without(job, records, found) for job, records in items]


def _without(job: NewJob, records: Sequence[NewRecord], found: dict[str, dict[str, str]]) -> Item:
    """``job`` and ``records`` with the recipients ``found`` suppressed for its type."""
    blocked: dict[str, str] = {}
    for r in records:
        scopes = found.get(r.recipient_email.lower(), {})
        reason = scopes.get("global")
        if reason is None and job.type == EmailType.MARKETING:
            reason = scopes.get("marketing")
        if reason is not None:
            blocked[r.recipient_email.lower()] = reason
    if not blocked:
        return job, records
    marked = [
        dataclasses.replace(
            r,
            status=RecordStatus.SUPPRESSED,
            metadata={**r.metadata, "suppressed": blocked[r.recipient_email.lower()]},
        )
        if r.recipient_email.lower() in blocked
        else r
        for r in records
    ]
    request = job.data["request"]
    to = [t for t in request["to"] if t["email"].lower() not in blocked]
    data = {**job.data, "request": {**request, "to": to}}
    status = job.status if to else JobStatus.CANCELLED
    return dataclasses.replace(job, data=data, status=status), marked


#: the event types that may add a suppression
SUPPRESSING = frozenset({EventType.BOUNCED, EventType.COMPLAINED, EventType.UNSUBSCRIBED})


async def after_event(
    conn: AsyncConnection,
    *,
    recipient: str,
    event_type: str,
    event_id: uuid.UUID,
    data: dict[str, Any],
    now: datetime,
    soft_limit: int,
) -> None:
    """Add the suppression an event calls for (bounce, complaint, unsubscribe)."""
    scope, reason = "global", ""
    if event_type == EventType.COMPLAINED:
        reason = "complaint"
    elif event_type == EventType.UNSUBSCRIBED:
        scope, reason = "marketing", "unsubscribe"
    elif event_type == EventType.BOUNCED:
        if data.get("bounceType") != "soft":
            reason = "hard-bounce"
        elif soft_limit and await _soft_in_a_row(conn, recipient) >= soft_limit:
            reason = "soft-bounce"
    if reason:
        await add(conn, recipient, scope=scope, reason=reason, now=now, source_event_id=event_id)


async def _soft_in_a_row(conn: AsyncConnection, recipient: str) -> int:
    """Soft bounces to the address since its last delivery."""
    mine = (
        select(tracking_t.c.id)
        .join(records_t, records_t.c.id == tracking_t.c.email_id)
        .where(func.lower(records_t.c.recipient_email) == recipient.strip().lower())
    )
    rows = (
        await conn.execute(
            select(events_t.c.type, events_t.c.data, events_t.c.timestamp)
            .where(
                events_t.c.tracking_id.in_(mine.scalar_subquery()),
                events_t.c.type.in_([EventType.BOUNCED, EventType.DELIVERED]),
            )
            .order_by(events_t.c.timestamp.desc())
            .limit(1000)
        )
    ).all()
    count = 0
    for row in rows:
        if row.type == EventType.DELIVERED or (row.data or {}).get("bounceType") != "soft":
            break
        count += 1
    return count


# -- the API's view --------------------------------------------------------------------


def to_json(row: Any) -> dict[str, Any]:
    return {
        "email": row.email,
        "scope": row.scope,
        "reason": row.reason,
        "sourceEventId": str(row.source_event_id) if row.source_event_id else None,
        "createdAt": row.created_at.isoformat(),
        "expiresAt": row.expires_at.isoformat() if row.expires_at else None,
    }


def _cursor(row: Any) -> str:
    return base64.urlsafe_b64encode(f"{row.email}\n{row.scope}".encode()).decode()


def _uncursor(cursor: str) -> tuple[str, str]:
    try:
        email, scope = base64.urlsafe_b64decode(cursor.encode()).decode().split("\n")
    except (ValueError, UnicodeDecodeError):
        raise MessageError("cursor is not one this API returned", field="cursor") from None
    return email, scope


class Suppressions:
    """List, add, remove, import and export suppressions."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def page(
        self, *, search: str | None, limit: int = PAGE_SIZE, cursor: str | None = None
    ) -> dict[str, Any]:
        stmt = select(suppressions_t).order_by(suppressions_t.c.email, suppressions_t.c.scope)
        if search:
            escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            stmt = stmt.where(suppressions_t.c.email.like(f"%{escaped}%", escape="\\"))
        if cursor:
            email, scope = _uncursor(cursor)
            stmt = stmt.where(
                or_(
                    suppressions_t.c.email > email,
                    and_(suppressions_t.c.email == email, suppressions_t.c.scope > scope),
                )
            )
        async with reader(self.engine).connect() as conn:
            rows = (await conn.execute(stmt.limit(limit + 1))).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "suppressions": [to_json(r) for r in rows],
            "nextCursor": _cursor(rows[-1]) if more else None,
        }

    async def add(
        self,
        email: str,
        *,
        scope: str,
        reason: str,
        now: datetime,
        expires_at: datetime | None = None,
    ) -> bool:
        async with self.engine.begin() as conn:
            return await add(
                conn, email, scope=scope, reason=reason, now=now, expires_at=expires_at
            )

    async def remove(self, email: str, *, scope: str | None = None) -> int:
        cond = suppressions_t.c.email == email.strip().lower()
        if scope is not None:
            cond = and_(cond, suppressions_t.c.scope == scope)
        async with self.engine.begin() as conn:
            count = (await conn.execute(delete(suppressions_t).where(cond))).rowcount
        if not count:
            raise NotFound(
                f"{email!r} is not suppressed" + (f" in scope {scope!r}" if scope else "")
            )
        return int(count)

    async def export_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_FIELDS)
        async with reader(self.engine).connect() as conn:
            rows = await conn.execute(
                select(suppressions_t).order_by(suppressions_t.c.email, suppressions_t.c.scope)
            )
            for r in rows:
                writer.writerow(
                    [
                        r.email,
                        r.scope,
                        r.reason,
                        r.created_at.isoformat(),
                        r.expires_at.isoformat() if r.expires_at else "",
                    ]
                )
        return out.getvalue()

    async def import_csv(self, text: str, *, now: datetime) -> dict[str, int]:
        """Add every row of a CSV with an ``email`` column (``scope``, ``reason``,
        ``expiresAt`` optional). All rows are checked first: one bad row adds none."""
        reader_ = csv.DictReader(io.StringIO(text))
        if not reader_.fieldnames or "email" not in reader_.fieldnames:
            raise MessageError("the CSV needs a header row with an 'email' column", field="csv")
        rows: list[tuple[str, str, str, datetime | None]] = []
        for line, row in enumerate(reader_, start=2):
            scope = (row.get("scope") or "global").strip()
            reason = (row.get("reason") or "manual").strip()
            expires: datetime | None = None
            try:
                email = _check(row.get("email") or "", scope, reason)
                if (row.get("expiresAt") or "").strip():
                    expires = datetime.fromisoformat(str(row["expiresAt"]).strip())
                    if expires.tzinfo is None:
                        expires = expires.replace(tzinfo=UTC)
            except (MessageError, ValueError) as exc:
                message = exc.message if isinstance(exc, MessageError) else str(exc)
                raise MessageError(f"CSV line {line}: {message}", field="csv") from None
            rows.append((email, scope, reason, expires))
        added = 0
        async with self.engine.begin() as conn:
            for email, scope, reason, expires in rows:
                added += await add(
                    conn, email, scope=scope, reason=reason, now=now, expires_at=expires
                )
        return {"rows": len(rows), "added": added}
