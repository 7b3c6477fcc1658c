"""Provider management: the spec's provider endpoints, for the API and the CLI.

Every change is validated the way a worker will use it (``provider_settings``:
known type and keys, no credentials in clear, the adapter builds, limits and
monitoring parse, outbound URLs pass the SSRF guard). So a bad configuration is
refused with a 422 that names the field, instead of failing later in a worker's log.

Credentials are encrypted with the instance's Fernet key before they are stored,
shown masked in every answer and never logged. Secret-looking keys are refused
in ``config``, and so are credential-bearing header names in ``config.headers``;
the spec's ``SMTPConfig.authentication`` block is moved out of ``config`` into
``authentication`` so that it is encrypted too.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from cryptography.fernet import Fernet
from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.clock import Clock
from postroom.db.engine import reader
from postroom.db.lookup import by_name_or_id
from postroom.db.models import EmailProvider
from postroom.errors import ConfigError, Conflict, NotFound
from postroom.providers import credentials, health, ratelimit, registry, routing
from postroom.providers.base import Provider, ProviderSpec
from postroom.schemas import providers as schemas
from postroom.services import provider_settings

if TYPE_CHECKING:
    from postroom.app import Postroom

providers_t = cast(Table, EmailProvider.__table__)


class ProviderService:
    @classmethod
    def of(cls, postroom: Postroom) -> ProviderService:
        """The service for a running Postroom."""
        return cls(
            postroom.engine,
            fernet=postroom.fernet,
            clock=postroom.clock,
            context=registry.ProviderContext(data_dir=postroom.settings.data_dir),
        )

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        fernet: Fernet,
        clock: Clock,
        context: registry.ProviderContext,
    ) -> None:
        self.engine = engine
        self.fernet = fernet
        self.clock = clock
        self.context = context

    # -- reading -----------------------------------------------------------------------

    async def list_all(self) -> list[schemas.ProviderPublic]:
        """Every provider, highest priority first, with its health."""
        async with reader(self.engine).connect() as conn:
            rows = (
                await conn.execute(
                    select(providers_t).order_by(
                        providers_t.c.priority.desc(), providers_t.c.created_at
                    )
                )
            ).all()
        return await self._public(rows)

    async def get(self, ident: str) -> schemas.ProviderPublic:
        [public] = await self._public([await self.row(ident)])
        return public

    async def row(self, ident: str) -> Any:
        """A provider by id or by (unique) name."""
        cond = by_name_or_id(providers_t, "name", ident)
        async with reader(self.engine).connect() as conn:
            rows = (await conn.execute(select(providers_t).where(cond))).all()
        if not rows:
            raise NotFound(f"no provider {ident!r}")
        if len(rows) > 1:
            raise Conflict(f"{len(rows)} providers are named {ident!r}; use the id")
        return rows[0]

    async def _public(self, rows: Sequence[Any]) -> list[schemas.ProviderPublic]:
        now = self.clock.now()
        limits = {row.id: _limits_or_none(row.limits) for row in rows}
        summaries = await health.summarize(self.engine, limits, now)
        return [self._to_public(row, summaries[row.id]) for row in rows]

    def secrets(self, row: Any) -> dict[str, Any]:
        """The row's credentials, decrypted."""
        return credentials.decrypt(self.fernet, row.authentication or {})

    def build(self, row: Any) -> Provider:
        """A fresh adapter for a stored provider (the caller closes it)."""
        spec = routing.spec_of(row, self.fernet)
        try:
            return registry.build(spec, self.context)
        except (ConfigError, ValueError, TypeError, KeyError) as exc:
            raise provider_settings.invalid(exc, "config") from None

    async def _validated(
        self, data: schemas.ProviderCreate
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """``data``'s config and credentials, split and checked as a worker would use them."""
        config, secrets = provider_settings.split_secrets(data.config, data.authentication)
        provider_settings.user_type(data.type)
        await provider_settings.validate(
            self.context,
            data.name,
            data.type,
            config,
            secrets,
            data.limits,
            data.encryption,
            data.monitoring,
        )
        return config, secrets

    async def build_unsaved(self, data: schemas.ProviderCreate) -> Provider:
        """A validated adapter for a provider not stored yet, so that it can be checked
        before it is stored (the caller closes it)."""
        config, secrets = await self._validated(data)
        spec = ProviderSpec(
            id="new",
            name=data.name,
            type=data.type,
            priority=data.priority,
            config=config,
            authentication=secrets,
            encryption=data.encryption,
            limits=data.limits,
        )
        try:
            return registry.build(spec, self.context)
        except (ConfigError, ValueError, TypeError, KeyError) as exc:
            raise provider_settings.invalid(exc, "config") from None

    def _to_public(self, row: Any, summary: health.HealthSummary) -> schemas.ProviderPublic:
        try:
            secrets = self.secrets(row)
        except ConfigError:
            secrets = {}
            shown: dict[str, Any] = {"error": "cannot be decrypted with POSTROOM_SECRET_KEY"}
        else:
            shown = credentials.masked(secrets)
        check = summary.check
        latency = summary.avg_latency_ms
        if latency is None and check is not None:
            latency = check.latency_ms
        return schemas.ProviderPublic(
            id=str(row.id),
            name=row.name,
            type=row.type,
            enabled=row.enabled,
            priority=row.priority,
            config=provider_settings.shown_config(row.config or {}),
            limits=row.limits or {},
            authentication=shown,
            encryption=row.encryption or {},
            monitoring=row.monitoring or {},
            guardrail_trip=(row.monitoring or {}).get("guardrailTrip"),
            created_at=row.created_at,
            updated_at=row.updated_at,
            health=schemas.ProviderHealth(
                status=summary.status,
                reason=scrub(summary.reason, secrets),
                sent_last_hour=summary.sent_last_hour,
                failed_last_hour=summary.failed_last_hour,
                throttled_last_hour=summary.throttled_last_hour,
                rejected_last_hour=summary.rejected_last_hour,
                latency_ms=None if latency is None else round(latency, 1),
                last_success_at=summary.last_success_at,
                last_failure_at=summary.last_failure_at,
                last_error=scrub(summary.last_error, secrets),
                last_check=(
                    schemas.CheckPublic(
                        checked_at=check.at,
                        ok=check.ok,
                        latency_ms=None if check.latency_ms is None else round(check.latency_ms, 1),
                        detail=scrub(check.detail, secrets) or "",
                    )
                    if check
                    else None
                ),
                limits=[
                    schemas.LimitUsage(
                        kind=u.kind,
                        limit=u.limit,
                        used=u.used,
                        reserved=u.reserved,
                        window_ms=u.window_ms,
                        resets_at=u.resets_at,
                    )
                    for u in summary.usage
                ],
            ),
        )

    # -- changing ----------------------------------------------------------------------

    async def create(self, data: schemas.ProviderCreate) -> schemas.ProviderPublic:
        config, secrets = await self._validated(data)
        await self._unique_name(data.name)
        provider_id, now = uuid.uuid4(), self.clock.now()
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(providers_t).values(
                    id=provider_id,
                    name=data.name,
                    type=data.type,
                    enabled=data.enabled,
                    priority=data.priority,
                    config=config,
                    limits=data.limits,
                    authentication=credentials.encrypt(self.fernet, secrets),
                    encryption=data.encryption,
                    monitoring=data.monitoring,
                    created_at=now,
                    updated_at=now,
                )
            )
        return await self.get(str(provider_id))

    async def update(self, ident: str, data: schemas.ProviderUpdate) -> schemas.ProviderPublic:
        row = await self.row(ident)
        stored = self.secrets(row)
        name = data.name if data.name is not None else row.name
        if data.type is not None:
            provider_settings.user_type(data.type)
        ptype = data.type if data.type is not None else row.type
        given_auth = (
            stored
            if data.authentication is None
            else provider_settings.keep_masked(data.authentication, stored)
        )
        config, secrets = provider_settings.split_secrets(
            data.config if data.config is not None else (row.config or {}), given_auth
        )
        limits = data.limits if data.limits is not None else (row.limits or {})
        encryption = data.encryption if data.encryption is not None else (row.encryption or {})
        monitoring = data.monitoring if data.monitoring is not None else (row.monitoring or {})
        await provider_settings.validate(
            self.context, name, ptype, config, secrets, limits, encryption, monitoring
        )
        if name != row.name:
            await self._unique_name(name)
        # strictly later, so that workers notice the change even within one clock tick
        updated_at = max(self.clock.now(), row.updated_at + timedelta(microseconds=1))
        async with self.engine.begin() as conn:
            await conn.execute(
                update(providers_t)
                .where(providers_t.c.id == row.id)
                .values(
                    name=name,
                    type=ptype,
                    enabled=data.enabled if data.enabled is not None else row.enabled,
                    priority=data.priority if data.priority is not None else row.priority,
                    config=config,
                    limits=limits,
                    authentication=credentials.encrypt(self.fernet, secrets),
                    encryption=encryption,
                    monitoring=monitoring,
                    updated_at=updated_at,
                )
            )
        return await self.get(str(row.id))

    async def set_enabled(self, ident: str, enabled: bool) -> schemas.ProviderPublic:
        return await self.update(ident, schemas.ProviderUpdate(enabled=enabled))

    async def delete(self, ident: str) -> None:
        """Delete a provider; emails it sent keep their history (their link is cleared)."""
        row = await self.row(ident)
        async with self.engine.begin() as conn:
            await conn.execute(delete(providers_t).where(providers_t.c.id == row.id))

    async def _unique_name(self, name: str) -> None:
        async with reader(self.engine).connect() as conn:
            taken = (
                await conn.execute(select(providers_t.c.id).where(providers_t.c.name == name))
            ).first()
        if taken is not None:
            raise Conflict(f"a provider named {name!r} exists already", field="name")


def _limits_or_none(raw: Mapping[str, Any] | None) -> ratelimit.Limits:
    try:
        return ratelimit.Limits.parse(raw)
    except ConfigError:  # stored before validation existed: show no usage
        return ratelimit.Limits()


def scrub(text: str | None, secrets: Mapping[str, Any]) -> str | None:
    """``text`` with any secret value in it masked (a provider may echo one in an error)."""
    if not text:
        return text
    # longest first, so a secret that contains another is masked whole
    for key, value in sorted(_leaves(secrets), key=lambda kv: -len(kv[1])):
        if len(value) >= 4 and value in text:
            text = text.replace(value, credentials.mask(value, key))
    return text


def _leaves(secrets: Mapping[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in secrets.items():
        if isinstance(value, Mapping):
            out.extend(_leaves(value))
        elif isinstance(value, str) and key not in credentials.PUBLIC_FIELDS:
            out.append((key, value))
    return out
