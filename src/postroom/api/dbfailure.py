"""Which database errors mean "the database cannot serve now" rather than a bug.

Answering 500 to a client whose request met a restarting PostgreSQL tells it the
request itself was wrong; 503 with ``Retry-After`` tells it to retry, which is
safe because nothing was accepted (and with the same ``Idempotency-Key`` it is
safe even if something was). asyncpg's errors often reach us as SQLAlchemy's base
``DBAPIError`` rather than ``OperationalError``, so the SQLSTATE and the message
decide, not the class. A full disk is ``507 Insufficient Storage``: retrying soon
will not help until someone frees space. Anything else (a bad query, a constraint
that should have held) stays a 500 and is logged as the bug it is.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout


@dataclass(frozen=True, kw_only=True, slots=True)
class Failure:
    http_status: int
    code: str
    summary: str
    #: the database's own words, so an operator knows what to fix
    reason: str
    retry_after_s: int


#: SQLSTATEs of an unavailable server: class 08 (connection exception) is matched
#: by prefix; 57P01-05 shutdown, crash, starting up, database dropped, idle timeout;
#: 53200/53300 out of memory, too many connections; 25006 read-only (standby)
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05", "53200", "53300"})
_UNAVAILABLE_STATES |= {"25006"}
_FULL_STATES = frozenset({"53100"})  # disk_full
_UNAVAILABLE_WORDS = (
    "starting up",
    "shutting down",
    "not yet accepting connections",
    "connection was closed",
    "connection is closed",
    "terminating connection",
    "server closed the connection",
    "connection refused",
    "connection reset",
    "database is locked",
    "unable to open database",
    "disk i/o error",
    "readonly database",
    "timeout",
    "timed out",
)
_FULL_WORDS = ("database or disk is full", "no space left on device", "could not extend file")
#: SQLite reports bad queries as OperationalError too; these stay 500
_QUERY_BUG_WORDS = ("no such table", "no such column", "syntax error", "no such function")


def _reason(exc: BaseException) -> str:
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return text[:200]


def _sqlstate(exc: BaseException) -> str | None:
    for candidate in (getattr(exc, "orig", None), exc, exc.__cause__):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(state, str):
            return state
    return None


def _full(reason: str) -> Failure:
    return Failure(
        http_status=507,
        code="insufficient-storage",
        summary="the database cannot store anything: it is out of space",
        reason=reason,
        retry_after_s=60,
    )


def _down(reason: str) -> Failure:
    return Failure(
        http_status=503,
        code="unavailable",
        summary="the database is not available",
        reason=reason,
        retry_after_s=5,
    )


def classify(exc: BaseException) -> Failure | None:
    """A :class:`Failure` when ``exc`` means the database cannot serve; None for a bug."""
    if isinstance(exc, PoolTimeout):
        return _down("no database connection became free in time")
    reason = _reason(exc)
    words = reason.lower()
    for os_error in (exc, getattr(exc, "orig", None)):
        if isinstance(os_error, OSError):
            return _full(reason) if os_error.errno == errno.ENOSPC else _down(reason)
    is_driver_error = isinstance(exc, DBAPIError) or type(exc).__module__.startswith("asyncpg")
    if not is_driver_error:
        return None
    state = _sqlstate(exc)
    if state in _FULL_STATES or any(w in words for w in _FULL_WORDS):
        return _full(reason)
    if state is not None and (state.startswith("08") or state in _UNAVAILABLE_STATES):
        return _down(reason)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return _down(reason)
    if any(w in words for w in _QUERY_BUG_WORDS):
        return None
    if any(w in words for w in _UNAVAILABLE_WORDS):
        return _down(reason)
    return None
