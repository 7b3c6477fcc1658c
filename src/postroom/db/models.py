"""The tables: the specification's schema, plus what DESIGN.md adds.

Names and columns follow the spec. Additions are marked ``# added:``.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from postroom.db.types import InetType, JSONType, UTCDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {  # noqa: RUF012
        datetime: UTCDateTime(),
        dict[str, Any]: JSONType,
        list[Any]: JSONType,
    }


def _uuid() -> uuid.UUID:
    return uuid.uuid4()


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class EmailProvider(Timestamps, Base):
    __tablename__ = "email_providers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(50))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    priority: Mapped[int] = mapped_column(Integer, server_default=text("100"))
    config: Mapped[dict[str, Any]]
    limits: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'"))
    #: credentials, Fernet-encrypted: ``{"encrypted": "<token>"}``
    authentication: Mapped[dict[str, Any]]
    encryption: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'"))
    monitoring: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'"))

    __table_args__ = (
        Index("idx_email_providers_enabled", "enabled"),
        Index("idx_email_providers_priority", text("priority DESC")),
    )


class EmailQueue(Timestamps, Base):
    __tablename__ = "email_queues"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    type: Mapped[str] = mapped_column(String(50))
    priority: Mapped[str] = mapped_column(String(20), server_default=text("'normal'"))
    #: a disabled queue refuses new jobs (the spec's addJob check)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    #: added: a paused queue accepts jobs but its processors claim none
    paused: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    config: Mapped[dict[str, Any]]
    processor: Mapped[dict[str, Any]]
    retry: Mapped[dict[str, Any]]
    monitoring: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'"))

    __table_args__ = (Index("idx_email_queues_enabled", "enabled"),)


def _present(column: str) -> dict[str, Any]:
    """A partial index of the rows where ``column`` (NULL until something happens,
    or for most mail) is set: queueing mail writes no entry in it."""
    where = text(f"{column} IS NOT NULL")
    return {"postgresql_where": where, "sqlite_where": where}


class EmailJob(Base):
    __tablename__ = "email_jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    queue_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("email_queues.id", ondelete="SET NULL")
    )
    type: Mapped[str] = mapped_column(String(50))
    priority: Mapped[int] = mapped_column(Integer, server_default=text("3"))
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    max_attempts: Mapped[int] = mapped_column(Integer, server_default=text("3"))
    data: Mapped[dict[str, Any]]
    scheduled_at: Mapped[datetime] = mapped_column(server_default=func.now())
    processed_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    failed_at: Mapped[datetime | None]
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # added: the lease. locked_by is "<worker id>" and, with attempts, fences late writes
    locked_by: Mapped[str | None] = mapped_column(String(100))
    locked_until: Mapped[datetime | None]
    # added: a client-chosen key that makes a repeated request return the first result,
    # stored as "<scope>:<key>" (scope: the API key's id, or "local" for the facade)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    last_error_code: Mapped[str | None] = mapped_column(String(100))
    # added: the API key that sent it (NULL: the in-process facade or the CLI); scopes
    # idempotency keys and limits what a ``send`` key may read
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # added: SHA-256 of the normalized request, to refuse an idempotency key reused
    # with another body
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # added: for queue statistics (completed/failed in the last 24 h)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        Index("idx_email_jobs_queue_status", "queue_id", "status"),
        Index("idx_email_jobs_scheduled_at", "scheduled_at"),
        # added: the claim scans pending jobs in claim order
        Index("idx_email_jobs_claim", "status", text("priority DESC"), "scheduled_at", "id"),
        # only jobs a worker holds have a lease (0017)
        Index("idx_email_jobs_lease", "status", "locked_until", **_present("locked_until")),
        # added: analytics count today's failures by it
        Index("idx_email_jobs_failed_at", "failed_at", **_present("failed_at")),
    )


class EmailJobAttempt(Base):
    """added: one row per send attempt (time, provider, outcome, error)."""

    __tablename__ = "email_job_attempts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("email_jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    provider_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("email_providers.id", ondelete="SET NULL")
    )
    provider_name: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime]
    #: sent | retry | failed | deferred | released
    outcome: Mapped[str] = mapped_column(String(20))
    error_code: Mapped[str | None] = mapped_column(String(100))
    error_message: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float | None] = mapped_column(Numeric(12, 3, asdecimal=False))

    __table_args__ = (Index("idx_email_job_attempts_job", "job_id", "attempt"),)


class EmailRecord(Base):
    """One row per recipient of an email."""

    __tablename__ = "email_records"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("email_jobs.id", ondelete="SET NULL")
    )
    provider_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("email_providers.id", ondelete="SET NULL")
    )
    queue_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("email_queues.id", ondelete="SET NULL")
    )
    recipient_email: Mapped[str] = mapped_column(String(255))
    # added: to | cc | bcc, and the display name
    recipient_type: Mapped[str] = mapped_column(String(3), server_default=text("'to'"))
    recipient_name: Mapped[str | None] = mapped_column(String(255))
    sender_email: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str] = mapped_column(String(500))
    type: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20))
    delivery_id: Mapped[str | None] = mapped_column(String(255))
    message_id: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    sent_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]
    bounced_at: Mapped[datetime | None]
    opened_at: Mapped[datetime | None]
    clicked_at: Mapped[datetime | None]
    #: added (0012): the first open / click of any kind, machine-made included
    #: (``opened_at`` / ``clicked_at`` are people's only)
    opened_any_at: Mapped[datetime | None]
    clicked_any_at: Mapped[datetime | None]
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONType, server_default=text("'{}'")
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    # added: the bulk send this record belongs to (for its progress)
    bulk_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # added (0012): the analytics dimensions, copied from the request when queued: the
    # campaign tag (the message's first tag) and the template it is rendered from
    tag: Mapped[str | None] = mapped_column(String(100))
    template_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)

    __table_args__ = (
        Index("idx_email_records_bulk", "bulk_id", "status", **_present("bulk_id")),
        Index("idx_email_records_recipient", "recipient_email"),
        Index("idx_email_records_status", "status"),
        Index("idx_email_records_sent_at", "sent_at", **_present("sent_at")),
        Index("idx_email_records_job", "job_id"),
        # added (0013): webhooks and bounce reports find records by provider message id
        Index("idx_email_records_message_id", "message_id", **_present("message_id")),
        # added: analytics count today's events by these
        Index("idx_email_records_delivered_at", "delivered_at", **_present("delivered_at")),
        Index("idx_email_records_bounced_at", "bounced_at", **_present("bounced_at")),
        Index("idx_email_records_opened_at", "opened_at", **_present("opened_at")),
        Index("idx_email_records_clicked_at", "clicked_at", **_present("clicked_at")),
        Index("idx_email_records_opened_any_at", "opened_any_at", **_present("opened_any_at")),
        Index("idx_email_records_clicked_any_at", "clicked_any_at", **_present("clicked_any_at")),
    )


class EmailTracking(Base):
    __tablename__ = "email_tracking"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    email_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("email_records.id", ondelete="CASCADE")
    )
    delivery_id: Mapped[str] = mapped_column(String(255))
    recipient_email: Mapped[str] = mapped_column(String(255))
    tracking_enabled: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(20))
    events: Mapped[list[Any]] = mapped_column(server_default=text("'[]'"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        Index("idx_email_tracking_delivery_id", "delivery_id"),
        # added (0009): one tracking row per recipient record
        Index("uq_email_tracking_email_id", "email_id", unique=True),
    )


class EmailTrackingEvent(Base):
    __tablename__ = "email_tracking_events"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    tracking_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("email_tracking.id", ondelete="CASCADE")
    )
    type: Mapped[str] = mapped_column(String(50))
    timestamp: Mapped[datetime] = mapped_column(server_default=func.now())
    data: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'"))
    user_agent: Mapped[str | None] = mapped_column(Text)
    ip_address: Mapped[str | None] = mapped_column(InetType)
    location: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    #: added (0009): provider event id or content hash; a repeated event is stored once
    dedupe_key: Mapped[str | None] = mapped_column(String(255))
    #: added (0009): an open or click made by a privacy proxy, prefetcher or scanner
    machine: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))

    __table_args__ = (
        Index("idx_email_tracking_events_tracking_id", "tracking_id"),
        Index("idx_email_tracking_events_type", "type"),
        Index("uq_email_tracking_events_dedupe_key", "dedupe_key", unique=True),
        # added: analytics count complaints and unsubscribes per period
        Index("idx_email_tracking_events_type_time", "type", "timestamp"),
    )


class EmailTemplate(Timestamps, Base):
    __tablename__ = "email_templates"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(50))
    subject: Mapped[str] = mapped_column(String(500))
    content: Mapped[dict[str, Any]]
    variables: Mapped[list[Any]] = mapped_column(server_default=text("'[]'"))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    # added: set by DELETE; the versions stay for mail already queued
    archived_at: Mapped[datetime | None]

    __table_args__ = (Index("idx_email_templates_name", "name"),)


class EmailTemplateVersion(Base):
    """added: an immutable snapshot of each template version."""

    __tablename__ = "email_template_versions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    template_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("email_templates.id", ondelete="CASCADE")
    )
    version: Mapped[int] = mapped_column(Integer)
    subject: Mapped[str] = mapped_column(String(500))
    content: Mapped[dict[str, Any]]
    variables: Mapped[list[Any]] = mapped_column(server_default=text("'[]'"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (UniqueConstraint("template_id", "version"),)


class EmailBulk(Base):
    """added: one bulk send's shared message, stored once for all its recipients."""

    __tablename__ = "email_bulks"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    request: Mapped[dict[str, Any]]
    total: Mapped[int] = mapped_column(Integer)
    queue_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("email_queues.id", ondelete="SET NULL")
    )
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime]
    # added: as on email_jobs, the request an idempotency key was first used with
    # (a reuse with another body is refused) and the API key that sent it (it owns it)
    request_hash: Mapped[str | None] = mapped_column(String(64))
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)


