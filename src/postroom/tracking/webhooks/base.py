"""What every ESP webhook module provides: verify the raw request, then parse it.

``verify`` sees the raw body and headers before anything is parsed and raises
:class:`WebhookAuthError` (401: bad or missing signature or credentials) or
:class:`WebhookForbidden` (403: stale, replayed, or no webhook secret configured).
It returns single-use nonces (a signature token) that the intake stores so the
same request is refused the second time. ``parse`` turns a verified body into
:class:`ParsedEvent`s, normalized to Postroom's event types.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from postroom.errors import WebhookAuthError, WebhookError, WebhookPayloadError


class WebhookForbidden(WebhookError):
    """The webhook request is stale, replayed, or not configured for this provider."""

    http_status = 403
    code = "webhook-forbidden"


@dataclass(frozen=True, kw_only=True)
class ParsedEvent:
    type: str
    timestamp: datetime
    message_id: str | None
    recipient: str | None
    event_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    user_agent: str | None = None
    ip_address: str | None = None
    machine: bool = False


@dataclass(frozen=True, kw_only=True)
class Verified:
    """A request that passed verification; ``nonces`` must not be seen again."""

    nonces: tuple[str, ...] = ()
    #: a reply other than the default one (SNS subscription confirmation)
    note: str | None = None


class WebhookModule(Protocol):
    #: authentication keys this module reads
    keys: frozenset[str]

    def verify(
        self,
        body: bytes,
        headers: Mapping[str, str],
        secrets: Mapping[str, Any],
        now: datetime,
        max_age_s: int,
    ) -> Verified: ...

    def parse(self, body: bytes) -> list[ParsedEvent]: ...


def secret(secrets: Mapping[str, Any], key: str, ptype: str) -> str:
    value = secrets.get(key)
    if not isinstance(value, str) or not value:
        raise WebhookForbidden(
            f"this {ptype} provider has no authentication.{key}: webhooks are refused "
            "until it is set"
        )
    return value


def json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WebhookPayloadError(f"the body is not JSON: {exc}") from None


def from_unix(value: Any) -> datetime:
    try:
        return datetime.fromtimestamp(float(value), tz=UTC)
    except (TypeError, ValueError, OverflowError):
        raise WebhookPayloadError(f"bad timestamp {value!r}") from None


def check_age(stamp: Any, now: datetime, max_age_s: int) -> None:
    """Refuse a signed timestamp more than ``max_age_s`` away from now (replays)."""
    try:
        when = float(stamp)
    except (TypeError, ValueError):
        raise WebhookAuthError("the signed timestamp is missing or not a number") from None
    if abs(now.timestamp() - when) > max_age_s:
        raise WebhookForbidden(
            f"the signed timestamp is more than {max_age_s} s from now: refused as stale"
        )


__all__ = ["WebhookAuthError", "WebhookForbidden", "WebhookPayloadError"]
