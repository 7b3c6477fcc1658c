"""What composing needs to add tracking: the public URL, the signer, the defaults."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from postroom.config import Settings
from postroom.errors import ConfigError
from postroom.providers import credentials
from postroom.tracking.tokens import Signer, parse_keys

#: the routes under the public URL
PIXEL_PATH, CLICK_PATH, UNSUBSCRIBE_PATH = "/t/o/", "/t/c/", "/t/u/"


@dataclass(frozen=True)
class TrackingContext:
    public_url: str
    signer: Signer
    link_ttl: timedelta
    defaults: Mapping[str, Mapping[str, bool]]
    unsubscribe_mailto: str = ""

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
        )

    def wants(self, request: Mapping[str, Any], what: str) -> bool:
        """``what`` is opens or clicks: the request's flag, else the type's default."""
        flag = request.get("track" + what.capitalize())
        if flag is not None:
            return bool(flag)
        return bool(self.defaults.get(str(request.get("type", "transactional")), {}).get(what))

    def link(self, path: str, kind: str, payload: dict[str, Any], now: datetime) -> str:
        token = self.signer.sign(kind, payload, expires=now + self.link_ttl)
        return f"{self.public_url}{path}{token}"


def primary_recipient(request: Mapping[str, Any]) -> str:
    """The address events of a shared message are recorded for: the first To."""
    recipients = list(request.get("to") or [])
    first = next((r for r in recipients if r.get("type", "to") == "to"), recipients[0])
    return str(first["email"])