class EmailDkimKey(Base):
    """added: a sender domain's DKIM key; one active per domain, retired ones kept."""

    __tablename__ = "email_dkim_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    domain: Mapped[str] = mapped_column(String(255))
    selector: Mapped[str] = mapped_column(String(63))
    #: rsa | ed25519
    algorithm: Mapped[str] = mapped_column(String(20))
    #: the PEM private key, Fernet-encrypted with POSTROOM_SECRET_KEY
    private_key: Mapped[str] = mapped_column(Text)
    #: base64 of the public key, as the DNS record's p= tag carries it
    public_key: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]
    retired_at: Mapped[datetime | None]

    __table_args__ = (UniqueConstraint("domain", "selector"),)


class EmailAnalyticsDaily(Base):
    __tablename__ = "email_analytics_daily"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    date: Mapped[date] = mapped_column(Date)
    provider_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("email_providers.id", ondelete="SET NULL")
    )
    queue_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("email_queues.id", ondelete="SET NULL")
    )
    total_sent: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    total_delivered: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    total_bounced: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    total_complained: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    total_opened: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    total_clicked: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    total_unsubscribed: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # added: message type and campaign tag (a message's first tag) dimensions, failures
    type: Mapped[str | None] = mapped_column(String(50))
    tag: Mapped[str | None] = mapped_column(String(100))
    total_failed: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # added (0012): opens and clicks people made (the totals include machine-made ones),
    # and the template dimension (a message's pinned template)
    total_human_opened: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    total_human_clicked: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    template_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    avg_processing_time: Mapped[Decimal | None] = mapped_column(Numeric(8, 3))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    __table_args__ = (
        Index("idx_email_analytics_daily_date", "date"),
        Index("idx_email_analytics_daily_provider", "provider_id", "date"),
    )


