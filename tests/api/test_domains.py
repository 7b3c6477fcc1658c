"""Sender domains and DKIM: keys generated, mail signed, dkimpy verifies, rotation, DNS check."""

from __future__ import annotations

from pathlib import Path

import dkim
import httpx
import pytest
from sqlalchemy import select

from postroom.app import Postroom
from postroom.db.models import EmailDkimKey
from tests.support.payloads import email as email_body

API = "/api/system/email"


async def deliver(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path, **kw: object
) -> bytes:
    created = await client.post(f"{API}/send", json=email_body(**kw))
    assert created.status_code == 202, created.text
    worker = postroom.worker()
    try:
        await worker.drain()
    finally:
        await worker.aclose()
    return (tmp_path / "var" / "outbox" / f"{created.json()['id']}.eml").read_bytes()


class FakeDns:
    """TXT records by name, for dkimpy's verifier and Postroom's check."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}

    def publish(self, key: dict[str, str]) -> None:
        self.records.setdefault(key["dnsName"], []).append(key["txtRecord"])

    async def resolve(self, name: str) -> list[str]:
        return list(self.records.get(name, []))

    def dkimpy(self, name: bytes, timeout: int = 5) -> bytes | None:
        found = self.records.get(name.decode().rstrip("."))
        return found[0].encode() if found else None


def signature_tags(raw: bytes) -> dict[str, str]:
    assert raw.startswith(b"DKIM-Signature:")
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    value = head.split("\r\n", 1)[0]
    rest = head.split("\r\n")[1:]
    for line in rest:
        if not line.startswith((" ", "\t")):
            break
        value += line
    tags = {}
    for part in value.removeprefix("DKIM-Signature:").split(";"):
        name, _, v = part.partition("=")
        tags[name.strip()] = "".join(v.split())
    return tags


async def test_signed_mail_verifies_with_the_published_key_also_after_rotation(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path
) -> None:
    dns = FakeDns()
    created = await client.post(f"{API}/domains", json={"domain": "Example.COM"})
    assert created.status_code == 201, created.text
    first = created.json()["active"]
    assert first["dnsName"] == f"{first['selector']}._domainkey.example.com"
    assert first["txtRecord"].startswith("v=DKIM1; k=rsa; p=MIIBIjAN")  # RSA-2048 SPKI
    dns.publish(first)

    old = await deliver(client, postroom, tmp_path)
    tags = signature_tags(old)
    assert (tags["d"], tags["s"], tags["c"], tags["a"]) == (
        "example.com",
        first["selector"],
        "relaxed/relaxed",
        "rsa-sha256",
    )
    for header in ("from", "to", "subject", "date", "message-id"):
        assert header in tags["h"].lower().split(":")
    assert dkim.verify(old, dnsfunc=dns.dkimpy)
    assert not dkim.verify(old.replace(b"Hello Ann", b"Hello Eve"), dnsfunc=dns.dkimpy)

    rotated = (await client.post(f"{API}/domains/example.com/rotate")).json()
    second = rotated["active"]
    assert second["selector"] != first["selector"]
    assert [k["active"] for k in rotated["keys"]] == [False, True]
    dns.publish(second)
    new = await deliver(client, postroom, tmp_path)
    assert signature_tags(new)["s"] == second["selector"]
    assert dkim.verify(new, dnsfunc=dns.dkimpy)
    assert dkim.verify(old, dnsfunc=dns.dkimpy)  # the old record stays published


async def test_mail_from_a_domain_without_a_key_is_not_signed(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path
) -> None:
    await client.post(f"{API}/domains", json={"domain": "other.example"})
    raw = await deliver(client, postroom, tmp_path)
    assert b"DKIM-Signature" not in raw


async def test_ed25519_keys_sign_too(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path
) -> None:
    dns = FakeDns()
    created = (
        await client.post(f"{API}/domains", json={"domain": "example.com", "algorithm": "ed25519"})
    ).json()
    assert created["active"]["txtRecord"].startswith("v=DKIM1; k=ed25519; p=")
    dns.publish(created["active"])
    raw = await deliver(client, postroom, tmp_path)
    assert signature_tags(raw)["a"] == "ed25519-sha256"
    assert dkim.verify(raw, dnsfunc=dns.dkimpy)


async def test_raw_mime_is_signed(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path
) -> None:
    dns = FakeDns()
    dns.publish(
        (await client.post(f"{API}/domains", json={"domain": "example.com"})).json()["active"]
    )
    message = (
        b"From: App <app@example.com>\r\nTo: ann@example.com\r\nSubject: Raw\r\n"
        b"Message-ID: <raw1@example.com>\r\nDate: Thu, 01 Jan 2026 12:00:00 +0000\r\n\r\nHi\r\n"
    )
    created = await client.post(
        f"{API}/send/raw", content=message, headers={"Content-Type": "message/rfc822"}
    )
    assert created.status_code == 202, created.text
    worker = postroom.worker()
    try:
        await worker.drain()
    finally:
        await worker.aclose()
    raw = (tmp_path / "var" / "outbox" / f"{created.json()['id']}.eml").read_bytes()
    assert dkim.verify(raw, dnsfunc=dns.dkimpy)


async def test_check_compares_the_published_record(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    dns = FakeDns()
    postroom.domains.resolver = dns.resolve
    key = (await client.post(f"{API}/domains", json={"domain": "example.com"})).json()["active"]
    missing = (await client.post(f"{API}/domains/example.com/check")).json()
    assert missing["matches"] is False and "no TXT record" in missing["detail"]
    dns.records[key["dnsName"]] = ["v=DKIM1; k=rsa; p=AAAA"]
    wrong = (await client.post(f"{API}/domains/example.com/check")).json()
    assert wrong["matches"] is False and "another key" in wrong["detail"]
    # published split in 255-character strings, with spaces: still the same key
    record = key["txtRecord"]
    dns.records[key["dnsName"]] = [record[:200] + " " + record[200:]]
    good = (await client.post(f"{API}/domains/example.com/check")).json()
    assert good["matches"] is True, good


async def test_private_keys_are_encrypted_at_rest_and_never_shown(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    created = await client.post(f"{API}/domains", json={"domain": "example.com"})
    assert "PRIVATE" not in created.text
    async with postroom.engine.connect() as conn:
        stored = (await conn.execute(select(EmailDkimKey.private_key))).scalar_one()
    assert "PRIVATE KEY" not in stored
    assert b"PRIVATE KEY" in postroom.fernet.decrypt(stored.encode())


@pytest.mark.parametrize("domain", ["not a domain", "a..b", "x" * 300 + ".com", "-a.com"])
async def test_bad_domains_are_422(client: httpx.AsyncClient, domain: str) -> None:
    response = await client.post(f"{API}/domains", json={"domain": domain})
    assert response.status_code == 422


async def test_adding_twice_is_409_and_unknown_is_404(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/domains", json={"domain": "example.com"})
    assert (await client.post(f"{API}/domains", json={"domain": "example.com"})).status_code == 409
    assert (await client.post(f"{API}/domains/nope.example/rotate")).status_code == 404
    assert (await client.delete(f"{API}/domains/example.com")).status_code == 204
    assert (await client.get(f"{API}/domains/example.com")).json()["active"] is None
