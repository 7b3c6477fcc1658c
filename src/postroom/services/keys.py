"""API keys: random, shown once, stored as a prefix plus a SHA-256 digest.

Keys carry 256 bits of randomness, so a fast hash is enough (no password
stretching needed); the prefix finds the row, the digest is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.clock import Clock
from postroom.db.engine import reader
from postroom.db.lookup import by_name_or_id
from postroom.db.models import ApiKey
from postroom.errors import AuthError, Conflict, ForbiddenError, MessageError, NotFound
from postroom.shared_reads import SharedReads
from postroom.types import ApiScope

keys_t = cast(Table, ApiKey.__table__)
KEY_PREFIX = "pr_"
#: verified keys are remembered this long, so a revoked key stops working within it
CACHE_TTL_S = 5.0
#: ``last_used_at`` is written at most this often per key (a write per request would not do)
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True, kw_only=True, slots=True)
class KeyInfo:
    id: uuid.UUID
    name: str
    prefix: str
    scopes: frozenset[str]
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None

    def allows(self, scope: ApiScope) -> bool:
        if ApiScope.ADMIN in self.scopes or scope in self.scopes:
            return True
        # sending includes reading the status of what you sent; manage includes read
        return scope == ApiScope.READ and bool({ApiScope.MANAGE} & self.scopes)

    def require(self, scope: ApiScope) -> None:
        if not self.allows(scope):
            raise ForbiddenError(f"this API key needs the {scope.value!r} scope")


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(raw: Iterable[str]) -> frozenset[str]:
    scopes = set()
    for item in raw:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                scopes.add(ApiScope(part).value)
            except ValueError:
                known = ", ".join(s.value for s in ApiScope)
                raise MessageError(f"unknown scope {part!r} (known: {known})") from None
    if not scopes:
        raise MessageError("an API key needs at least one scope")
    return frozenset(scopes)


class KeyStore:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        self._cache: dict[str, tuple[KeyInfo, float]] = {}
        #: database checks under way, by digest: requests that arrive together share one
        self._checks: SharedReads[str, KeyInfo] = SharedReads()

    async def create(self, name: str, scopes: Iterable[str]) -> tuple[str, KeyInfo]:
        """A new key; the plain key is returned here and never again."""
        scope_set = parse_scopes(scopes)
        prefix = KEY_PREFIX + secrets.token_hex(4)
        key = f"{prefix}_{secrets.token_urlsafe(32)}"
        now = self._clock.now()
        key_id = uuid.uuid4()
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(keys_t).values(
                    id=key_id,
                    name=name,
                    prefix=prefix,
                    key_hash=_digest(key),
                    scopes=sorted(scope_set),
                    created_at=now,
                )
            )
        info = KeyInfo(id=key_id, name=name, prefix=prefix, scopes=scope_set, created_at=now)
        return key, info

    async def verify(self, key: str) -> KeyInfo:
        """The key's info; AuthError if it is unknown or revoked.

        A verified key is cached for :data:`CACHE_TTL_S` in this process: a key revoked
        elsewhere (another process, the CLI) stops working here within that bound, one
        revoked through this store at once. When the entry expires, the requests that
        arrive together share one database check instead of each making its own.
        """
        digest = _digest(key)
        cached = self._cache.get(digest)
        if cached and cached[1] > time.monotonic():
            return cached[0]
        return await self._checks.get(digest, lambda: self._check(key, digest))

    async def _check(self, key: str, digest: str) -> KeyInfo:
        # pr_<8 hex>_<secret>; the secret itself may contain "_"
        prefix = "_".join(key.split("_", 2)[:2]) if key.startswith(KEY_PREFIX) else ""
        async with reader(self._engine).connect() as conn:
            row = (await conn.execute(select(keys_t).where(keys_t.c.prefix == prefix))).first()
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            raise AuthError("the API key is not valid")
        if row.revoked_at is not None:
            raise AuthError("the API key has been revoked")
        now = self._clock.now()
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(keys_t).where(keys_t.c.id == row.id).values(last_used_at=now)
                )
        info = _info(row)
        self._cache[digest] = (info, time.monotonic() + CACHE_TTL_S)
        return info

    async def list(self) -> list[KeyInfo]:
        async with reader(self._engine).connect() as conn:
            rows = (await conn.execute(select(keys_t).order_by(keys_t.c.created_at))).all()
        return [_info(row) for row in rows]

    async def revoke(self, ident: str) -> KeyInfo:
        """Revoke by prefix or id."""
        cond = by_name_or_id(keys_t, "prefix", ident)
        async with self._engine.begin() as conn:
            row = (await conn.execute(select(keys_t).where(cond))).first()
            if row is None:
                raise NotFound(f"no API key {ident!r}")
            if row.revoked_at is not None:
                raise Conflict(
                    f"API key {row.prefix} ({row.name}) was already revoked on "
                    f"{row.revoked_at:%Y-%m-%d %H:%M} UTC"
                )
            await conn.execute(
                update(keys_t).where(keys_t.c.id == row.id).values(revoked_at=self._clock.now())
            )
        self._cache.clear()
        return _info(row)


def _info(row: object) -> KeyInfo:
    r = cast(ApiKey, row)
    return KeyInfo(
        id=r.id,
        name=r.name,
        prefix=r.prefix,
        scopes=frozenset(r.scopes),
        created_at=r.created_at,
        last_used_at=r.last_used_at,
        revoked_at=r.revoked_at,
    )
