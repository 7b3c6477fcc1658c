"""Enumerations from the specification, stored in the database as their values."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ProviderType(StrEnum):
    SMTP = "smtp"  #: any SMTP relay
    SENDGRID = "sendgrid"  #: SendGrid v3 mail/send
    MAILGUN = "mailgun"  #: Mailgun v3 messages
    SES = "ses"  #: Amazon SES v2 SendEmail
    POSTMARK = "postmark"  #: Postmark /email
    CUSTOM = "custom"  #: signed JSON POST to your own endpoint
    FILE = "file"  #: development outbox: one .eml file per message


class QueueType(StrEnum):
    IMMEDIATE = "immediate"  #: system and notification mail
    BULK = "bulk"  #: marketing mail
    SCHEDULED = "scheduled"  #: mail for later
    TRANSACTIONAL = "transactional"  #: receipts, password resets


class QueuePriority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"


class EmailType(StrEnum):
    TRANSACTIONAL = "transactional"
    MARKETING = "marketing"
    SYSTEM = "system"
    NOTIFICATION = "notification"


class JobPriority(IntEnum):
    """1..5; 5 is the most urgent, the same direction as provider priority."""

    LOWEST = 1
    LOW = 2
    NORMAL = 3
    HIGH = 4
    URGENT = 5


class JobStatus(StrEnum):
    PENDING = "pending"  #: waiting for its scheduled_at and a worker
    PROCESSING = "processing"  #: leased by a worker
    COMPLETED = "completed"  #: handed to a provider
    FAILED = "failed"  #: permanently failed or out of attempts
    CANCELLED = "cancelled"  #: cancelled before sending


class RecordStatus(StrEnum):
    """Per-recipient status of an ``email_records`` row."""

    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    OPENED = "opened"
    CLICKED = "clicked"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: not attempted: the address is on the suppression list
    SUPPRESSED = "suppressed"


class RecipientType(StrEnum):
    TO = "to"
    CC = "cc"
    BCC = "bcc"


class EventType(StrEnum):
    SENT = "sent"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    OPENED = "opened"
    CLICKED = "clicked"
    UNSUBSCRIBED = "unsubscribed"
    #: added: the receiving server asked to try again later (no status change)
    DEFERRED = "deferred"
    #: added: the provider dropped the message without trying (no status change)
    FAILED = "failed"


class ProcessorStatus(StrEnum):
    IDLE = "idle"
    PROCESSING = "processing"
    PAUSED = "paused"
    STOPPED = "stopped"
    ERROR = "error"


class ApiScope(StrEnum):
    SEND = "send"  #: send mail and read its status
    READ = "read"  #: read status, queues, providers, analytics
    MANAGE = "manage"  #: change queues, providers, templates
    ADMIN = "admin"  #: everything
