"""Provider management: the spec's provider endpoints, for the API and the CLI.

Every change is validated the way a worker will use it: the type must be known to
the registry and the adapter must build from the settings (``from_spec``), the
limits and monitoring JSON must parse. So a bad configuration is refused with a
422 that says what is wrong, instead of failing later in a worker's log.

Credentials are encrypted with the instance's Fernet key before they are stored,
shown masked in every answer and never logged. Secret-looking keys are refused
in ``config``; the spec's ``SMTPConfig.authentication`` block is moved out of
``config`` into ``authentication`` so that it is encrypted too.
"""

from __future__ import annotations

import re
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
from postroom.errors import ConfigError, Conflict, InvalidProvider, NotFound, PostroomError
from postroom.providers import credentials, health, ratelimit, registry, routing
from postroom.providers.base import Provider, ProviderSpec
from postroom.providers.breaker import BreakerSettings
from postroom.schemas import providers as schemas

if TYPE_CHECKING:
    from postroom.app import Postroom

providers_t = cast(Table, EmailProvider.__table__)

#: ``config`` keys that hold secrets belong in ``authentication``
_SECRET_KEY = re.compile(r"pass(word)?$|secret|api_?key|token$|private_?key|credential", re.I)


def _invalid(exc: Exception, field: str) -> InvalidProvider:
    if isinstance(exc, PostroomError):
        return InvalidProvider(exc.message, field=exc.context.get("field", field))
    return InvalidProvider(f"{field}: {exc}", field=field)


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
            raise _invalid(exc, "config") from None

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
            config=row.config or {},
            limits=row.limits or {},
            authentication=shown,
            encryption=row.encryption or {},
            monitoring=row.monitoring or {},
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
                        window_ms=u.window_ms,
                        resets_at=u.resets_at,
                    )
                    for u in summary.usage
                ],
            ),
        )

    # -- changing ----------------------------------------------------------------------

    async def create(self, data: schemas.ProviderCreate) -> schemas.ProviderPublic:
        config, secrets = _split_secrets(data.config, data.authentication)
        await self._validate(
            data.name, data.type, config, secrets, data.limits, data.encryption, data.monitoring
        )
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
        ptype = data.type if data.type is not None else row.type
        given_auth = (
            _keep_masked(data.authentication, stored) if data.authentication is not None else stored
        )
        config, secrets = _split_secrets(
            data.config if data.config is not None else (row.config or {}), given_auth
        )
        limits = data.limits if data.limits is not None else (row.limits or {})
        encryption = data.encryption if data.encryption is not None else (row.encryption or {})
        monitoring = data.monitoring if data.monitoring is not None else (row.monitoring or {})
        await self._validate(name, ptype, config, secrets, limits, encryption, monitoring)
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

    async def _validate(
        self,
        name: str,
        ptype: str,
        config: Mapping[str, Any],
        secrets: Mapping[str, Any],
        limits: Mapping[str, Any],
        encryption: Mapping[str, Any],
        monitoring: Mapping[str, Any],
    ) -> None:
        """Refuse what a worker could not use, with a message that says why."""
        for key in config:
            if _SECRET_KEY.search(key):
                raise InvalidProvider(
                    f"config.{key} looks like a secret: put it in 'authentication', which is "
                    "stored encrypted",
                    field=f"config.{key}",
                )
        try:
            ratelimit.Limits.parse(limits)
        except ConfigError as exc:
            raise _invalid(exc, "limits") from None
        try:
            BreakerSettings.from_monitoring(monitoring)
        except ConfigError as exc:
            raise _invalid(exc, "monitoring") from None
        try:
            factory = registry.adapter_class(ptype)
        except ConfigError as exc:
            raise _invalid(exc, "type") from None
        spec = ProviderSpec(
            id="new",
            name=name,
            type=ptype,
            config=config,
            authentication=secrets,
            encryption=encryption,
            limits=limits,
        )
        try:
            provider = factory.from_spec(spec, self.context)
        except (ConfigError, ValueError, TypeError, KeyError) as exc:
            raise _invalid(exc, "config") from None
        await provider.aclose()


def _limits_or_none(raw: Mapping[str, Any] | None) -> ratelimit.Limits:
    try:
        return ratelimit.Limits.parse(raw)
    except ConfigError:  # stored before validation existed: show no usage
        return ratelimit.Limits()


def _split_secrets(
    config: Mapping[str, Any], secrets: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Move the spec's ``SMTPConfig.authentication`` out of ``config``."""
    config = dict(config)
    nested = config.pop("authentication", None)
    merged = dict(secrets)
    if isinstance(nested, Mapping):
        merged = {**nested, **merged}
    elif nested is not None:
        raise InvalidProvider(
            "config.authentication must be an object", field="config.authentication"
        )
    return config, merged


def _keep_masked(given: Mapping[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
    """``given``, where a value equal to the masked stored one is the stored one."""
    out: dict[str, Any] = {}
    for key, value in given.items():
        old = stored.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            out[key] = _keep_masked(value, old)
        elif old is not None and value == credentials.masked({key: old})[key] and value != old:
            out[key] = old
        else:
            out[key] = value
    return out


def scrub(text: str | None, secrets: Mapping[str, Any]) -> str | None:
    """``text`` with any secret value in it masked (a provider may echo one in an error)."""
    if not text:
        return text
    for value in _leaves(secrets):
        if len(value) >= 4 and value in text:
            text = text.replace(value, credentials.mask(value))
    return text


def _leaves(secrets: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for key, value in secrets.items():
        if isinstance(value, Mapping):
            out.extend(_leaves(value))
        elif isinstance(value, str) and key not in credentials.PUBLIC_FIELDS:
            out.append(value)
    return out