class EmailAnalyticsHourly(Base):
    """added: ``email_analytics_daily``'s figures per UTC hour (today, hourly trends)."""

    __tablename__ = "email_analytics_hourly"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    hour: Mapped[datetime]
    provider_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("email_providers.id", ondelete="SET NULL")
    )
    queue_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("email_queues.id", ondelete="SET NULL")
    )
    type: Mapped[str | None] = mapped_column(String(50))
    tag: Mapped[str | None] = mapped_column(String(100))
    total_sent: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    total_delivered: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    total_bounced: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    total_complained: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    total_opened: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    total_clicked: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    total_unsubscribed: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    total_failed: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # added (0012): opens and clicks people made (the totals include machine-made ones),
    # and the template dimension (a message's pinned template)
    total_human_opened: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    total_human_clicked: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    template_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime]

    __table_args__ = (Index("idx_email_analytics_hourly_hour", "hour"),)


class EmailAnalyticsHour(Base):
    """added: the UTC hours summed into ``email_analytics_hourly``."""

    __tablename__ = "email_analytics_hours"

    hour: Mapped[datetime] = mapped_column(primary_key=True)
    rolled_at: Mapped[datetime]


class EmailAnalyticsDay(Base):
    """added: the UTC days summed into ``email_analytics_daily`` (read from there after)."""

    __tablename__ = "email_analytics_days"

    date: Mapped[date] = mapped_column(Date, primary_key=True)
    rolled_at: Mapped[datetime]


