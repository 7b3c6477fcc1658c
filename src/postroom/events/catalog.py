"""The events an endpoint can receive, as they are named on the wire (``email.<kind>``).

The outbox stores the bare kind (``sent``); payloads and endpoint filters use the
prefixed type (``email.sent``), as Standard Webhooks recommends for event names.
"""

from __future__ import annotations

from enum import StrEnum


class EventKind(StrEnum):
    QUEUED = "queued"  #: accepted and queued for a recipient
    SENT = "sent"  #: handed to a provider
    DELIVERED = "delivered"  #: the receiving server accepted it (ESP webhook, DSN)
    DEFERRED = "deferred"  #: a temporary failure; it will be tried again
    BOUNCED = "bounced"  #: refused by the receiving server (or at RCPT)
    COMPLAINED = "complained"  #: the recipient marked it as spam
    OPENED = "opened"  #: the open pixel was loaded
    CLICKED = "clicked"  #: a tracked link was followed
    UNSUBSCRIBED = "unsubscribed"  #: the recipient unsubscribed
    FAILED = "failed"  #: given up: it will not be sent
    SUPPRESSED = "suppressed"  #: not attempted: the address is suppressed


PREFIX = "email."

#: every wire type, in the order above
EVENT_TYPES: tuple[str, ...] = tuple(PREFIX + kind.value for kind in EventKind)


def wire_type(kind: str) -> str:
    """``sent`` -> ``email.sent``."""
    return PREFIX + kind
