"""Signed tracking tokens: ``<key id>.<payload>.<signature>``, all url-safe base64.

The payload is compact JSON (kind, email id, recipient, bound URL, expiry) and
the signature an HMAC-SHA256 with the key named by the key id, so keys can
rotate: the first key signs, every listed key still verifies. A token never
carries a counter or sequential id; the email id inside is a random UUID and
is covered by the signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from postroom.constant_time import same_secret
from postroom.errors import PostroomError

#: open pixel, click redirect, unsubscribe
KINDS = ("o", "c", "u")


class BadToken(PostroomError):
    """The tracking link is not valid."""

    http_status = 404
    code = "bad-token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_keys(spec: str) -> list[tuple[str, bytes]]:
    """``kid:secret,kid2:secret2`` -> [(kid, secret)]; the first signs."""
    keys: list[tuple[str, bytes]] = []
    for part in spec.split(","):
        kid, sep, secret = part.strip().partition(":")
        if not sep or not kid or len(secret) < 16 or not kid.isalnum():
            raise ValueError(
                "tracking keys are 'id:secret' pairs separated by commas; ids are letters "
                "and digits, secrets at least 16 characters"
            )
        keys.append((kid, secret.encode()))
    return keys


class Signer:
    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("at least one tracking key is needed")
        self.keys = dict(keys)
        self.current = keys[0][0]
        # the keyed state of each HMAC, made once: a token's check copies it (no key setup)
        self._hmacs = {
            kid: hmac.new(secret, f"{kid}.".encode(), hashlib.sha256) for kid, secret in keys
        }

    def _mac(self, kid: str, body: str) -> str:
        mac = self._hmacs[kid].copy()
        mac.update(body.encode())
        return _b64(mac.digest())

    def sign(self, kind: str, payload: dict[str, Any], *, expires: datetime) -> str:
        doc = {"k": kind, **payload, "x": int(expires.timestamp())}
        body = _b64(json.dumps(doc, separators=(",", ":")).encode())
        return f"{self.current}.{body}.{self._mac(self.current, body)}"

    def verify(self, token: str, kind: str, *, now: datetime) -> dict[str, Any]:
        """The payload of a valid, unexpired token of ``kind``; else :class:`BadToken`."""
        kid, _, rest = token.partition(".")
        body, _, mac = rest.partition(".")
        if kid not in self.keys or not body or not mac:
            raise BadToken()
        if not same_secret(mac, self._mac(kid, body)):
            raise BadToken()
        try:
            doc = orjson.loads(_unb64(body))  # a pixel's busiest step after the HMAC
        except (binascii.Error, ValueError):
            raise BadToken() from None
        if not isinstance(doc, dict) or doc.get("k") != kind:
            raise BadToken()
        if not isinstance(doc.get("x"), int) or doc["x"] < now.timestamp():
            raise BadToken("the tracking link has expired")
        return doc


#: bytes of the truncated HMAC in an address token (80 bits)
ADDRESS_MAC_BYTES = 10


def address_token(signer: Signer, email_id: uuid.UUID) -> str:
    """A token for an email address's local part (VERP): the email id and a truncated
    HMAC, lower-case base32 (42 characters), as MTAs may change the case of a local
    part and RFC 5321 allows 64 characters in all."""
    mac = signer._hmacs[signer.current].copy()
    mac.update(b"verp:" + email_id.bytes)
    raw = email_id.bytes + mac.digest()[:ADDRESS_MAC_BYTES]
    return base64.b32encode(raw).decode().rstrip("=").lower()


def read_address_token(signer: Signer, token: str) -> uuid.UUID | None:
    """The email id of a valid :func:`address_token` (signed by any listed key)."""
    text = token.strip().upper()
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 16 + ADDRESS_MAC_BYTES:
        return None
    for state in signer._hmacs.values():
        mac = state.copy()
        mac.update(b"verp:" + raw[:16])
        if hmac.compare_digest(mac.digest()[:ADDRESS_MAC_BYTES], raw[16:]):
            return uuid.UUID(bytes=raw[:16])
    return None