class EmailSuppression(Base):
    """added: addresses Postroom will not send to (hard bounces, complaints, unsubscribes)."""

    __tablename__ = "email_suppressions"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    email: Mapped[str] = mapped_column(String(255))
    #: "global" or an EmailType such as "marketing"
    scope: Mapped[str] = mapped_column(String(50), server_default=text("'global'"))
    reason: Mapped[str] = mapped_column(String(50))
    source_event_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime | None]

    __table_args__ = (UniqueConstraint("email", "scope", name="uq_email_suppressions_email_scope"),)


class WebhookReceipt(Base):
    """added: every ESP webhook body as received, for audit and deduplication."""

    __tablename__ = "webhook_receipts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    provider_type: Mapped[str] = mapped_column(String(50))
    provider_event_id: Mapped[str | None] = mapped_column(String(255))
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(server_default=func.now())
    processed_at: Mapped[datetime | None]
    #: added (0009): the provider whose webhook URL received it
    provider_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    #: added (0009): why processing failed, if it did (``postroom webhooks replay`` retries)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint(
            "provider_type", "provider_event_id", name="uq_webhook_receipts_provider_event"
        ),
    )


class WebhookNonce(Base):
    """added (0009): single-use webhook signature tokens (Mailgun), so replays are refused."""

    __tablename__ = "webhook_nonces"

    provider_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    nonce: Mapped[str] = mapped_column(String(255), primary_key=True)
    seen_at: Mapped[datetime]

    __table_args__ = (Index("ix_webhook_nonces_seen_at", "seen_at"),)


class ApiKey(Base):
    """added: API keys, stored as a public prefix plus a SHA-256 of the whole key."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(255))
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    scopes: Mapped[list[Any]]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


# -- added: provider limits, outcome statistics and health checks (migration 0002) -----
# Shared by every worker process, so limits and health hold across the whole cluster.


class ProviderLimitCounter(Base):
    """Slots reserved per provider and limit window (``providers.ratelimit``)."""

    __tablename__ = "provider_limit_counters"

    provider_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("email_providers.id", ondelete="CASCADE"), primary_key=True
    )
    #: rate | hourly | daily
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    #: windows are aligned to the Unix epoch: rate windows to multiples of rateDelta,
    #: hourly and daily ones to UTC hours and days
    window_start: Mapped[datetime] = mapped_column(primary_key=True)
    #: the limit as configured when the window was last written
    cap: Mapped[int] = mapped_column(Integer)
    used: Mapped[int] = mapped_column(Integer)
    #: what the latest reservation got, read back through RETURNING
    granted: Mapped[int] = mapped_column(Integer)


class ProviderStat(Base):
    """Send outcomes per provider and UTC minute, summed over every worker."""

    __tablename__ = "provider_stats"

    provider_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("email_providers.id", ondelete="CASCADE"), primary_key=True
    )
    minute: Mapped[datetime] = mapped_column(primary_key=True)
    sent: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    #: failures that count against the provider's health (not permanent rejections)
    failed: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    #: failures the provider itself called throttling (SMTP 421 "too many", HTTP 429)
    throttled: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    #: messages the provider refused for good (a verdict on the message, not on it)
    rejected: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    latency_ms_total: Mapped[float] = mapped_column(Float, server_default=text("0"))
    latency_samples: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_success_at: Mapped[datetime | None]
    last_failure_at: Mapped[datetime | None]
    #: ``<error code>: <message>`` of the latest failure in the minute
    last_error: Mapped[str | None] = mapped_column(Text)


class ProviderCheck(Base):
    """The latest ``check()`` of each provider; ``started_at`` lets one process claim it."""

    __tablename__ = "provider_checks"

    provider_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("email_providers.id", ondelete="CASCADE"), primary_key=True
    )
    started_at: Mapped[datetime]
    checked_at: Mapped[datetime | None]
    ok: Mapped[bool | None] = mapped_column(Boolean)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[str | None] = mapped_column(Text)


# -- added: dashboard users and sessions (migration 0007) -------------------------------


class DashboardUser(Base):
    """A person who signs in to the web dashboard; ``role`` is ``admin`` or ``viewer``."""

    __tablename__ = "dashboard_users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    #: argon2id, in the PHC string format
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20))
    #: consecutive failed sign-ins; reset by a successful one
    failed_logins: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    locked_until: Mapped[datetime | None]
    last_login_at: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class DashboardSession(Base):
    """One signed-in browser; ``id`` is the SHA-256 of the cookie's token."""

    __tablename__ = "dashboard_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("dashboard_users.id", ondelete="CASCADE"), index=True
    )
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


