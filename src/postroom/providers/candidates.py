"""The providers a router chooses among: each enabled row built once, with what this
process knows about it (breaker, limit allowance, connection slots).

Which providers take mail at all is decided here too: the development outbox
(``file``) is routable only when nothing else is enabled, and otherwise is the last
resort that ``ProviderRouter.acquire`` may use while every other provider is
unavailable and none ever worked.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar, cast

from cryptography.fernet import Fernet
from sqlalchemy import Table, select

from postroom.db.models import EmailProvider
from postroom.providers import credentials, ratelimit, registry
from postroom.providers.base import Provider, ProviderSpec
from postroom.providers.breaker import BreakerSettings, CircuitBreaker
from postroom.providers.slots import Slots
from postroom.types import ProviderType

__all__ = [
    "ENABLED_IN_ORDER",
    "Candidate",
    "NoProvider",
    "ProviderState",
    "Wait",
    "build",
    "last_resort",
    "routable",
    "spec_of",
]

providers_t = cast(Table, EmailProvider.__table__)


#: the enabled providers, in the order they are tried
ENABLED_IN_ORDER = (
    select(providers_t)
    .where(providers_t.c.enabled.is_(True))
    .order_by(providers_t.c.priority.desc(), providers_t.c.created_at)
)
T = TypeVar("T")


def routable(providers: Sequence[T], type_of: Callable[[T], str]) -> list[T]:
    """The providers mail goes to while they are available: the development outbox
    only when nothing else is enabled (otherwise it is the last resort, see
    :func:`last_resort`)."""
    real = [p for p in providers if type_of(p) != ProviderType.FILE]
    return real or list(providers)


def last_resort(providers: Sequence[T], type_of: Callable[[T], str]) -> list[T]:
    """The development outboxes, when other providers are enabled: they take mail only
    while those are unavailable and never worked (``ProviderRouter.acquire``)."""
    outboxes = [p for p in providers if type_of(p) == ProviderType.FILE]
    return outboxes if len(outboxes) < len(providers) else []


def spec_of(row: Any, fernet: Fernet) -> ProviderSpec:
    """The spec of an ``email_providers`` row, credentials decrypted."""
    return ProviderSpec(
        id=str(row.id),
        name=row.name,
        type=row.type,
        priority=row.priority,
        config=row.config or {},
        authentication=credentials.decrypt(fernet, row.authentication or {}),
        encryption=row.encryption or {},
        limits=row.limits or {},
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class NoProvider:
    """No provider can take the message now; try again after ``retry_after_s``."""

    retry_after_s: float
    #: machine-readable reason: ``no-provider``, ``rate-limited``, ``unavailable``
    code: str
    reason: str


@dataclass(kw_only=True, slots=True)
class ProviderState:
    """What this process knows about one provider's health and limits."""

    breaker: CircuitBreaker
    allowance: ratelimit.Allowance
    #: the provider said "slow down" (SMTP 421 throttling, HTTP 429): not before then
    throttled_until: datetime | None = None
    #: its connection slots in this process (None: the provider has no pool to wait for)
    slots: Slots | None = None
    #: the latest cluster-wide "down" evidence acted on, and the latest sign of life here
    down_seen_at: datetime | None = None
    alive_at: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Candidate:
    id: uuid.UUID
    spec: ProviderSpec
    provider: Provider
    updated_at: datetime
    limits: ratelimit.Limits
    state: ProviderState


@dataclass(frozen=True, kw_only=True, slots=True)
class Wait:
    """Why a candidate cannot take the message now, and until when."""

    candidate: Candidate
    code: Literal["rate-limited", "unavailable"]
    until: datetime
    detail: str
    #: the provider's own limits are full: deferrals are spread over its windows
    limited: bool = False


def build(row: Any, fernet: Fernet, context: registry.ProviderContext) -> Candidate:
    """A candidate for an ``email_providers`` row, with fresh breaker and limit state.

    Raises:
        ConfigError: the row's config, limits or monitoring are invalid.
    """
    spec = spec_of(row, fernet)
    limits = ratelimit.Limits.parse(spec.limits)
    breaker = CircuitBreaker(BreakerSettings.from_monitoring(row.monitoring))
    provider = registry.build(spec, context)
    pool_size = getattr(provider, "pool_size", None)
    slots = (
        Slots(provider=spec.name, size=pool_size, wait_s=breaker.settings.slot_wait_s)
        if isinstance(pool_size, int)
        else None
    )
    return Candidate(
        id=row.id,
        spec=spec,
        provider=provider,
        updated_at=row.updated_at,
        limits=limits,
        state=ProviderState(
            breaker=breaker,
            allowance=ratelimit.Allowance(windows=limits.windows),
            slots=slots,
        ),
    )
