"""What a provider's settings may hold, checked when they are created or changed.

The type must be one users may create; ``config`` and ``authentication`` may hold
only the keys the adapter declares (a typo is refused, never ignored); ``config``
may hold no secret-looking key and no credential-bearing header, since it is
shown in clear; the adapter must build from the settings; the limits and
monitoring JSON must parse; every outbound URL must pass the SSRF guard
(``egress``). Each refusal is an :class:`InvalidProvider` (422) naming the field.
These checks run at creation and update only, so a row stored before a check
existed still builds in the workers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from postroom.analytics import guardrails
from postroom.errors import ConfigError, InvalidProvider, PostroomError
from postroom.providers import credentials, egress, ratelimit, registry
from postroom.providers.base import ProviderSpec
from postroom.providers.breaker import BreakerSettings
from postroom.tracking.webhooks.intake import SCHEMES

#: ``config`` keys that hold secrets belong in ``authentication``
_SECRET_KEY = re.compile(r"pass(word)?$|secret|api_?key|token$|private_?key|credential", re.I)


def invalid(exc: Exception, field: str) -> InvalidProvider:
    if isinstance(exc, PostroomError):
        return InvalidProvider(exc.message, field=exc.context.get("field", field))
    return InvalidProvider(f"{field}: {exc}", field=field)


async def validate(
    context: registry.ProviderContext,
    name: str,
    ptype: str,
    config: Mapping[str, Any],
    secrets: Mapping[str, Any],
    limits: Mapping[str, Any],
    encryption: Mapping[str, Any],
    monitoring: Mapping[str, Any],
) -> None:
    """Refuse what a worker could not use, with a message that says why."""
    try:
        factory = registry.adapter_class(ptype)
    except ConfigError as exc:
        raise invalid(exc, "type") from None
    for key in config:
        if _SECRET_KEY.search(key):
            raise InvalidProvider(
                f"config.{key} looks like a secret: put it in 'authentication', which is "
                "stored encrypted",
                field=f"config.{key}",
            )
    known_keys(ptype, "config", config, factory.config_keys)
    # the ESP's webhook secrets live beside its sending credentials
    webhook_keys = SCHEMES[ptype].keys if ptype in SCHEMES else frozenset()
    known_keys(ptype, "authentication", secrets, factory.authentication_keys | webhook_keys)
    no_credential_headers(config)
    try:
        ratelimit.Limits.parse(limits)
    except ConfigError as exc:
        raise invalid(exc, "limits") from None
    try:
        BreakerSettings.from_monitoring(monitoring)
    except ConfigError as exc:
        raise invalid(exc, "monitoring") from None
    guardrail_problems(monitoring.get("guardrail"))
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
        provider = factory.from_spec(spec, context)
    except (ConfigError, ValueError, TypeError, KeyError) as exc:
        raise invalid(exc, "config") from None
    await provider.aclose()
    await check_urls(factory.url_fields, config, secrets)


def guardrail_problems(value: Any) -> None:
    """Refuse a ``monitoring.guardrail`` the provider guardrail could not use."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise InvalidProvider(
            "monitoring.guardrail must be an object", field="monitoring.guardrail"
        )
    for key, v in value.items():
        field = f"monitoring.guardrail.{key}"
        if key == "enabled":
            if not isinstance(v, bool):
                raise InvalidProvider(f"{field} must be true or false", field=field)
            continue
        bounds = guardrails.BOUNDS.get(key)
        if bounds is None:
            names = ", ".join(["enabled", *guardrails.BOUNDS])
            raise InvalidProvider(f"{field}: unknown; one of {names}", field=field)
        if not isinstance(v, int | float) or isinstance(v, bool) or not bounds[0] <= v <= bounds[1]:
            raise InvalidProvider(f"{field} must be {bounds[0]}..{bounds[1]}", field=field)


def user_type(ptype: str) -> None:
    """Refuse types users may not create (unknown ones, and the internal ``fake``)."""
    try:
        registry.user_adapter_class(ptype)
    except ConfigError as exc:
        raise invalid(exc, "type") from None


def known_keys(ptype: str, section: str, given: Mapping[str, Any], valid: frozenset[str]) -> None:
    """Refuse a key the adapter would ignore (a typo must not pass silently)."""
    unknown = sorted(set(given) - valid)
    if unknown:
        known = ", ".join(sorted(valid)) or "none"
        raise InvalidProvider(
            f"unknown {section} key {unknown[0]!r} for a {ptype} provider (valid: {known})",
            field=f"{section}.{unknown[0]}",
        )


def no_credential_headers(config: Mapping[str, Any]) -> None:
    """``config`` is shown in clear: a header carrying a credential belongs in
    ``authentication.headers``, which is encrypted and masked."""
    headers = config.get("headers")
    if not isinstance(headers, Mapping):
        return
    for name in headers:
        if credentials.is_credential_header(str(name)):
            raise InvalidProvider(
                f"config.headers.{name} carries a credential: put it in "
                "'authentication.headers', which is stored encrypted and shown masked",
                field=f"config.headers.{name}",
            )


async def check_urls(
    fields: Sequence[str], config: Mapping[str, Any], secrets: Mapping[str, Any]
) -> None:
    """Every configured outbound URL is http(s) and, unless ``allowNetworks`` lets it,
    not on a loopback, private, link-local or otherwise non-public address."""
    try:
        allow = egress.parse_networks(config.get("allowNetworks"))
    except ConfigError as exc:
        raise invalid(exc, "config.allowNetworks") from None
    for field in fields:
        section, _, key = field.partition(".")
        value = (config if section == "config" else secrets).get(key)
        if value is None or value == "":
            continue
        try:
            url = egress.parse_url(value, field)
        except ConfigError as exc:
            raise invalid(exc, field) from None
        refusal = await egress.url_refusal(url, allow, field)
        if refusal is not None:
            raise InvalidProvider(refusal, field=field)


def shown_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` as shown; credential headers stored before they were refused are
    masked like ``authentication``."""
    headers = config.get("headers")
    if not isinstance(headers, Mapping):
        return dict(config)
    shown = {
        name: credentials.MASK if credentials.is_credential_header(str(name)) else value
        for name, value in headers.items()
    }
    return {**config, "headers": shown}


def split_secrets(
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


def keep_masked(given: Mapping[str, Any], stored: Mapping[str, Any]) -> dict[str, Any]:
    """``given``, where a value equal to the masked stored one is the stored one."""
    out: dict[str, Any] = {}
    for key, value in given.items():
        old = stored.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            out[key] = keep_masked(value, old)
        elif old is not None and value == credentials.masked({key: old})[key] and value != old:
            out[key] = old
        else:
            out[key] = value
    return out