# -- added: outgoing event webhooks (migration 0011) -----------------------------------


class WebhookEndpoint(Base):
    """A URL that receives Postroom's events, signed per Standard Webhooks."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    url: Mapped[str] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    #: ``email.*`` types it receives; empty: every type
    event_types: Mapped[list[Any]]
    enabled: Mapped[bool] = mapped_column(Boolean)
    #: the ``whsec_`` signing secret, Fernet-encrypted with POSTROOM_SECRET_KEY
    secret: Mapped[str] = mapped_column(Text)
    #: networks (CIDR) the SSRF guard lets it reach beside public addresses
    allow_networks: Mapped[list[Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


#: an autoincrement key on both databases (SQLite's is INTEGER PRIMARY KEY)
_SERIAL = BigInteger().with_variant(Integer(), "sqlite")


class WebhookOutbox(Base):
    """Events written in the transaction that caused them, until fanned out."""

    __tablename__ = "webhook_outbox"

    id: Mapped[int] = mapped_column(_SERIAL, primary_key=True, autoincrement=True)
    #: queued | sent | delivered | ... (without the ``email.`` prefix)
    type: Mapped[str] = mapped_column(String(30))
    #: the recipient record the event is about (no foreign key: pruning may remove it)
    record_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    occurred_at: Mapped[datetime]
    data: Mapped[dict[str, Any]]


class WebhookDelivery(Base):
    """One event for one endpoint: its signed body, state and retry schedule."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    event_type: Mapped[str] = mapped_column(String(40))
    #: the exact JSON body, so every attempt signs and sends the same bytes
    payload: Mapped[str] = mapped_column(Text)
    #: pending | delivering | delivered | failed
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime]
    locked_by: Mapped[str | None] = mapped_column(String(100))
    locked_until: Mapped[datetime | None]
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        Index("idx_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("idx_webhook_deliveries_endpoint", "endpoint_id", "created_at"),
    )


class WebhookDeliveryAttempt(Base):
    """One POST of a delivery: when, the answer's status code, latency and error."""

    __tablename__ = "webhook_delivery_attempts"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=_uuid)
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    #: delivered | retry | failed
    outcome: Mapped[str] = mapped_column(String(20))
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("idx_webhook_delivery_attempts_delivery", "delivery_id", "attempt"),)


class HealthProbe(Base):
    """added (0004): the write ``/healthz`` commits (and deletes) to prove writes succeed."""

    __tablename__ = "health_probes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    written_at: Mapped[datetime]
    #: a few pages, so the probe needs free space as an email would
    padding: Mapped[bytes] = mapped_column(LargeBinary)
