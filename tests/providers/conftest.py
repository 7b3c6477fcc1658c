from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from postroom.providers.registry import ProviderContext
from tests.providers import fake_esp
from tests.providers import smtp_server as smtpd_helper

# -- fake ESP servers (HTTP adapters) ---------------------------------------------
# One real server per ESP for the whole session (started on first use); each test
# gets it reset: no recorded requests, no scripted replies, no hung connections.


def _serve(fake: fake_esp.FakeESP) -> Iterator[fake_esp.FakeESP]:
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="session")
def _sendgrid_server() -> Iterator[fake_esp.FakeESP]:
    yield from _serve(fake_esp.SendGridFake())


@pytest.fixture(scope="session")
def _mailgun_server() -> Iterator[fake_esp.FakeESP]:
    yield from _serve(fake_esp.MailgunFake())


@pytest.fixture(scope="session")
def _ses_server() -> Iterator[fake_esp.FakeESP]:
    yield from _serve(fake_esp.SESFake())


@pytest.fixture(scope="session")
def _postmark_server() -> Iterator[fake_esp.FakeESP]:
    yield from _serve(fake_esp.PostmarkFake())


@pytest.fixture(scope="session")
def _custom_server() -> Iterator[fake_esp.FakeESP]:
    yield from _serve(fake_esp.CustomFake())


def _fresh(fake: fake_esp.FakeESP) -> Iterator[fake_esp.FakeESP]:
    fake.reset()
    yield fake
    fake.reset()


@pytest.fixture
def sendgrid_esp(_sendgrid_server: fake_esp.SendGridFake) -> Iterator[fake_esp.SendGridFake]:
    yield from _fresh(_sendgrid_server)  # type: ignore[misc]


@pytest.fixture
def mailgun_esp(_mailgun_server: fake_esp.MailgunFake) -> Iterator[fake_esp.MailgunFake]:
    _mailgun_server.domain_state = "active"
    yield from _fresh(_mailgun_server)  # type: ignore[misc]


@pytest.fixture
def ses_esp(_ses_server: fake_esp.SESFake) -> Iterator[fake_esp.SESFake]:
    _ses_server.sending_enabled = True
    yield from _fresh(_ses_server)  # type: ignore[misc]


@pytest.fixture
def postmark_esp(_postmark_server: fake_esp.PostmarkFake) -> Iterator[fake_esp.PostmarkFake]:
    yield from _fresh(_postmark_server)  # type: ignore[misc]


@pytest.fixture
def custom_esp(_custom_server: fake_esp.CustomFake) -> Iterator[fake_esp.CustomFake]:
    yield from _fresh(_custom_server)  # type: ignore[misc]


@pytest.fixture
def tls_custom_esp(tmp_path: Path) -> Iterator[tuple[fake_esp.CustomFake, ssl.SSLContext]]:
    """A custom endpoint on HTTPS with a certificate for ``hooks.example.test`` only,
    and a client context that trusts its CA."""
    ca = trustme.CA()
    cert = ca.issue_cert("hooks.example.test")
    key_file, cert_file = tmp_path / "key.pem", tmp_path / "cert.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    fake = fake_esp.CustomFake()
    fake.start(certfile=str(cert_file), keyfile=str(key_file))
    try:
        yield fake, client_context
    finally:
        fake.stop()


@pytest.fixture
def provider_context(tmp_path: Path) -> ProviderContext:
    return ProviderContext(data_dir=tmp_path)


@pytest.fixture
def outgoing() -> fake_esp.OutgoingMessage:
    """A message using every feature the HTTP adapters map."""
    return fake_esp.sample_message()


@pytest.fixture
def make_message() -> Callable[..., fake_esp.OutgoingMessage]:
    """``sample_message`` with field overrides (the MIME is rebuilt to match)."""
    return fake_esp.sample_message


# -- end of fake ESP servers ----------------------------------------------------------


# -- in-process SMTP server (SMTP adapter) -------------------------------------------
# A fresh aiosmtpd server per use, on the test's own loop (see smtp_server.py), and
# trustme certificates for 127.0.0.1 shared by the whole session.


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def smtpd_tls(tls_ca: trustme.CA) -> ssl.SSLContext:
    """Server-side TLS context with a certificate for 127.0.0.1 and localhost."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    return context


@pytest.fixture
def tls_ca_file(tls_ca: trustme.CA, tmp_path: Path) -> Path:
    """The CA as a PEM file, for an SMTP provider's ``caFile``."""
    path = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture(params=[False, True], ids=["lockstep", "pipelining"])
async def start_smtpd(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., Awaitable[smtpd_helper.SMTPServer]]]:
    """``await start_smtpd(**options)``: a running server, stopped after the test. Every
    test runs against a server without and one with PIPELINING: the outcomes must match."""
    servers: list[smtpd_helper.SMTPServer] = []

    async def start(**options: Any) -> smtpd_helper.SMTPServer:
        server = smtpd_helper.SMTPServer(**{"pipelining": request.param, **options})
        servers.append(server)
        return await server.start()

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def smtpd(
    start_smtpd: Callable[..., Awaitable[smtpd_helper.SMTPServer]],
) -> smtpd_helper.SMTPServer:
    """A plain server (no TLS) that accepts AUTH PLAIN/LOGIN for ann / s3cret."""
    return await start_smtpd(users={"ann": "s3cret"})


@pytest.fixture
async def token_endpoint() -> AsyncIterator[smtpd_helper.TokenEndpoint]:
    """A local OAuth2 token endpoint for XOAUTH2 refreshes."""
    endpoint = await smtpd_helper.TokenEndpoint().start()
    yield endpoint
    await endpoint.stop()


# -- end of in-process SMTP server ----------------------------------------------------
