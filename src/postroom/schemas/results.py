"""What the API answers: the spec's ``EmailSendResult`` and ``EmailStatus``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from postroom.schemas.base import PublicModel


class EmailSendResult(PublicModel):
    id: str
    status: str
    queue_id: str | None = None
    job_id: str | None = None
    provider: str | None = None
    attempts: int = 0
    created_at: datetime
    scheduled_at: datetime | None = None
    recipients: int = 0


class RecipientStatus(PublicModel):
    id: str
    email: str
    type: str
    status: str
    message_id: str | None = None
    provider: str | None = None
    sent_at: datetime | None = None
    #: why the recipient was not attempted (``status`` is ``suppressed``)
    suppressed: str | None = None
    delivered_at: datetime | None = None
    bounced_at: datetime | None = None
    opened_at: datetime | None = None
    clicked_at: datetime | None = None
    #: event counts; opens and clicks also human-only (machine ones excluded)
    summary: dict[str, Any] | None = None


class AttemptPublic(PublicModel):
    attempt: int
    provider: str | None = None
    outcome: str
    error_code: str | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime
    duration_ms: float | None = None


class EmailStatus(PublicModel):
    id: str
    status: str
    job_status: str
    queue_id: str | None = None
    provider: str | None = None
    attempts: int
    max_attempts: int
    subject: str
    created_at: datetime
    scheduled_at: datetime | None = None
    sent_at: datetime | None = None
    failed_at: datetime | None = None
    error: dict[str, Any] | None = None
    delivery_status: str | None = None
    tracking_events: list[dict[str, Any]] = Field(default_factory=list)
    recipients: list[RecipientStatus] = Field(default_factory=list)
    attempt_log: list[AttemptPublic] = Field(default_factory=list)
