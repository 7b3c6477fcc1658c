"""Standard Webhooks signatures (https://www.standardwebhooks.com/).

A secret is ``whsec_`` + base64 of 32 random bytes; the key is those bytes. Each
request carries ``webhook-id`` (the delivery's id, the same on every retry, so a
receiver can deduplicate), ``webhook-timestamp`` (Unix seconds of this attempt, so
a receiver can refuse replays) and ``webhook-signature``: ``v1,`` + base64 of
HMAC-SHA256 over ``{id}.{timestamp}.{body}``. A rotated secret is not kept beside
the new one: the receiver switches when it stores the new secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
#: random bytes in a new secret (the spec allows 24 to 64)
SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh signing secret in the ``whsec_<base64>`` form."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for one request."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers, plus the JSON content type."""
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
    }
