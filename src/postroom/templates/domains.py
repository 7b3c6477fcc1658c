"""Sender domains and their DKIM keys: generate, rotate, check the DNS, find the signer.

A key's private half is stored Fernet-encrypted with ``POSTROOM_SECRET_KEY`` (as provider
secrets are) and never leaves through the API; the public half is shown as the TXT
record to publish at ``<selector>._domainkey.<domain>``. Rotation makes a new key with
a new selector active and retires the old one (kept, so its record can stay published
until mail signed with it has been delivered). The DNS check takes an injectable
resolver, so tests run without a network.
"""

from __future__ import annotations

import base64
import importlib.util
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, cast

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.clock import Clock
from postroom.compose.dkim import SigningKey
from postroom.db.engine import reader
from postroom.db.models import EmailDkimKey
from postroom.errors import ConfigError, Conflict, MessageError, NotFound
from postroom.schemas.base import PublicModel
from postroom.shared_reads import SharedReads

keys_t = cast(Table, EmailDkimKey.__table__)
Algorithm = Literal["rsa", "ed25519"]
#: TXT lookup: a DNS name to its TXT strings (each record's strings joined)
Resolver = Callable[[str], Awaitable[list[str]]]
#: the worker re-reads a domain's key this often, so a rotation is picked up
CACHE_TTL_S = 30.0
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


class DkimKeyPublic(PublicModel):
    domain: str
    selector: str
    algorithm: str
    active: bool
    #: where the record goes
    dns_name: str
    #: the TXT record's value
    txt_record: str
    created_at: Any
    retired_at: Any = None


class DomainPublic(PublicModel):
    domain: str
    #: the key new mail is signed with
    active: DkimKeyPublic | None
    keys: list[DkimKeyPublic]


class DnsCheck(PublicModel):
    domain: str
    selector: str
    dns_name: str
    expected: str
    found: list[str]
    matches: bool
    detail: str


def normalize_domain(value: str) -> str:
    domain = value.strip().rstrip(".").lower()
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise MessageError(f"{value!r} is not a valid domain", field="domain") from None
    if not _DOMAIN.match(domain):
        raise MessageError(f"{value!r} is not a valid domain", field="domain")
    return domain


def txt_record(algorithm: str, public_key: str) -> str:
    return f"v=DKIM1; k={'ed25519' if algorithm == 'ed25519' else 'rsa'}; p={public_key}"


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            tags[name.strip()] = "".join(value.split())
    return tags


def _generate(algorithm: Algorithm) -> tuple[bytes, str]:
    """(private key as dkimpy takes it, public key as p= carries it)."""
    if algorithm == "ed25519":
        if importlib.util.find_spec("nacl") is None:
            raise MessageError(
                "Ed25519 keys need the pynacl package (pip install 'postroom[ed25519]'); "
                "or use rsa",
                field="algorithm",
            )
        ed = ed25519.Ed25519PrivateKey.generate()
        seed = ed.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        raw_public = ed.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return base64.b64encode(seed), base64.b64encode(raw_public).decode()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, base64.b64encode(der).decode()


def _public(row: Any) -> DkimKeyPublic:
    return DkimKeyPublic(
        domain=row.domain,
        selector=row.selector,
        algorithm=row.algorithm,
        active=row.active,
        dns_name=f"{row.selector}._domainkey.{row.domain}",
        txt_record=txt_record(row.algorithm, row.public_key),
        created_at=row.created_at,
        retired_at=row.retired_at,
    )


async def dns_txt(name: str) -> list[str]:
    """The TXT records at ``name`` from the system's resolver (dnspython)."""
    import dns.asyncresolver
    import dns.exception
    import dns.resolver

    try:
        answer = await dns.asyncresolver.resolve(name, "TXT", lifetime=5.0)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise MessageError(f"the DNS lookup of {name} failed: {exc}") from None
    return [b"".join(r.strings).decode("ascii", "replace") for r in answer]


