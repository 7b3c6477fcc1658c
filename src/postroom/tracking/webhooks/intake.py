"""Webhook intake: verify, store raw, deduplicate, apply, in one transaction.

Nothing is written before the request is verified and parsed: a forged, stale,
replayed or malformed request leaves no row behind. An accepted body is stored
in ``webhook_receipts`` (deduplicated by its SHA-256), its single-use nonces in
``webhook_nonces``, and its events are applied idempotently (each event once,
by its ESP event id or a hash), so ``replay`` may run any number of times.
"""

from __future__ import annotations

import hashlib
import uuid
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from cryptography.fernet import Fernet
from sqlalchemy import Table, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from postroom.clock import Clock
from postroom.db.lookup import by_name_or_id
from postroom.db.models import EmailProvider, WebhookNonce, WebhookReceipt
from postroom.errors import NotFound
from postroom.providers import credentials
from postroom.tracking import suppressions
from postroom.tracking.events import NewEvent, find_records, insert_ignore, record_many
from postroom.tracking.webhooks import mailgun, postmark, sendgrid, ses
from postroom.tracking.webhooks.base import ParsedEvent, Verified, WebhookForbidden

providers_t = cast(Table, EmailProvider.__table__)
#: expired nonces are purged at most this often (per database, in this process)
_PURGE_EVERY = timedelta(seconds=60)
_PURGED: weakref.WeakKeyDictionary[AsyncEngine, datetime] = weakref.WeakKeyDictionary()
receipts_t = cast(Table, WebhookReceipt.__table__)
nonces_t = cast(Table, WebhookNonce.__table__)


Verify = Callable[[bytes, Mapping[str, str], Mapping[str, Any], datetime, int], Verified]
AsyncVerify = Callable[
    [bytes, Mapping[str, str], Mapping[str, Any], datetime, int], Awaitable[Verified]
]


def _async(verify: Verify) -> AsyncVerify:
    async def wrapped(*args: Any) -> Verified:
        return verify(*args)

    return wrapped


@dataclass(frozen=True)
class Scheme:
    keys: frozenset[str]
    verify: AsyncVerify
    parse: Callable[[bytes], list[ParsedEvent]]
    #: verifying may wait on the network: no transaction is kept open meanwhile
    fetches: bool = False


SCHEMES: dict[str, Scheme] = {
    "mailgun": Scheme(mailgun.keys, _async(mailgun.verify), mailgun.parse),
    "sendgrid": Scheme(sendgrid.keys, _async(sendgrid.verify), sendgrid.parse),
    "postmark": Scheme(postmark.keys, _async(postmark.verify), postmark.parse),
    # SES publishes its events through SNS, which fetches certificates: async
    "ses": Scheme(ses.keys, ses.verify, ses.parse, fetches=True),
}


async def apply(
    conn: AsyncConnection, events: Sequence[ParsedEvent], *, now: datetime, soft_limit: int
) -> dict[str, int]:
    """Record ``events`` on their records; counts of what happened to them.

    Set-based whatever the batch size: one query matches every message id to its
    record, one insert stores the events (the duplicates, by ESP event id or hash,
    fall out of it), one update per event type moves the statuses.
    """
    counts = {"recorded": 0, "duplicates": 0, "unmatched": 0}
    with_id = [ev for ev in events if ev.message_id]
    counts["unmatched"] += len(events) - len(with_id)
    found = await find_records(conn, [(str(ev.message_id), ev.recipient) for ev in with_id])
    matched = [(ev, rec) for ev, rec in zip(with_id, found, strict=True) if rec is not None]
    counts["unmatched"] += len(with_id) - len(matched)
    stored = await record_many(
        conn,
        [
            NewEvent(
                record_id=rec.id,
                type=ev.type,
                timestamp=ev.timestamp,
                data=ev.data,
                event_id=ev.event_id,
                user_agent=ev.user_agent,
                ip_address=ev.ip_address,
                machine=ev.machine,
            )
            for ev, rec in matched
        ],
        {rec.id: rec for _, rec in matched},
    )
    for (ev, _), event_id in zip(matched, stored, strict=True):
        if event_id is None:
            counts["duplicates"] += 1
            continue
        counts["recorded"] += 1
        if ev.recipient and ev.type in suppressions.SUPPRESSING:
            await suppressions.after_event(
                conn,
                recipient=ev.recipient,
                event_type=ev.type,
                event_id=event_id,
                data=ev.data,
                now=now,
                soft_limit=soft_limit,
            )
    return counts


