"""Who may submit through the relay, and how fast.

Two kinds of credential, and nothing else: an open relay is never possible.

- AUTH PLAIN or LOGIN with username ``api`` and an API key with the ``send``
  scope as the password (the key the HTTP API takes). AUTH is offered only over
  TLS unless the relay listens on loopback and ``insecure_loopback_auth`` is on.
- A client address inside ``trusted_networks`` (empty by default), which may
  submit without AUTH, like Postal's "SMTP-IP" credentials.

The rate limit is a token bucket per credential (API key, or client address for
trusted networks), kept in the relay process: with several relay processes each
allows the configured rate.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from postroom.errors import AuthError, ConfigError
from postroom.services.keys import KeyStore
from postroom.types import ApiScope

#: the AUTH username that goes with an API key as password
API_USERNAME = "api"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, kw_only=True, slots=True)
class Credential:
    """Who a session submits as."""

    #: ``key:<prefix>`` or ``ip:<address>``; the rate limit's key
    id: str
    #: what the job's metadata records as the submitter
    label: str
    #: the API key that owns the mail it submits (None: a trusted network)
    key_id: uuid.UUID | None = None


def parse_networks(raw: Iterable[str]) -> tuple[Network, ...]:
    """CIDR strings as networks; ConfigError names a bad one."""
    out = []
    for item in raw:
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError as exc:
            raise ConfigError(f"POSTROOM_SMTP__TRUSTED_NETWORKS: {exc}") from None
    return tuple(out)


def trusted(peer_host: str | None, networks: tuple[Network, ...]) -> Credential | None:
    """The credential of a client inside a trusted network, else None."""
    if not peer_host or not networks:
        return None
    try:
        address = ipaddress.ip_address(peer_host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if any(address in net for net in networks):
        return Credential(id=f"ip:{address}", label=f"ip:{address}")
    return None


async def api_key(keys: KeyStore, username: bytes, password: bytes) -> Credential | None:
    """The credential for ``api`` + a key with the ``send`` scope, else None."""
    if username.decode("utf-8", "replace") != API_USERNAME:
        return None
    try:
        info = await keys.verify(password.decode("utf-8", "replace"))
    except AuthError:
        return None
    if not info.allows(ApiScope.SEND):
        return None
    return Credential(id=f"key:{info.prefix}", label=f"key:{info.prefix}", key_id=info.id)


class RateLimiter:
    """A token bucket per credential: ``per_minute`` messages, bursts of that size."""

    def __init__(self, per_minute: int, *, now: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._now = now
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> bool:
        """Spend one message of ``key``'s allowance; False when it is used up."""
        if self.per_minute <= 0:
            return True
        now = self._now()
        tokens, last = self._buckets.get(key, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - last) * self.per_minute / 60.0)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True
