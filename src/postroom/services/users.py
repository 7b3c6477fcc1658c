"""Dashboard users and their sessions.

Passwords are hashed with argon2id (``argon2-cffi``'s defaults, rehashed when
those change). A sign-in with an unknown name still spends one hash
verification, so the answer time does not tell which names exist.

Lockout: after ``LOCK_AFTER`` consecutive failures a user is locked for
``LOCK_BASE`` seconds, doubling with each further failure up to ``LOCK_MAX``;
while locked, even the right password is refused (without checking it, so a
guesser learns nothing). A success resets the counter. The counter lives in the
database, so it holds across every process serving the dashboard.

A session is a random token in an HttpOnly cookie; the database keeps only its
SHA-256, so a copy of the database does not sign anyone in. Each session holds
its own CSRF token, which every state-changing form must send back.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.clock import Clock
from postroom.db.engine import reader
from postroom.db.models import DashboardSession, DashboardUser
from postroom.errors import AuthError, Conflict, MessageError, NotFound

users_t = cast(Table, DashboardUser.__table__)
sessions_t = cast(Table, DashboardSession.__table__)

ROLES = ("admin", "viewer")
#: consecutive failures before the first lock
LOCK_AFTER = 5
LOCK_BASE = timedelta(seconds=30)
LOCK_MAX = timedelta(minutes=15)
SESSION_TTL = timedelta(hours=12)
MIN_PASSWORD = 8
MAX_NAME = 100

_hasher = PasswordHasher()
#: verified against when the name is unknown, to spend the same time
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class SignInFailed(AuthError):
    """The name or password is wrong, or the account is locked or disabled."""

    code = "sign-in-failed"


@dataclass(frozen=True, kw_only=True, slots=True)
class User:
    id: uuid.UUID
    name: str
    role: str
    disabled: bool
    locked_until: datetime | None
    last_login_at: datetime | None
    created_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True, kw_only=True, slots=True)
class Session:
    user: User
    csrf_token: str
    expires_at: datetime


def _user(row: Any) -> User:
    return User(
        id=row.id,
        name=row.name,
        role=row.role,
        disabled=row.disabled_at is not None,
        locked_until=row.locked_until,
        last_login_at=row.last_login_at,
        created_at=row.created_at,
    )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise MessageError(f"the password must have at least {MIN_PASSWORD} characters")


def lock_for(failures: int) -> timedelta | None:
    """How long ``failures`` consecutive failures lock the user (None: not locked)."""
    if failures < LOCK_AFTER:
        return None
    lock: timedelta = LOCK_BASE * 2 ** min(failures - LOCK_AFTER, 10)
    return min(lock, LOCK_MAX)


class UserStore:
    def __init__(self, engine: AsyncEngine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock

    # -- accounts ----------------------------------------------------------------------

    async def create(self, name: str, password: str, role: str) -> User:
        name = name.strip()
        if not name or len(name) > MAX_NAME or any(c.isspace() or ord(c) < 32 for c in name):
            raise MessageError(f"a user name is 1 to {MAX_NAME} characters without spaces")
        if role not in ROLES:
            raise MessageError(f"the role must be one of {', '.join(ROLES)}")
        check_password(password)
        values = {
            "id": uuid.uuid4(),
            "name": name,
            "password_hash": _hasher.hash(password),
            "role": role,
            "failed_logins": 0,
            "created_at": self._clock.now(),
        }
        try:
            async with self._engine.begin() as conn:
                await conn.execute(insert(users_t).values(**values))
        except IntegrityError:
            raise Conflict(f"a user named {name!r} exists already") from None
        return await self.get(name)

    async def get(self, name: str) -> User:
        async with reader(self._engine).connect() as conn:
            row = (await conn.execute(select(users_t).where(users_t.c.name == name))).first()
        if row is None:
            raise NotFound(f"no user named {name!r}")
        return _user(row)

    async def list(self) -> list[User]:
        async with reader(self._engine).connect() as conn:
            rows = (await conn.execute(select(users_t).order_by(users_t.c.name))).all()
        return [_user(r) for r in rows]

    async def set_disabled(self, name: str, disabled: bool) -> User:
        """Disable (or re-enable) a user; disabling also signs them out everywhere."""
        user = await self.get(name)
        async with self._engine.begin() as conn:
            await conn.execute(
                update(users_t)
                .where(users_t.c.id == user.id)
                .values(disabled_at=self._clock.now() if disabled else None)
            )
            if disabled:
                await conn.execute(delete(sessions_t).where(sessions_t.c.user_id == user.id))
        return await self.get(name)

    async def set_password(self, name: str, password: str) -> User:
        """A new password; lifts a lockout and ends every session of the user."""
        check_password(password)
        user = await self.get(name)
        async with self._engine.begin() as conn:
            await conn.execute(
                update(users_t)
                .where(users_t.c.id == user.id)
                .values(password_hash=_hasher.hash(password), failed_logins=0, locked_until=None)
            )
            await conn.execute(delete(sessions_t).where(sessions_t.c.user_id == user.id))
        return await self.get(name)

    # -- signing in --------------------------------------------------------------------

    async def authenticate(self, name: str, password: str) -> User:
        """The user, if the password is right and the account usable; else SignInFailed."""
        now = self._clock.now()
        async with reader(self._engine).connect() as conn:
            row = (await conn.execute(select(users_t).where(users_t.c.name == name))).first()
        if row is None:
            _verify(_DUMMY_HASH, password)
            raise SignInFailed()
        if row.locked_until is not None and row.locked_until > now:
            raise SignInFailed(
                f"too many failed sign-ins: try again after {row.locked_until:%H:%M:%S} UTC"
            )
        if not _verify(row.password_hash, password):
            await self._failed(row.id, now)
            raise SignInFailed()
        if row.disabled_at is not None:
            raise SignInFailed()
        values: dict[str, Any] = {"failed_logins": 0, "locked_until": None, "last_login_at": now}
        if _hasher.check_needs_rehash(row.password_hash):
            values["password_hash"] = _hasher.hash(password)
        async with self._engine.begin() as conn:
            await conn.execute(update(users_t).where(users_t.c.id == row.id).values(**values))
        return _user(row)

    async def _failed(self, user_id: uuid.UUID, now: datetime) -> None:
        async with self._engine.begin() as conn:
            failures = (
                await conn.execute(
                    update(users_t)
                    .where(users_t.c.id == user_id)
                    .values(failed_logins=users_t.c.failed_logins + 1)
                    .returning(users_t.c.failed_logins)
                )
            ).scalar_one()
            lock = lock_for(failures)
            if lock is not None:
                await conn.execute(
                    update(users_t).where(users_t.c.id == user_id).values(locked_until=now + lock)
                )

    # -- sessions ----------------------------------------------------------------------

    async def open_session(self, user: User) -> tuple[str, Session]:
        """A new session; returns the cookie's token (shown once) and the session."""
        token = secrets.token_urlsafe(32)
        now = self._clock.now()
        session = Session(
            user=user, csrf_token=secrets.token_urlsafe(32), expires_at=now + SESSION_TTL
        )
        async with self._engine.begin() as conn:
            # sign-in is a good moment to forget expired sessions
            await conn.execute(delete(sessions_t).where(sessions_t.c.expires_at <= now))
            await conn.execute(
                insert(sessions_t).values(
                    id=_digest(token),
                    user_id=user.id,
                    csrf_token=session.csrf_token,
                    created_at=now,
                    expires_at=session.expires_at,
                )
            )
        return token, session

    async def session(self, token: str) -> Session | None:
        """The live session for a cookie's token; None when unknown, expired or disabled."""
        query = (
            select(users_t, sessions_t.c.csrf_token, sessions_t.c.expires_at)
            .join(sessions_t, sessions_t.c.user_id == users_t.c.id)
            .where(sessions_t.c.id == _digest(token))
        )
        async with reader(self._engine).connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None or row.expires_at <= self._clock.now() or row.disabled_at is not None:
            return None
        return Session(user=_user(row), csrf_token=row.csrf_token, expires_at=row.expires_at)

    async def close_session(self, token: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(sessions_t).where(sessions_t.c.id == _digest(token)))


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False