class WebhookIntake:
    def __init__(
        self, engine: AsyncEngine, fernet: Fernet, clock: Clock, *, max_age_s: int, soft_limit: int
    ) -> None:
        self.engine = engine
        self.fernet = fernet
        self.clock = clock
        self.max_age_s = max_age_s
        self.soft_limit = soft_limit

    async def _provider(self, ident: str, conn: AsyncConnection | None = None) -> Any:
        """The provider ``ident`` names (read on ``conn`` if given, else on its own)."""
        stmt = select(providers_t).where(by_name_or_id(providers_t, "name", ident))
        if conn is not None:
            rows = (await conn.execute(stmt)).all()
        else:
            async with self.engine.connect() as own:
                rows = (await own.execute(stmt)).all()
        if not rows:
            raise NotFound(f"there is no provider {ident!r}")
        row = rows[0]
        if row.type not in SCHEMES:
            raise NotFound(f"provider {ident!r} is of type {row.type!r}, which sends no webhooks")
        return row

    async def receive(self, ident: str, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """Verify and apply one webhook request for provider ``ident`` (name or id)."""
        # one connection, and but for SNS one transaction, for the lookup and the
        # writes: a checkout pings the server, and each begin and end is a round trip.
        # Leaving the block without the commit (a refused request) rolls back.
        async with self.engine.connect() as conn:
            row = await self._provider(ident, conn)
            scheme = SCHEMES[row.type]
            if scheme.fetches:
                await conn.rollback()
            secrets = credentials.decrypt(self.fernet, row.authentication or {})
            now = self.clock.now()
            verified = await scheme.verify(body, headers, secrets, now, self.max_age_s)
            events = scheme.parse(body)
            counts = await self._store(conn, row, body, events, verified, now)
            await conn.commit()
        if counts is None:
            return {"received": len(events), "recorded": 0, "duplicates": len(events)}
        note = {"note": verified.note} if verified.note else {}
        return {"received": len(events), **counts, **note}

    def _purge_due(self, now: datetime) -> bool:
        """Whether this request purges expired nonces: at most once a minute per
        database and process (a nonce kept a little longer changes nothing)."""
        last = _PURGED.get(self.engine)
        if last is not None and timedelta(0) <= now - last < _PURGE_EVERY:
            return False
        _PURGED[self.engine] = now
        return True

    async def _store(
        self,
        conn: AsyncConnection,
        row: Any,
        body: bytes,
        events: list[ParsedEvent],
        verified: Verified,
        now: datetime,
    ) -> dict[str, int] | None:
        """Nonces, the raw body and the events, in the caller's transaction; None when
        the very body was received before."""
        for nonce in verified.nonces:
            fresh = await conn.execute(
                insert_ignore(
                    conn, nonces_t, {"provider_id": row.id, "nonce": nonce, "seen_at": now}
                )
            )
            if not fresh.rowcount:
                raise WebhookForbidden("this signed request was already received: a replay")
        if verified.nonces and self._purge_due(now):  # only schemes with nonces add any
            # a nonce outlives the window in which its timestamp is accepted (SNS: an hour)
            keep_s = 2 * max(self.max_age_s, ses.MAX_AGE_S)
            await conn.execute(
                delete(nonces_t).where(nonces_t.c.seen_at < now - timedelta(seconds=keep_s))
            )
        receipt_id = uuid.uuid4()
        stored = await conn.execute(
            insert_ignore(
                conn,
                receipts_t,
                {
                    "id": receipt_id,
                    "provider_type": row.type,
                    "provider_id": row.id,
                    "provider_event_id": "sha256:" + hashlib.sha256(body).hexdigest(),
                    "payload": body.decode("utf-8", "replace"),
                    "received_at": now,
                    # processed in this same transaction, or not stored at all
                    "processed_at": now,
                },
            )
        )
        if not stored.rowcount:
            return None
        return await apply(conn, events, now=now, soft_limit=self.soft_limit)

    async def replay(
        self, *, provider: str | None = None, since: datetime | None = None
    ) -> dict[str, int]:
        """Apply stored payloads again (events already recorded stay recorded once)."""
        stmt = select(receipts_t).order_by(receipts_t.c.received_at, receipts_t.c.id)
        if provider is not None:
            row = await self._provider(provider)
            stmt = stmt.where(receipts_t.c.provider_id == row.id)
        if since is not None:
            stmt = stmt.where(receipts_t.c.received_at >= since)
        async with self.engine.connect() as conn:
            receipts = (await conn.execute(stmt)).all()
        totals = {"receipts": 0, "failed": 0, "recorded": 0, "duplicates": 0, "unmatched": 0}
        for receipt in receipts:
            scheme = SCHEMES.get(receipt.provider_type)
            if scheme is None:
                continue
            now = self.clock.now()
            totals["receipts"] += 1
            try:
                events = scheme.parse(receipt.payload.encode())
                async with self.engine.begin() as conn:
                    counts = await apply(conn, events, now=now, soft_limit=self.soft_limit)
                    await conn.execute(
                        update(receipts_t)
                        .where(receipts_t.c.id == receipt.id)
                        .values(processed_at=now, error=None)
                    )
            except Exception as exc:  # keep going: one bad payload must not stop the rest
                totals["failed"] += 1
                async with self.engine.begin() as conn:
                    await conn.execute(
                        update(receipts_t)
                        .where(receipts_t.c.id == receipt.id)
                        .values(error=f"{type(exc).__name__}: {exc}"[:2000])
                    )
                continue
            for key, value in counts.items():
                totals[key] += value
        return totals
