"""Fixtures for the SMTP relay: a certificate, a running relay, a provider to deliver to."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from postroom.app import Postroom
from postroom.config import SmtpSettings
from postroom.relay.server import Relay
from tests.providers.smtp_server import SMTPServer
from tests.support.providers import only_smtp_provider
from tests.support.tls import Certs, make_certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("relay-tls"))


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
    async with only_smtp_provider(postroom, "upstream") as server:
        yield server


async def drain(postroom: Postroom) -> int:
    worker = postroom.worker()
    try:
        return await worker.drain()
    finally:
        await worker.aclose()
