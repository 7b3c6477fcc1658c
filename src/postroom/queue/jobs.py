"""Values that travel between the queue store and the worker."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal


@dataclass(frozen=True, kw_only=True, slots=True)
class Job:
    """A claimed job, as the claim returned it."""

    id: uuid.UUID
    queue_id: uuid.UUID | None
    type: str
    priority: int
    #: attempts including the one this claim starts
    attempts: int
    max_attempts: int
    data: dict[str, Any]
    scheduled_at: datetime
    #: the lease token this claim holds; every write back is fenced on it
    locked_by: str
    #: the previous attempt's error (``providerId``, ``code``, ...), for failover
    last_error: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: Any) -> Job:
        """From a claimed ``email_jobs`` row: a SQLAlchemy row, or any mapping of its
        columns (the driver's record)."""
        m = getattr(row, "_mapping", row)
        return cls(
            id=m["id"],
            queue_id=m["queue_id"],
            type=m["type"],
            priority=m["priority"],
            attempts=m["attempts"],
            max_attempts=m["max_attempts"],
            data=m["data"],
            scheduled_at=m["scheduled_at"],
            locked_by=m["locked_by"],
            last_error=m["error"],
        )

    @property
    def failed_provider_id(self) -> uuid.UUID | None:
        """The provider the previous attempt failed at, if any."""
        raw = (self.last_error or {}).get("providerId")
        return uuid.UUID(raw) if raw else None

    @property
    def request(self) -> dict[str, Any]:
        return self.data["request"]  # type: ignore[no-any-return]


#: sent: handed over; retry: try again later; failed: give up;
#: deferred: not tried (no provider, rate limit) - the attempt is given back
Outcome = Literal["sent", "retry", "failed", "deferred"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Result:
    """What happened to one claimed job; the worker writes these back in batches."""

    job: Job
    outcome: Outcome
    finished_at: datetime
    started_at: datetime | None = None
    provider_id: uuid.UUID | None = None
    provider_name: str | None = None
    #: the provider's message id (sent)
    message_id: str | None = None
    #: when to try again (retry, deferred)
    retry_at: datetime | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_detail: dict[str, Any] = field(default_factory=dict)
    #: recipients refused while the rest were accepted: address -> reason
    rejected: dict[str, str] = field(default_factory=dict)

    @property
    def duration_ms(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds() * 1000
