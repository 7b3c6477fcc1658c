"""Fixtures for the SMTP relay: a certificate, a running relay, a provider to deliver to."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from postroom.app import Postroom
from postroom.config import SmtpSettings
from postroom.relay.server import Relay
from tests.providers.smtp_server import SMTPServer
from tests.support.providers import add_provider, disable_all


@dataclass
class Certs:
    cert: Path
    key: Path
    #: a client context that trusts the relay's certificate
    client: ssl.SSLContext


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("relay-tls")
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = directory / "cert.pem", directory / "key.pem"
    cert.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return Certs(cert=cert, key=key, client=client)


@pytest.fixture
def smtp_settings(certs: Certs) -> SmtpSettings:
    return SmtpSettings(tls_cert=certs.cert, tls_key=certs.key, rate_limit_per_minute=0)


@pytest.fixture
async def relay(postroom: Postroom, smtp_settings: SmtpSettings) -> AsyncIterator[Relay]:
    server = await Relay(postroom, smtp_settings).start(0)
    try:
        yield server
    finally:
        await server.aclose()


@pytest.fixture
async def send_key(postroom: Postroom) -> str:
    key, _ = await postroom.keys.create("smtp", ["send"])
    return key


@pytest.fixture
async def provider(postroom: Postroom) -> AsyncIterator[SMTPServer]:
    """The "provider": an aiosmtpd server the worker delivers to."""
    async with SMTPServer() as server:
        await disable_all(postroom)
        await add_provider(
            postroom,
            name="upstream",
            type="smtp",
            config={"host": server.host, "port": server.port, "socketTimeout": 2000},
        )
        yield server


async def drain(postroom: Postroom) -> int:
    worker = postroom.worker()
    try:
        return await worker.drain()
    finally:
        await worker.aclose()
