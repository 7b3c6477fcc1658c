"""Provider credentials: encrypted at rest with Fernet, masked in every response."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from postroom.config import Settings
from postroom.errors import ConfigError

#: the file a development key is generated into when POSTROOM_SECRET_KEY is unset
DEV_KEY_FILE = "secret.key"


def load_fernet(settings: Settings) -> Fernet:
    """The Fernet for ``settings``: POSTROOM_SECRET_KEY, or a generated dev key file."""
    if settings.secret_key is not None:
        raw = settings.secret_key.get_secret_value().encode()
    else:
        raw = _dev_key(settings.data_dir / DEV_KEY_FILE)
    try:
        return Fernet(raw)
    except ValueError as exc:
        raise ConfigError(
            "POSTROOM_SECRET_KEY must be a Fernet key (32 url-safe base64-encoded bytes); "
            "make one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'"
        ) from exc


def _dev_key(path: Path) -> bytes:
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def encrypt(fernet: Fernet, secrets: Mapping[str, Any]) -> dict[str, str]:
    """The stored form of ``secrets``: ``{"encrypted": <token>}``."""
    return {"encrypted": fernet.encrypt(json.dumps(dict(secrets)).encode()).decode()}


def decrypt(fernet: Fernet, stored: Mapping[str, Any]) -> dict[str, Any]:
    token = stored.get("encrypted")
    if token is None:
        return dict(stored)  # nothing secret was stored
    try:
        value: dict[str, Any] = json.loads(fernet.decrypt(token.encode()))
    except InvalidToken as exc:
        raise ConfigError(
            "provider credentials cannot be decrypted: POSTROOM_SECRET_KEY differs from the "
            "key they were stored with"
        ) from exc
    return value


#: credential fields shown in clear (they are identifiers, not secrets)
PUBLIC_FIELDS = frozenset({"user", "method", "accessKeyId", "clientId", "tokenUrl"})


def mask(value: str) -> str:
    """``sk-abcdef123xyz`` -> ``sk-****xyz``: enough to recognise, not to use."""
    if len(value) <= 8:
        return "****"
    prefix = value[:3] if not value[:3].isalnum() or "-" in value[:4] else value[:2]
    return f"{prefix}****{value[-3:]}"


def masked(secrets: Mapping[str, Any]) -> dict[str, Any]:
    """``secrets`` fit to show: every value masked, at any depth (header maps too),
    except the identifiers in PUBLIC_FIELDS, booleans and nulls."""
    return {key: _masked_value(key, value) for key, value in secrets.items()}


def _masked_value(key: str, value: Any) -> Any:
    if isinstance(value, Mapping):
        return masked(value)
    if isinstance(value, list | tuple):
        return [_masked_value(key, item) for item in value]
    if key in PUBLIC_FIELDS or value is None or isinstance(value, bool):
        return value
    return mask(str(value))
