"""Provider credentials: encrypted at rest with Fernet, masked in every response.

Masking shows no character of a password, private key, token or secret (``****``):
a prefix and a suffix together give away a short password, and a structured key
(PEM, JWT) is recognisable from its ends anyway. API keys show at most their last
4 characters, so an operator can tell which key is configured.
"""

from __future__ import annotations

import json
import os
import re
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
#: API keys, the only secrets shown with a hint: their last characters
API_KEY_FIELDS = frozenset({"apiKey", "serverToken"})
MASK = "****"
#: characters of an API key shown after the mask, and the length below which none are
API_KEY_TAIL = 4
API_KEY_MIN_LENGTH = 16

#: header names whose values are credentials: they belong in ``authentication.headers``
_CREDENTIAL_HEADER = re.compile(
    r"^(proxy-)?authori[sz]ation$|^(set-)?cookie$|api[-_]?key|token|secret|passw|credential"
    r"|signature|session|^x-auth|-auth$",
    re.I,
)


def is_credential_header(name: str) -> bool:
    """Whether a header named ``name`` carries a credential (Authorization, Cookie,
    X-Api-Key, X-Auth-Token, ...)."""
    return bool(_CREDENTIAL_HEADER.search(name.strip()))


def mask(value: str, key: str = "") -> str:
    """A secret fit to show: ``****``; an API key long enough to stay secret shows
    its last 4 characters (``****9f3a``), enough to tell keys apart, not to use one.
    Passwords, private keys, tokens and secrets never show a character."""
    if key in API_KEY_FIELDS and len(value) >= API_KEY_MIN_LENGTH:
        return f"{MASK}{value[-API_KEY_TAIL:]}"
    return MASK


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
    return mask(str(value), key)
