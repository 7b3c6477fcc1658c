"""Webhook endpoints on the wire: what ``POST`` and ``PUT /webhooks/endpoints`` take."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from postroom.schemas.base import ApiModel
from postroom.schemas.email import Text

#: ``events.catalog.EVENT_TYPES``, spelled out for the OpenAPI document
WebhookEventType = Literal[
    "email.queued",
    "email.sent",
    "email.delivered",
    "email.deferred",
    "email.bounced",
    "email.complained",
    "email.opened",
    "email.clicked",
    "email.unsubscribed",
    "email.failed",
    "email.suppressed",
]
#: http(s) with a host; the server also refuses credentials in it and non-public addresses
EndpointUrl = Annotated[
    str, Field(min_length=8, max_length=2000, pattern=r"^[hH][tT][tT][pP][sS]?://[^/?#\s]+")
]
Description = Annotated[Text, Field(max_length=1000)]
#: a network in CIDR form, such as ``10.0.0.0/8`` or ``127.0.0.1/32``
Network = Annotated[str, Field(min_length=1, max_length=64)]
EventTypes = Annotated[list[WebhookEventType], Field(max_length=20)]
Networks = Annotated[list[Network], Field(max_length=50)]


class EndpointCreate(ApiModel):
    """``eventTypes`` empty or left out: every event. ``allowNetworks`` lets the endpoint
    reach these non-public networks (an internal receiver), as a custom provider's does."""

    url: EndpointUrl
    description: Description | None = None
    event_types: EventTypes = Field(default_factory=list)
    enabled: bool = True
    allow_networks: Networks = Field(default_factory=list)


class EndpointUpdate(ApiModel):
    """Only the fields given change."""

    url: EndpointUrl | None = None
    description: Description | None = None
    event_types: EventTypes | None = None
    enabled: bool | None = None
    allow_networks: Networks | None = None
