"""Build provider instances from their stored specs, by type slug.

Adapters are imported lazily so that a deployment that only uses SMTP never
imports an ESP module it does not need. Each adapter class declares the keys its
``config`` and ``authentication`` accept and which of them hold outbound URLs, so
the provider service can refuse typos and forbidden addresses at creation.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from postroom.errors import ConfigError
from postroom.providers.base import Provider, ProviderSpec
from postroom.types import ProviderType

#: provider type -> "module:Class"; each class has ``from_spec(spec, context)``
ADAPTERS: dict[str, str] = {
    "file": "postroom.providers.file:FileProvider",
    "smtp": "postroom.providers.smtp:SMTPProvider",
    "sendgrid": "postroom.providers.sendgrid:SendGridProvider",
    "mailgun": "postroom.providers.mailgun:MailgunProvider",
    "ses": "postroom.providers.ses:SESProvider",
    "postmark": "postroom.providers.postmark:PostmarkProvider",
    "custom": "postroom.providers.custom:CustomProvider",
    "fake": "postroom.providers.fake:FakeProvider",
}
#: the types users may create (the spec's; ``fake`` is internal to tests)
USER_TYPES: tuple[str, ...] = tuple(t.value for t in ProviderType)


@dataclass(frozen=True, kw_only=True, slots=True)
class ProviderContext:
    """What adapters may need from the running system besides their own spec."""

    data_dir: Path


class ProviderFactory(Protocol):
    #: the keys ``config`` accepts; anything else is refused at creation
    config_keys: frozenset[str]
    #: the keys ``authentication`` accepts
    authentication_keys: frozenset[str]
    #: ``"config.baseUrl"``-style paths of outbound URLs, checked by the SSRF guard
    url_fields: tuple[str, ...]

    def from_spec(self, spec: ProviderSpec, context: ProviderContext) -> Provider: ...


def adapter_class(provider_type: str) -> ProviderFactory:
    """The adapter class for a provider type; ConfigError for an unknown type."""
    target = ADAPTERS.get(provider_type)
    if target is None:
        known = ", ".join(USER_TYPES)
        raise ConfigError(f"unknown provider type {provider_type!r} (known: {known})")
    module_name, _, class_name = target.partition(":")
    module: Any = importlib.import_module(module_name)
    return cast(ProviderFactory, getattr(module, class_name))


def user_adapter_class(provider_type: str) -> ProviderFactory:
    """Like :func:`adapter_class`, for the types users may create."""
    if provider_type not in USER_TYPES:
        raise ConfigError(
            f"unknown provider type {provider_type!r} (known: {', '.join(USER_TYPES)})"
        )
    return adapter_class(provider_type)


def build(spec: ProviderSpec, context: ProviderContext) -> Provider:
    """A ready provider instance for ``spec``."""
    return adapter_class(spec.type).from_spec(spec, context)
