"""Choose the provider for a message: highest priority first, among those that can take it.

Provider rows are reloaded periodically, so providers added or changed through the
API reach running workers without a restart; instances are rebuilt only when
their row changed.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from cryptography.fernet import Fernet
from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.clock import Clock
from postroom.db.models import EmailProvider
from postroom.errors import PostroomError
from postroom.providers import credentials, registry
from postroom.providers.base import OutgoingMessage, Provider, ProviderSpec
from postroom.types import ProviderType

log = logging.getLogger(__name__)
#: how long to wait before trying a job again when no provider could take it
NO_PROVIDER_DELAY_S = 15.0
providers_t = cast(Table, EmailProvider.__table__)


@dataclass(frozen=True, kw_only=True, slots=True)
class NoProvider:
    """No provider can take the message now; try again after ``retry_after_s``."""

    retry_after_s: float
    #: machine-readable reason: ``no-provider``, ``rate-limited``, ...
    code: str
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Candidate:
    id: uuid.UUID
    spec: ProviderSpec
    provider: Provider
    updated_at: datetime


class ProviderRouter:
    """The enabled providers of this process, and the choice among them."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        fernet: Fernet,
        context: registry.ProviderContext,
        clock: Clock,
        refresh_s: float = 5.0,
    ) -> None:
        self._engine = engine
        self._fernet = fernet
        self._context = context
        self._clock = clock
        self._refresh_s = refresh_s
        self._loaded_at: datetime | None = None
        self._candidates: list[Candidate] = []
        self._broken: dict[uuid.UUID, str] = {}

    @property
    def candidates(self) -> list[Candidate]:
        return list(self._candidates)

    async def refresh(self, *, force: bool = False) -> None:
        now = self._clock.now()
        if (
            not force
            and self._loaded_at is not None
            and (now - self._loaded_at).total_seconds() < self._refresh_s
        ):
            return
        self._loaded_at = now
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(providers_t)
                    .where(providers_t.c.enabled.is_(True))
                    .order_by(providers_t.c.priority.desc(), providers_t.c.created_at)
                )
            ).all()
        current = {c.id: c for c in self._candidates}
        fresh: list[Candidate] = []
        for row in rows:
            old = current.pop(row.id, None)
            if old is not None and old.updated_at == row.updated_at:
                fresh.append(old)
                continue
            if old is not None:
                await old.provider.aclose()
            candidate = self._build(row)
            if candidate is not None:
                fresh.append(candidate)
        for gone in current.values():
            await gone.provider.aclose()
        self._candidates = fresh

    def _build(self, row: Any) -> Candidate | None:
        try:
            spec = ProviderSpec(
                id=str(row.id),
                name=row.name,
                type=row.type,
                priority=row.priority,
                config=row.config or {},
                authentication=credentials.decrypt(self._fernet, row.authentication or {}),
                encryption=row.encryption or {},
                limits=row.limits or {},
            )
            provider = registry.build(spec, self._context)
        except PostroomError as exc:
            if self._broken.get(row.id) != exc.message:
                log.error("provider %r is misconfigured: %s", row.name, exc.message)
            self._broken[row.id] = exc.message
            return None
        self._broken.pop(row.id, None)
        return Candidate(id=row.id, spec=spec, provider=provider, updated_at=row.updated_at)

    async def acquire(
        self, message: OutgoingMessage, *, failed_provider_id: uuid.UUID | None = None
    ) -> Candidate | NoProvider:
        """The provider to send ``message`` through now, or why there is none.

        When the previous attempt failed at ``failed_provider_id``, the next
        provider is tried first (failover); the failed one stays last in line.
        """
        await self.refresh()
        exclude = {failed_provider_id} if failed_provider_id else set()
        candidate = self.choose(message, exclude=exclude) or self.choose(message)
        if candidate is None:
            return NoProvider(
                retry_after_s=NO_PROVIDER_DELAY_S,
                code="no-provider",
                reason="no enabled provider can take this message now",
            )
        return candidate

    def report(
        self, candidate: Candidate, *, error: BaseException | None, latency_ms: float
    ) -> None:
        """Tell the router how a send through ``candidate`` went (health, breaker)."""

    def choose(
        self, message: OutgoingMessage, *, exclude: set[uuid.UUID] | None = None
    ) -> Candidate | None:
        """The first candidate in priority order that may take ``message``.

        The development ``file`` provider is never a fallback for real providers:
        once any other provider is enabled, file providers are skipped.
        """
        real = [c for c in self._candidates if c.spec.type != ProviderType.FILE]
        pool = real or self._candidates
        for candidate in pool:
            if exclude and candidate.id in exclude:
                continue
            return candidate
        return None

    async def aclose(self) -> None:
        for candidate in self._candidates:
            await candidate.provider.aclose()
        self._candidates = []