class DomainKeys:
    def __init__(
        self, engine: AsyncEngine, fernet: Fernet, clock: Clock, *, resolver: Resolver = dns_txt
    ) -> None:
        self.engine = engine
        self.fernet = fernet
        self.clock = clock
        self.resolver = resolver
        self._signers: dict[str, tuple[float, SigningKey | None]] = {}
        #: the sends that miss the cache together share one query
        self._reads: SharedReads[str, SigningKey | None] = SharedReads()

    async def list_all(self) -> list[DomainPublic]:
        async with reader(self.engine).connect() as conn:
            rows = (
                await conn.execute(
                    select(keys_t).order_by(keys_t.c.domain, keys_t.c.created_at, keys_t.c.active)
                )
            ).all()
        domains: dict[str, list[Any]] = {}
        for row in rows:
            domains.setdefault(row.domain, []).append(row)
        return [_domain(name, found) for name, found in domains.items()]

    async def get(self, domain: str) -> DomainPublic:
        name = normalize_domain(domain)
        async with reader(self.engine).connect() as conn:
            rows = (
                await conn.execute(
                    select(keys_t)
                    .where(keys_t.c.domain == name)
                    .order_by(keys_t.c.created_at, keys_t.c.active)
                )
            ).all()
        if not rows:
            raise NotFound(f"there is no sender domain {name!r}")
        return _domain(name, rows)

    async def add(self, domain: str, algorithm: Algorithm = "rsa") -> DomainPublic:
        """A new domain with a fresh key; Conflict if it has one (rotate it instead)."""
        name = normalize_domain(domain)
        async with self.engine.begin() as conn:
            found = (await conn.execute(select(keys_t.c.id).where(keys_t.c.domain == name))).first()
            if found is not None:
                raise Conflict(f"{name} has a DKIM key already; rotate it to get a new one")
            await self._insert(conn, name, algorithm)
        return await self.get(name)

    async def rotate(self, domain: str, algorithm: Algorithm | None = None) -> DomainPublic:
        """A new key under a new selector becomes active; the old one is retired."""
        name = normalize_domain(domain)
        now = self.clock.now()
        async with self.engine.begin() as conn:
            current = (
                await conn.execute(
                    select(keys_t).where(keys_t.c.domain == name, keys_t.c.active.is_(True))
                )
            ).first()
            if current is None:
                raise NotFound(f"{name} has no active DKIM key; add the domain first")
            await conn.execute(
                update(keys_t).where(keys_t.c.id == current.id).values(active=False, retired_at=now)
            )
            await self._insert(conn, name, algorithm or cast(Algorithm, current.algorithm))
        self._forget(name)
        return await self.get(name)

    async def remove(self, domain: str) -> None:
        """Stop signing for ``domain`` (its keys are retired, not destroyed)."""
        name = normalize_domain(domain)
        async with self.engine.begin() as conn:
            done = await conn.execute(
                update(keys_t)
                .where(keys_t.c.domain == name, keys_t.c.active.is_(True))
                .values(active=False, retired_at=self.clock.now())
            )
        if not done.rowcount:
            raise NotFound(f"{name} has no active DKIM key")
        self._forget(name)

    async def _insert(self, conn: Any, domain: str, algorithm: Algorithm) -> None:
        private, public = _generate(algorithm)
        selector = f"pr{self.clock.now():%Y%m}{secrets.token_hex(3)}"
        await conn.execute(
            insert(keys_t).values(
                id=uuid.uuid4(),
                domain=domain,
                selector=selector,
                algorithm=algorithm,
                private_key=self.fernet.encrypt(private).decode(),
                public_key=public,
                active=True,
                created_at=self.clock.now(),
            )
        )

    async def check(self, domain: str) -> DnsCheck:
        """Look up the active key's record and say whether it matches."""
        current = (await self.get(domain)).active
        if current is None:
            raise NotFound(f"{domain} has no active DKIM key")
        found = await self.resolver(current.dns_name)
        want = _tags(current.txt_record)["p"]
        keys = [_tags(r).get("p") for r in found if _tags(r).get("v", "DKIM1") == "DKIM1"]
        matches = want in keys
        if matches:
            detail = "the published record matches the active key"
        elif not found:
            detail = f"no TXT record at {current.dns_name}: publish the record shown"
        else:
            detail = f"the TXT record at {current.dns_name} holds another key: publish this one"
        return DnsCheck(
            domain=current.domain,
            selector=current.selector,
            dns_name=current.dns_name,
            expected=current.txt_record,
            found=found,
            matches=matches,
            detail=detail,
        )

    def _forget(self, domain: str) -> None:
        """Drop the cached key of ``domain``; a lookup under way is not joined again."""
        self._signers.pop(domain, None)
        self._reads.forget(domain)

    async def signer(self, domain: str) -> SigningKey | None:
        """The active key of ``domain`` for signing, or None; cached for CACHE_TTL_S.

        A worker claims a batch of messages at once, and every one of them would
        miss an empty or expired cache together: they wait for one query instead.
        """
        cached = self._signers.get(domain)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        return await self._reads.get(domain, lambda: self._load_signer(domain))

    async def _load_signer(self, domain: str) -> SigningKey | None:
        now = time.monotonic()
        query = select(keys_t).where(keys_t.c.domain == domain, keys_t.c.active.is_(True))
        async with reader(self.engine).connect() as conn:
            row = (await conn.execute(query)).first()
        key = None
        if row is not None:
            try:
                private = self.fernet.decrypt(row.private_key.encode())
            except InvalidToken:
                raise ConfigError(
                    f"the DKIM key of {domain} cannot be decrypted: POSTROOM_SECRET_KEY differs "
                    "from the key it was stored with"
                ) from None
            key = SigningKey(
                domain=row.domain,
                selector=row.selector,
                algorithm=row.algorithm,
                private_key=private,
            )
        self._signers[domain] = (now + CACHE_TTL_S, key)
        return key


def _domain(name: str, rows: Sequence[Any]) -> DomainPublic:
    keys = [_public(r) for r in rows]
    return DomainPublic(domain=name, active=next((k for k in keys if k.active), None), keys=keys)
