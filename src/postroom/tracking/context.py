"""What composing needs to add tracking: the public URL, the signer, the defaults,
and the VERP envelope sender that bounces come back to."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from postroom.config import Settings
from postroom.errors import ConfigError
from postroom.providers import credentials
from postroom.tracking.tokens import Signer, address_token, parse_keys, read_address_token

#: the routes under the public URL
PIXEL_PATH, CLICK_PATH, UNSUBSCRIBE_PATH = "/t/o/", "/t/c/", "/t/u/"


@dataclass(frozen=True)
class TrackingContext:
    public_url: str
    signer: Signer
    link_ttl: timedelta
    defaults: Mapping[str, Mapping[str, bool]]
    unsubscribe_mailto: str = ""
    #: VERP envelope senders (``bounces+<token>@<domain>``); empty: off
    bounce_domain: str = ""
    bounce_local_part: str = "bounces"

    @classmethod
    def from_settings(cls, settings: Settings) -> TrackingContext:
        if settings.tracking_keys is not None:
            try:
                keys = parse_keys(settings.tracking_keys.get_secret_value())
            except ValueError as exc:
                raise ConfigError(f"POSTROOM_TRACKING_KEYS: {exc}") from None
        else:
            credentials.load_fernet(settings)  # makes the dev key file if needed
            raw = (
                settings.secret_key.get_secret_value().encode()
                if settings.secret_key is not None
                else (settings.data_dir / credentials.DEV_KEY_FILE).read_bytes().strip()
            )
            keys = [("k0", hashlib.sha256(b"postroom tracking links\0" + raw).digest())]
        base = settings.public_url or f"http://{settings.host}:{settings.port}"
        return cls(
            public_url=base.rstrip("/"),
            signer=Signer(keys),
            link_ttl=timedelta(days=settings.tracking_link_days),
            defaults=settings.tracking_defaults,
            unsubscribe_mailto=settings.unsubscribe_mailto,
            bounce_domain=settings.bounce_domain.strip().lower(),
            bounce_local_part=settings.bounce_local_part,
        )

    def wants(self, request: Mapping[str, Any], what: str) -> bool:
        """``what`` is opens or clicks: the request's flag, else the type's default."""
        flag = request.get("track" + what.capitalize())
        if flag is not None:
            return bool(flag)
        return bool(self.defaults.get(str(request.get("type", "transactional")), {}).get(what))

    def return_path(self, email_id: str) -> str | None:
        """The VERP envelope sender of email ``email_id``; None when no bounce domain
        is configured."""
        if not self.bounce_domain:
            return None
        token = address_token(self.signer, uuid.UUID(email_id))
        return f"{self.bounce_local_part}+{token}@{self.bounce_domain}"

    def email_of_return_path(self, address: str) -> uuid.UUID | None:
        """The email id a VERP address (one of :meth:`return_path`'s) names, else None."""
        local, _, domain = address.strip().strip("<>").rpartition("@")
        prefix, plus, token = local.partition("+")
        if not self.bounce_domain or domain.lower() != self.bounce_domain or not plus:
            return None
        if prefix.lower() != self.bounce_local_part.lower():
            return None
        return read_address_token(self.signer, token)

    def link(self, path: str, kind: str, payload: dict[str, Any], now: datetime) -> str:
        token = self.signer.sign(kind, payload, expires=now + self.link_ttl)
        return f"{self.public_url}{path}{token}"


def primary_recipient(request: Mapping[str, Any]) -> str:
    """The address events of a shared message are recorded for: the first To."""
    recipients = list(request.get("to") or [])
    first = next((r for r in recipients if r.get("type", "to") == "to"), recipients[0])
    return str(first["email"])


def tracking_context(holder: Any, settings: Settings) -> TrackingContext:
    """The context kept on ``holder`` (an app's state), made on first use."""
    ctx = getattr(holder, "tracking_context", None)
    if ctx is None:
        ctx = holder.tracking_context = TrackingContext.from_settings(settings)
    return cast(TrackingContext, ctx)
