"""Webhook endpoints: register, change, rotate the secret, read the delivery log, redeliver.

A URL is checked when it is registered or changed, as a custom provider's is
(``providers.egress.url_refusal``): an address that is not public is refused with
the reason, unless its network is in the endpoint's ``allowNetworks``. The
dispatcher checks again at every connection (DNS may change). The signing secret
is shown once, when it is made; it is stored Fernet-encrypted with
POSTROOM_SECRET_KEY, like provider credentials.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from cryptography.fernet import Fernet
from sqlalchemy import Table, and_, delete, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.clock import Clock
from postroom.db.engine import reader
from postroom.db.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint
from postroom.errors import ConfigError, Conflict, NotFound, RequestInvalid
from postroom.events import deliveries, retry, signing, subscriptions
from postroom.providers.egress import Resolver, parse_networks, parse_url, resolve_host, url_refusal

endpoints_t = cast(Table, WebhookEndpoint.__table__)
deliveries_t = cast(Table, WebhookDelivery.__table__)
attempts_t = cast(Table, WebhookDeliveryAttempt.__table__)

PAGE_SIZE = 50


def endpoint_json(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "url": row.url,
        "description": row.description,
        "eventTypes": list(row.event_types or []),
        "enabled": bool(row.enabled),
        "allowNetworks": list(row.allow_networks or []),
        "createdAt": row.created_at.isoformat(),
        "updatedAt": row.updated_at.isoformat(),
    }


def delivery_json(row: Any, attempts: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "endpointId": str(row.endpoint_id),
        "eventType": row.event_type,
        "status": row.status,
        "attempts": row.attempts,
        "maxAttempts": row.max_attempts,
        "nextAttemptAt": row.next_attempt_at.isoformat() if row.status == "pending" else None,
        "lastStatusCode": row.last_status_code,
        "lastError": row.last_error,
        "createdAt": row.created_at.isoformat(),
        "finishedAt": row.finished_at.isoformat() if row.finished_at else None,
        "payload": json.loads(row.payload),
        "attemptLog": [
            {
                "attempt": a.attempt,
                "startedAt": a.started_at.isoformat(),
                "outcome": a.outcome,
                "statusCode": a.status_code,
                "latencyMs": a.latency_ms,
                "error": a.error,
            }
            for a in attempts
        ],
    }


def _cursor(when: datetime, ident: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{when.isoformat()}|{ident}".encode()).decode()


def _uncursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        when, _, ident = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        at = datetime.fromisoformat(when)
        if at.tzinfo is None:  # never one of ours; a UTC column refuses it
            raise ValueError(when)
        return at, uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise RequestInvalid(
            [{"field": "cursor", "message": "not a cursor this API returned"}]
        ) from None


class Endpoints:
    """The endpoints table and the delivery log, for the API, the CLI and the facade."""

    def __init__(
        self,
        engine: AsyncEngine,
        fernet: Fernet,
        clock: Clock,
        *,
        resolver: Resolver = resolve_host,
    ) -> None:
        self.engine = engine
        self.fernet = fernet
        self.clock = clock
        self._resolver = resolver

    # -- endpoints ---------------------------------------------------------------------

    async def create(
        self,
        *,
        url: str,
        description: str | None = None,
        event_types: Sequence[str] = (),
        enabled: bool = True,
        allow_networks: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Register an endpoint; the answer carries its secret, shown this once."""
        await self._check_url(url, allow_networks)
        secret = signing.new_secret()
        now = self.clock.now()
        row = {
            "id": uuid.uuid4(),
            "url": url,
            "description": description,
            "event_types": sorted(set(event_types)),
            "enabled": enabled,
            "secret": self.fernet.encrypt(secret.encode()).decode(),
            "allow_networks": list(allow_networks),
            "created_at": now,
            "updated_at": now,
        }
        async with self.engine.begin() as conn:
            await conn.execute(insert(endpoints_t), [row])
        subscriptions.invalidate(self.engine)
        return {**endpoint_json(_Row(row)), "secret": secret}

    async def list_page(
        self, *, limit: int = PAGE_SIZE, cursor: str | None = None
    ) -> dict[str, Any]:
        """Endpoints oldest first; ``nextCursor`` continues the list."""
        e = endpoints_t.c
        stmt = select(endpoints_t).order_by(e.created_at, e.id).limit(limit + 1)
        if cursor:
            when, ident = _uncursor(cursor)
            stmt = stmt.where(or_(e.created_at > when, and_(e.created_at == when, e.id > ident)))
        async with reader(self.engine).connect() as conn:
            rows = (await conn.execute(stmt)).all()
        more = len(rows) > limit
        rows = rows[:limit]
        return {
            "endpoints": [endpoint_json(r) for r in rows],
            "nextCursor": _cursor(rows[-1].created_at, rows[-1].id) if more else None,
        }

    async def get(self, endpoint_id: uuid.UUID) -> dict[str, Any]:
        return endpoint_json(await self._row(endpoint_id))

    async def update(self, endpoint_id: uuid.UUID, changes: dict[str, Any]) -> dict[str, Any]:
        """Change the given fields (``url``, ``description``, ``eventTypes`` as
        ``event_types``, ``enabled``, ``allowNetworks`` as ``allow_networks``)."""
        current = await self._row(endpoint_id)
        if "url" in changes or "allow_networks" in changes:
            await self._check_url(
                changes.get("url", current.url),
                changes.get("allow_networks", current.allow_networks or []),
            )
        values = dict(changes)
        if "event_types" in values:
            values["event_types"] = sorted(set(values["event_types"]))
        if "allow_networks" in values:
            values["allow_networks"] = list(values["allow_networks"])
        values["updated_at"] = self.clock.now()
        async with self.engine.begin() as conn:
            await conn.execute(
                update(endpoints_t).where(endpoints_t.c.id == endpoint_id).values(**values)
            )
        subscriptions.invalidate(self.engine)
        return await self.get(endpoint_id)

    async def delete(self, endpoint_id: uuid.UUID) -> None:
        """Remove an endpoint and its delivery log."""
        async with self.engine.begin() as conn:
            gone = await conn.execute(delete(endpoints_t).where(endpoints_t.c.id == endpoint_id))
        if not gone.rowcount:
            raise NotFound(f"no webhook endpoint {endpoint_id}")
        subscriptions.invalidate(self.engine)

    async def rotate_secret(self, endpoint_id: uuid.UUID) -> dict[str, Any]:
        """A new secret, in use from the next POST; the old one stops at once."""
        await self._row(endpoint_id)
        secret = signing.new_secret()
        async with self.engine.begin() as conn:
            await conn.execute(
                update(endpoints_t)
                .where(endpoints_t.c.id == endpoint_id)
                .values(
                    secret=self.fernet.encrypt(secret.encode()).decode(),
                    updated_at=self.clock.now(),
                )
            )
        return {"id": str(endpoint_id), "secret": secret}

    # -- deliveries --------------------------------------------------------------------

    async def deliveries(
        self,
        endpoint_id: uuid.UUID,
        *,
        status: str | None = None,
        limit: int = PAGE_SIZE,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """The endpoint's deliveries, newest first, each with its attempts."""
        await self._row(endpoint_id)
        d = deliveries_t.c
        stmt = (
            select(deliveries_t)
            .where(d.endpoint_id == endpoint_id)
            .order_by(d.created_at.desc(), d.id.desc())
            .limit(limit + 1)
        )
        if status:
            stmt = stmt.where(d.status == status)
        if cursor:
            when, ident = _uncursor(cursor)
            stmt = stmt.where(or_(d.created_at < when, and_(d.created_at == when, d.id < ident)))
        async with reader(self.engine).connect() as conn:
            rows = (await conn.execute(stmt)).all()
            more = len(rows) > limit
            rows = rows[:limit]
            log = await self._attempts(conn, [r.id for r in rows])
        return {
            "deliveries": [delivery_json(r, log.get(r.id, [])) for r in rows],
            "nextCursor": _cursor(rows[-1].created_at, rows[-1].id) if more else None,
        }

    async def redeliver(self, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> dict[str, Any]:
        """Send a delivery again now, with a fresh attempt budget (``events.retry``)."""
        d = deliveries_t.c
        mine = and_(d.id == delivery_id, d.endpoint_id == endpoint_id)
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(d.status).where(mine))).first()
            if row is None:
                raise NotFound(f"no delivery {delivery_id} for webhook endpoint {endpoint_id}")
            if row.status == deliveries.DELIVERING:
                raise Conflict("the delivery is being sent now; retry it once it has finished")
            await conn.execute(
                update(deliveries_t)
                .where(mine)
                .values(
                    status=deliveries.PENDING,
                    next_attempt_at=self.clock.now(),
                    max_attempts=d.attempts + retry.MAX_ATTEMPTS,
                    finished_at=None,
                )
            )
        return await self.delivery(endpoint_id, delivery_id)

    async def delivery(self, endpoint_id: uuid.UUID, delivery_id: uuid.UUID) -> dict[str, Any]:
        d = deliveries_t.c
        async with reader(self.engine).connect() as conn:
            row = (
                await conn.execute(
                    select(deliveries_t).where(d.id == delivery_id, d.endpoint_id == endpoint_id)
                )
            ).first()
            if row is None:
                raise NotFound(f"no delivery {delivery_id} for webhook endpoint {endpoint_id}")
            log = await self._attempts(conn, [row.id])
        return delivery_json(row, log.get(row.id, []))

    # -- helpers -----------------------------------------------------------------------

    async def _row(self, endpoint_id: uuid.UUID) -> Any:
        async with reader(self.engine).connect() as conn:
            row = (
                await conn.execute(select(endpoints_t).where(endpoints_t.c.id == endpoint_id))
            ).first()
        if row is None:
            raise NotFound(f"no webhook endpoint {endpoint_id}")
        return row

    @staticmethod
    async def _attempts(conn: Any, ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
        out: dict[uuid.UUID, list[Any]] = {}
        if not ids:
            return out
        a = attempts_t.c
        stmt = select(attempts_t).where(a.delivery_id.in_(ids)).order_by(a.delivery_id, a.attempt)
        for row in (await conn.execute(stmt)).all():
            out.setdefault(row.delivery_id, []).append(row)
        return out

    async def _check_url(self, url: str, allow_networks: Sequence[str]) -> None:
        try:
            parsed = parse_url(url, "url")
            allow = parse_networks(list(allow_networks))
        except ConfigError as exc:
            field = "allowNetworks" if "allowNetworks" in exc.message else "url"
            raise RequestInvalid([{"field": field, "message": exc.message}]) from None
        refusal = await url_refusal(parsed, allow, "url", self._resolver)
        if refusal is not None:
            refusal = refusal.replace("config.allowNetworks", "allowNetworks")
            raise RequestInvalid([{"field": "url", "message": refusal}])


class _Row:
    """Attribute access over a dict, so a new row renders as a stored one does."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
