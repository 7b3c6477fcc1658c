from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email import policy
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
import trustme

from postroom.errors import (
    ConfigError,
    ProviderAuthError,
    ProviderRejected,
    ProviderTimeout,
    ProviderTransientError,
    ProviderUnavailable,
)
from postroom.providers import registry
from postroom.providers.base import Address, OutgoingMessage, Provider, ProviderSpec
from postroom.providers.smtp import SMTPAuth, SMTPProvider, SMTPSettings
from tests.providers.fake_esp import LOOPBACK
from tests.providers.smtp_server import DISCONNECT, HANG, SMTPServer, TokenEndpoint

StartServer = Callable[..., Awaitable["SMTPServer"]]
MakeProvider = Callable[..., SMTPProvider]


def outgoing(
    *,
    to: tuple[str, ...] = ("bob@example.com",),
    cc: tuple[str, ...] = (),
    bcc: tuple[str, ...] = (),
    sender: str = "ann@example.com",
    subject: str = "Hello",
) -> OutgoingMessage:
    mime = EmailMessage()
    mime["From"] = sender
    mime["To"] = ", ".join(to)
    if cc:
        mime["Cc"] = ", ".join(cc)
    mime["Subject"] = subject
    mime["Message-ID"] = make_msgid(domain="postroom.test")
    mime.set_content("Hi Bob,\n.\nA line with a lone dot above.\n")
    return OutgoingMessage(
        email_id="em-1",
        message_id=mime["Message-ID"],
        from_=Address(email=sender),
        to=tuple(Address(email=a) for a in to),
        cc=tuple(Address(email=a) for a in cc),
        bcc=tuple(Address(email=a) for a in bcc),
        subject=subject,
        mime=mime.as_bytes(policy=policy.SMTP),
    )


@pytest.fixture
async def make_provider(
    start_smtpd: StartServer, provider_context: registry.ProviderContext
) -> AsyncIterator[MakeProvider]:
    """Providers built through the registry, closed before the servers stop."""
    providers: list[SMTPProvider] = []

    def make(server: SMTPServer, auth: dict[str, Any] | None = None, **config: Any) -> SMTPProvider:
        spec = ProviderSpec(
            id="prv-smtp",
            name="relay",
            type="smtp",
            config={
                "host": server.host,
                "port": server.port,
                "localHostname": "client.test",
                "allowNetworks": LOOPBACK,  # the token endpoint; the relay host is not guarded
            }
            | config,
            authentication=auth or {},
        )
        provider = registry.build(spec, provider_context)
        assert isinstance(provider, SMTPProvider)
        providers.append(provider)
        return provider

    yield make
    for provider in providers:
        await provider.aclose()


ANN = {"user": "ann", "password": "s3cret"}


# -- delivery -------------------------------------------------------------------------


async def test_delivers_envelope_and_headers(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(smtpd)
    message = outgoing(to=("bob@example.com",), cc=("cy@example.com",), bcc=("dee@example.com",))

    result = await provider.send(message)

    assert isinstance(provider, Provider)
    assert result.provider == "relay"
    assert result.provider_message_id == message.message_id
    assert result.rejected == {}
    assert result.response == "250 2.0.0 Ok: queued"
    [received] = smtpd.received
    assert received.mail_from == "ann@example.com"
    assert received.rcpt_tos == ["bob@example.com", "cy@example.com", "dee@example.com"]
    assert f"SIZE={len(message.mime)}" in received.mail_options
    parsed = received.message()
    assert parsed["Message-ID"] == message.message_id
    assert parsed["To"] == "bob@example.com"
    assert parsed["Cc"] == "cy@example.com"
    assert parsed["Subject"] == "Hello"
    assert "Bcc" not in parsed
    assert "\r\n.\r\nA line with a lone dot" in parsed.get_content()
    assert received.data.replace(b"\r\n", b"\n") == message.mime.replace(b"\r\n", b"\n")


async def test_duplicate_recipients_get_one_rcpt(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(smtpd)
    await provider.send(outgoing(to=("bob@example.com",), bcc=("bob@example.com",)))
    assert smtpd.received[0].rcpt_tos == ["bob@example.com"]


async def test_no_recipients_is_rejected_without_connecting(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(smtpd)
    with pytest.raises(ProviderRejected):
        await provider.send(outgoing(to=()))
    assert smtpd.connections == 0


async def test_non_ascii_address_needs_smtputf8(
    start_smtpd: StartServer, make_provider: MakeProvider
) -> None:
    plain = await start_smtpd()
    with pytest.raises(ProviderRejected, match="SMTPUTF8"):
        await make_provider(plain).send(outgoing(bcc=("bjørn@example.com",)))

    utf8 = await start_smtpd(enable_smtputf8=True)
    await make_provider(utf8).send(outgoing(bcc=("bjørn@example.com",)))
    assert utf8.received[0].rcpt_tos[-1] == "bjørn@example.com"
    assert "SMTPUTF8" in utf8.received[0].mail_options


# -- configuration --------------------------------------------------------------------


def test_settings_defaults_and_units() -> None:
    settings = SMTPSettings.from_config({"host": "relay.example.com"})
    assert (settings.port, settings.secure, settings.max_connections) == (587, False, 5)
    assert (settings.max_messages, settings.rate_limit, settings.rate_delta_s) == (100, 0, 1.0)
    assert settings.tls_verify is True

    secure = SMTPSettings.from_config(
        {"host": "relay.example.com", "secure": True, "socketTimeout": 2500, "rateDelta": 200}
    )
    assert (secure.port, secure.socket_timeout_s, secure.rate_delta_s) == (465, 2.5, 0.2)


def test_relative_ca_file_is_under_the_data_dir(tmp_path: Path) -> None:
    settings = SMTPSettings.from_config({"host": "h", "caFile": "certs/ca.pem"}, base_dir=tmp_path)
    assert settings.ca_file == tmp_path / "certs" / "ca.pem"


@pytest.mark.parametrize(
    ("config", "auth", "match"),
    [
        ({}, {}, "host is required"),
        ({"host": "bad host"}, {}, "host"),
        ({"host": "h", "port": 0}, {}, "port"),
        ({"host": "h", "port": 70000}, {}, "port"),
        ({"host": "h", "port": "25"}, {}, "port"),
        ({"host": "h", "port": 25.5}, {}, "whole number"),
        ({"host": "h", "secure": "yes"}, {}, "secure"),
        ({"host": "h", "requireTLS": True, "ignoreTLS": True}, {}, "contradict"),
        ({"host": "h", "socketTimeout": 0}, {}, "socketTimeout"),
        ({"host": "h", "connectionTimeout": -5}, {}, "connectionTimeout"),
        ({"host": "h", "maxConnections": 0}, {}, "maxConnections"),
        ({"host": "h", "maxMessages": True}, {}, "maxMessages"),
        ({"host": "h", "rateLimit": -1}, {}, "rateLimit"),
        ({"host": "h", "caFile": "/nonexistent/ca.pem"}, {}, "caFile"),
        ({"host": "h"}, {"user": "ann"}, "password"),
        ({"host": "h"}, {"user": "ann", "password": "x", "method": "cram"}, "unknown auth"),
        ({"host": "h"}, {"user": "ann", "method": "oauth2"}, "accessToken"),
        ({"host": "h"}, {"user": "ann", "method": "xoauth2", "tokenUrl": "http://t"}, "clientId"),
        ({"host": "h"}, {"user": "ann", "password": 1234}, "strings"),
    ],
)
def test_bad_config_is_refused(
    config: dict[str, Any],
    auth: dict[str, Any],
    match: str,
    provider_context: registry.ProviderContext,
) -> None:
    spec = ProviderSpec(id="p", name="relay", type="smtp", config=config, authentication=auth)
    with pytest.raises(ConfigError, match=match):
        registry.build(spec, provider_context)


def test_secrets_stay_out_of_repr() -> None:
    auth = SMTPAuth.from_mapping({"user": "ann", "password": "s3cret"})
    assert auth is not None and "s3cret" not in repr(auth)
    assert SMTPAuth.from_mapping({}) is None


# -- TLS ------------------------------------------------------------------------------


async def test_implicit_tls(
    start_smtpd: StartServer,
    make_provider: MakeProvider,
    smtpd_tls: ssl.SSLContext,
    tls_ca_file: Path,
) -> None:
    server = await start_smtpd(tls=smtpd_tls, users={"ann": "s3cret"})
    provider = make_provider(server, auth=ANN, secure=True, caFile=str(tls_ca_file))
    await provider.send(outgoing())
    assert server.tls_connections == {1}
    assert [a.success for a in server.auth_log] == [True]


async def test_starttls_when_offered_then_auth(
    start_smtpd: StartServer,
    make_provider: MakeProvider,
    smtpd_tls: ssl.SSLContext,
    tls_ca_file: Path,
) -> None:
    # AUTH is only offered after STARTTLS, so the client must EHLO again
    server = await start_smtpd(starttls=smtpd_tls, users={"ann": "s3cret"}, auth_require_tls=True)
    provider = make_provider(server, auth=ANN, caFile=str(tls_ca_file))
    await provider.send(outgoing())
    assert server.tls_connections == {1}
    assert server.by_connection("EHLO") == {1: 2}
    assert len(server.received) == 1


async def test_ssl_context_can_be_given_directly(
    start_smtpd: StartServer, smtpd_tls: ssl.SSLContext, tls_ca: trustme.CA
) -> None:
    server = await start_smtpd(starttls=smtpd_tls)
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    settings = SMTPSettings(
        host=server.host, port=server.port, require_tls=True, local_hostname="client.test"
    )
    provider = SMTPProvider(name="relay", settings=settings, tls_context=context)
    try:
        await provider.send(outgoing())
    finally:
        await provider.aclose()
    assert server.tls_connections == {1}


async def test_require_tls_without_starttls_sends_nothing(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(smtpd, requireTLS=True)
    with pytest.raises(ProviderTransientError, match="STARTTLS") as info:
        await provider.send(outgoing())
    assert info.value.retryable
    assert smtpd.by_connection("MAIL") == {}
    assert smtpd.received == []


async def test_untrusted_certificate_fails(
    start_smtpd: StartServer, make_provider: MakeProvider, smtpd_tls: ssl.SSLContext
) -> None:
    server = await start_smtpd(starttls=smtpd_tls)
    with pytest.raises(ProviderTransientError, match="certificate"):
        await make_provider(server).send(outgoing())
    assert server.received == []


async def test_tls_verify_off_accepts_any_certificate(
    start_smtpd: StartServer, make_provider: MakeProvider, smtpd_tls: ssl.SSLContext
) -> None:
    server = await start_smtpd(starttls=smtpd_tls)
    await make_provider(server, tlsVerify=False).send(outgoing())
    assert server.tls_connections == {1}


async def test_ignore_tls_skips_offered_starttls(
    start_smtpd: StartServer, make_provider: MakeProvider, smtpd_tls: ssl.SSLContext
) -> None:
    server = await start_smtpd(starttls=smtpd_tls)
    await make_provider(server, ignoreTLS=True).send(outgoing())
    assert server.tls_connections == set()
    assert len(server.received) == 1


# -- AUTH -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["plain", "login", None])
async def test_auth_methods(
    smtpd: SMTPServer, make_provider: MakeProvider, method: str | None
) -> None:
    provider = make_provider(smtpd, auth=ANN | {"method": method})
    await provider.send(outgoing())
    [auth] = smtpd.auth_log
    assert (auth.user, auth.success) == ("ann", True)
    assert auth.mechanism == (method or "plain").upper()


@pytest.mark.parametrize("method", ["plain", "login"])
async def test_wrong_password_is_an_auth_error(
    smtpd: SMTPServer, make_provider: MakeProvider, method: str
) -> None:
    provider = make_provider(smtpd, auth={"user": "ann", "password": "nope", "method": method})
    with pytest.raises(ProviderAuthError) as info:
        await provider.send(outgoing())
    assert info.value.status == 535
    assert info.value.retryable  # another provider may take it
    assert smtpd.received == []


async def test_auth_required_but_not_configured(
    start_smtpd: StartServer, make_provider: MakeProvider
) -> None:
    server = await start_smtpd(users={"ann": "s3cret"}, auth_required=True)
    with pytest.raises(ProviderAuthError) as info:
        await make_provider(server).send(outgoing())
    assert info.value.status == 530


async def test_auth_not_offered(start_smtpd: StartServer, make_provider: MakeProvider) -> None:
    server = await start_smtpd()  # no AUTH at all
    with pytest.raises(ProviderAuthError, match="does not offer AUTH"):
        await make_provider(server, auth=ANN).send(outgoing())


@pytest.mark.parametrize("method", ["xoauth2", "oauth2"])
async def test_xoauth2_static_token(
    start_smtpd: StartServer, make_provider: MakeProvider, method: str
) -> None:
    server = await start_smtpd(oauth_tokens={"ann@example.com": {"tok-1"}})
    auth = {"user": "ann@example.com", "method": method, "accessToken": "tok-1"}
    await make_provider(server, auth=auth).send(outgoing())
    assert [(a.mechanism, a.success) for a in server.auth_log] == [("XOAUTH2", True)]


async def test_xoauth2_wrong_token(start_smtpd: StartServer, make_provider: MakeProvider) -> None:
    server = await start_smtpd(oauth_tokens={"ann@example.com": {"tok-1"}})
    auth = {"user": "ann@example.com", "method": "xoauth2", "accessToken": "stale"}
    with pytest.raises(ProviderAuthError) as info:
        await make_provider(server, auth=auth).send(outgoing())
    assert info.value.status == 535


def refreshing(endpoint: TokenEndpoint) -> dict[str, Any]:
    return {
        "user": "ann@example.com",
        "method": "oauth2",
        "tokenUrl": endpoint.url,
        "clientId": "client-1",
        "clientSecret": "shh",
        "refreshToken": "refresh-1",
    }


async def test_xoauth2_token_is_refreshed_once_and_cached(
    start_smtpd: StartServer, make_provider: MakeProvider, token_endpoint: TokenEndpoint
) -> None:
    server = await start_smtpd(oauth_tokens={"ann@example.com": {"token-1"}})
    provider = make_provider(server, auth=refreshing(token_endpoint), maxMessages=1)

    await asyncio.gather(*(provider.send(outgoing()) for _ in range(3)))

    assert server.connections == 3
    assert [a.success for a in server.auth_log] == [True, True, True]
    assert token_endpoint.requests == [
        {
            "grant_type": "refresh_token",
            "client_id": "client-1",
            "client_secret": "shh",
            "refresh_token": "refresh-1",
        }
    ]


async def test_token_url_on_loopback_is_refused_without_allow_networks(
    start_smtpd: StartServer, make_provider: MakeProvider, token_endpoint: TokenEndpoint
) -> None:
    """The token endpoint gets the client secret: it is guarded like every HTTP URL."""
    server = await start_smtpd(oauth_tokens={"ann@example.com": {"token-1"}})
    provider = make_provider(server, auth=refreshing(token_endpoint), allowNetworks=[])
    with pytest.raises(ProviderRejected, match="loopback address"):
        await provider.send(outgoing())
    assert token_endpoint.requests == []
    assert server.received == []


async def test_refused_token_is_refreshed_on_next_connection(
    start_smtpd: StartServer, make_provider: MakeProvider, token_endpoint: TokenEndpoint
) -> None:
    server = await start_smtpd(oauth_tokens={"ann@example.com": {"token-2"}})
    provider = make_provider(server, auth=refreshing(token_endpoint))
    with pytest.raises(ProviderAuthError):
        await provider.send(outgoing())  # token-1 is refused
    await provider.send(outgoing())  # token-2 is fetched and accepted
    assert len(token_endpoint.requests) == 2
    assert [a.success for a in server.auth_log] == [False, True]


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, ProviderAuthError), (401, ProviderAuthError), (503, ProviderTransientError)],
)
async def test_token_endpoint_failures(
    start_smtpd: StartServer,
    make_provider: MakeProvider,
    token_endpoint: TokenEndpoint,
    status: int,
    error: type[Exception],
) -> None:
    server = await start_smtpd(oauth_tokens={"ann@example.com": {"token-1"}})
    token_endpoint.fail_with = (status, '{"error": "invalid_grant"}')
    with pytest.raises(error) as info:
        await make_provider(server, auth=refreshing(token_endpoint)).send(outgoing())
    assert getattr(info.value, "status", None) == status
    assert server.auth_log == []


# -- the pool -------------------------------------------------------------------------


async def test_one_connection_carries_every_message(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(smtpd, auth=ANN, maxConnections=1)
    await asyncio.gather(*(provider.send(outgoing()) for _ in range(6)))
    assert smtpd.connections == 1
    assert smtpd.by_connection("EHLO") == {1: 1}
    assert len(smtpd.auth_log) == 1
    assert smtpd.by_connection("DATA") == {1: 6}


async def test_max_messages_forces_reconnects(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(smtpd, maxConnections=1, maxMessages=2)
    for _ in range(5):
        await provider.send(outgoing())
    assert smtpd.by_connection("DATA") == {1: 2, 2: 2, 3: 1}
    assert smtpd.by_connection("QUIT") == {1: 1, 2: 1}
    assert provider.connections_opened == 3


async def test_concurrent_sends_use_at_most_max_connections(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(smtpd, maxConnections=3)
    await asyncio.gather(*(provider.send(outgoing()) for _ in range(12)))
    assert smtpd.connections == 3
    assert smtpd.peak_connections == 3
    assert len(smtpd.received) == 12
    assert sum(smtpd.by_connection("DATA").values()) == 12


async def test_connection_closed_while_idle_is_replaced(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(smtpd)
    await provider.send(outgoing())
    smtpd.drop_connections()
    await provider.send(outgoing())
    assert len(smtpd.received) == 2
    assert smtpd.connections == 2


@pytest.mark.parametrize("reply", [DISCONNECT, "421 4.4.2 idle timeout exceeded"])
async def test_stale_connection_found_at_mail_is_retried_once(
    smtpd: SMTPServer, make_provider: MakeProvider, reply: str
) -> None:
    provider = make_provider(smtpd)
    await provider.send(outgoing())
    smtpd.script("MAIL", reply)
    await provider.send(outgoing())
    assert [r.connection for r in smtpd.received] == [1, 2]


async def test_cancelled_send_discards_its_connection(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(smtpd, maxConnections=1)
    smtpd.script("DATA", HANG)
    task = asyncio.create_task(provider.send(outgoing()))
    await smtpd.wait_for("DATA")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await provider.send(outgoing())
    assert smtpd.connections == 2
    assert [r.connection for r in smtpd.received] == [1, 2]


async def test_aclose_quits_idle_connections(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(smtpd, maxConnections=2)
    await asyncio.gather(provider.send(outgoing()), provider.send(outgoing()))
    await provider.aclose()
    assert smtpd.by_connection("QUIT") == {1: 1, 2: 1}
    with pytest.raises(ProviderTransientError, match="closed"):
        await provider.send(outgoing())


async def test_rate_limit_spreads_sends(smtpd: SMTPServer, make_provider: MakeProvider) -> None:
    provider = make_provider(smtpd, rateLimit=5, rateDelta=200)
    start = time.monotonic()
    await asyncio.gather(*(provider.send(outgoing()) for _ in range(10)))
    elapsed = time.monotonic() - start
    assert 0.19 <= elapsed < 2.0
    assert len(smtpd.received) == 10


# -- faults ---------------------------------------------------------------------------


async def test_421_greeting_is_transient(smtpd: SMTPServer, make_provider: MakeProvider) -> None:
    smtpd.script("GREETING", "421 4.3.2 Service not available, closing channel")
    with pytest.raises(ProviderTransientError) as info:
        await make_provider(smtpd).send(outgoing())
    assert (info.value.status, info.value.retryable) == (421, True)


async def test_554_greeting_is_about_the_relay_not_the_message(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    smtpd.script("GREETING", "554 5.7.1 No SMTP service for you")
    with pytest.raises(ProviderTransientError) as info:
        await make_provider(smtpd).send(outgoing())
    assert info.value.status == 554


async def test_451_on_data_is_transient_and_keeps_the_connection(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(smtpd)
    smtpd.script("DATA", "451 4.3.0 Local error in processing")
    with pytest.raises(ProviderTransientError) as info:
        await provider.send(outgoing())
    assert info.value.status == 451
    assert info.value.context["enhanced_status"] == "4.3.0"
    await provider.send(outgoing())
    assert smtpd.connections == 1
    assert smtpd.by_connection("RSET") == {1: 1}


async def test_550_on_only_recipient_is_rejected(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(smtpd)
    smtpd.script("RCPT", "550 5.1.1 <bob@example.com>: Recipient address rejected")
    with pytest.raises(ProviderRejected) as info:
        await provider.send(outgoing())
    error = info.value
    assert (error.status, error.retryable) == (550, False)
    assert error.context["enhanced_status"] == "5.1.1"
    assert error.context["rejected"] == {
        "bob@example.com": "550 5.1.1 <bob@example.com>: Recipient address rejected"
    }
    assert smtpd.by_connection("DATA") == {}
    await provider.send(outgoing())  # the connection was RSET and reused
    assert smtpd.connections == 1


async def test_partially_refused_recipients_are_reported(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    smtpd.script("RCPT", "550 5.1.1 no such user", address="gone@example.com")
    message = outgoing(to=("bob@example.com", "gone@example.com"))
    result = await make_provider(smtpd).send(message)
    assert result.rejected == {"gone@example.com": "550 5.1.1 no such user"}
    assert smtpd.received[0].rcpt_tos == ["bob@example.com"]


async def test_refused_sender_is_rejected(smtpd: SMTPServer, make_provider: MakeProvider) -> None:
    smtpd.script("MAIL", "553 5.7.1 Sender address rejected: not owned by user")
    with pytest.raises(ProviderRejected) as info:
        await make_provider(smtpd).send(outgoing())
    assert info.value.status == 553


async def test_disconnect_after_data_is_transient_and_not_resent(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    smtpd.script("DATA", DISCONNECT)
    with pytest.raises(ProviderTransientError, match="connection lost"):
        await make_provider(smtpd).send(outgoing())
    assert len(smtpd.received) == 1
    assert smtpd.connections == 1


async def test_slow_data_reply_times_out(smtpd: SMTPServer, make_provider: MakeProvider) -> None:
    smtpd.script("DATA", HANG)
    with pytest.raises(ProviderTimeout) as info:
        await make_provider(smtpd, socketTimeout=150).send(outgoing())
    assert info.value.retryable
    assert isinstance(info.value, TimeoutError)


async def test_slow_greeting_means_unavailable(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    smtpd.script("GREETING", HANG)
    with pytest.raises(ProviderUnavailable, match="cannot reach") as info:
        await make_provider(smtpd, greetingTimeout=150).send(outgoing())
    assert isinstance(info.value.__cause__, TimeoutError)
    assert smtpd.received == []


async def test_connection_dropped_before_the_greeting_means_unavailable(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    smtpd.script("GREETING", DISCONNECT)
    with pytest.raises(ProviderUnavailable):
        await make_provider(smtpd).send(outgoing())


async def test_a_refusing_greeting_is_an_answer_not_unavailability(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    smtpd.script("GREETING", "421 4.3.2 Service not available")
    with pytest.raises(ProviderTransientError) as info:
        await make_provider(smtpd).send(outgoing())
    assert not isinstance(info.value, ProviderUnavailable) and info.value.status == 421


async def test_connection_refused_means_unavailable(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(smtpd)
    await smtpd.stop()
    with pytest.raises(ProviderUnavailable) as info:
        await provider.send(outgoing())
    assert info.value.retryable and isinstance(info.value.__cause__, OSError)


async def test_unknown_host_means_unavailable(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    with pytest.raises(ProviderUnavailable, match=r"relay\.invalid"):
        await make_provider(smtpd, host="relay.invalid", dnsTimeout=1000).send(outgoing())


# -- health check ---------------------------------------------------------------------


async def test_check_does_the_whole_handshake(
    start_smtpd: StartServer,
    make_provider: MakeProvider,
    smtpd_tls: ssl.SSLContext,
    tls_ca_file: Path,
) -> None:
    server = await start_smtpd(starttls=smtpd_tls, users={"ann": "s3cret"})
    provider = make_provider(server, auth=ANN, caFile=str(tls_ca_file))
    health = await provider.check()
    assert health.ok, health.detail
    assert health.latency_ms is not None and health.latency_ms > 0
    assert "TLS" in health.detail and "ann" in health.detail
    assert server.tls_connections == {1}
    assert server.by_connection("QUIT") == {1: 1}
    assert provider.connections_opened == 0


async def test_check_reports_failures_without_raising(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    health = await make_provider(smtpd, auth={"user": "ann", "password": "nope"}).check()
    assert not health.ok
    assert "535" in health.detail

    await smtpd.stop()
    down = await make_provider(smtpd).check()
    assert not down.ok and down.detail


# -- edges ----------------------------------------------------------------------------


async def test_host_name_is_resolved_and_local_name_defaults_to_fqdn(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    await make_provider(smtpd, host="localhost", localHostname=None).send(outgoing())
    assert len(smtpd.received) == 1


async def test_dns_timeout(
    smtpd: SMTPServer, make_provider: MakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never(*args: Any, **kwargs: Any) -> Any:
        await asyncio.Event().wait()

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", never)
    with pytest.raises(ProviderUnavailable, match="DNS"):
        await make_provider(smtpd, host="relay.invalid", dnsTimeout=50).send(outgoing())


async def test_connection_timeout(
    smtpd: SMTPServer, make_provider: MakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never(*args: Any, **kwargs: Any) -> Any:
        await asyncio.Event().wait()

    monkeypatch.setattr(asyncio.get_running_loop(), "sock_connect", never)
    with pytest.raises(ProviderUnavailable, match="connecting"):
        await make_provider(smtpd, connectionTimeout=50).send(outgoing())


async def test_falls_back_to_helo(smtpd: SMTPServer, make_provider: MakeProvider) -> None:
    smtpd.script("EHLO", "502 5.5.2 Error: command not recognized")
    await make_provider(smtpd).send(outgoing())
    assert smtpd.received[0].mail_options == []  # no ESMTP, so no SIZE


async def test_8bit_body_is_declared(smtpd: SMTPServer, make_provider: MakeProvider) -> None:
    message = outgoing()
    body = message.mime.replace(b"Hi Bob", "Hej Bjørn".encode())
    await make_provider(smtpd).send(OutgoingMessage(**{**_fields(message), "mime": body}))
    assert "BODY=8BITMIME" in smtpd.received[0].mail_options


def _fields(message: OutgoingMessage) -> dict[str, Any]:
    return {name: getattr(message, name) for name in OutgoingMessage.__dataclass_fields__}


async def test_unsendable_address_is_rejected(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    with pytest.raises(ProviderRejected, match="cannot send"):
        await make_provider(smtpd).send(outgoing(bcc=("eve smith@example.com",)))
    assert smtpd.received == []


async def test_failed_rset_discards_the_connection(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(smtpd)
    smtpd.script("DATA", "451 4.3.0 try later")
    smtpd.script("RSET", DISCONNECT)
    with pytest.raises(ProviderTransientError):
        await provider.send(outgoing())
    await provider.send(outgoing())
    assert smtpd.connections == 2


async def test_refused_quit_still_closes(smtpd: SMTPServer, make_provider: MakeProvider) -> None:
    provider = make_provider(smtpd, maxMessages=1)
    smtpd.script("QUIT", "500 5.5.1 what?")
    await provider.send(outgoing())
    await provider.send(outgoing())
    assert smtpd.connections == 2


async def test_token_endpoint_down_is_transient(
    start_smtpd: StartServer, make_provider: MakeProvider, token_endpoint: TokenEndpoint
) -> None:
    server = await start_smtpd(oauth_tokens={"ann@example.com": {"token-1"}})
    auth = refreshing(token_endpoint)
    await token_endpoint.stop()
    with pytest.raises(ProviderTransientError, match="HTTP transport error"):
        await make_provider(server, auth=auth).send(outgoing())


async def test_token_endpoint_without_a_token(
    start_smtpd: StartServer, make_provider: MakeProvider, token_endpoint: TokenEndpoint
) -> None:
    server = await start_smtpd(oauth_tokens={"ann@example.com": {"token-1"}})
    token_endpoint.fail_with = (200, '{"token_type": "Bearer"}')
    with pytest.raises(ProviderAuthError, match="access_token"):
        await make_provider(server, auth=refreshing(token_endpoint)).send(outgoing())


async def test_connection_found_closed_at_checkout_is_replaced(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(smtpd)
    await provider.send(outgoing())
    for conn in provider._idle:  # as when the client has already read the server's EOF
        conn.smtp.close()
    await provider.send(outgoing())
    assert smtpd.connections == 2
    assert smtpd.by_connection("MAIL") == {1: 1, 2: 1}


async def test_cancelled_during_rset_discards_the_connection(
    smtpd: SMTPServer, make_provider: MakeProvider
) -> None:
    provider = make_provider(smtpd)
    smtpd.script("DATA", "451 4.3.0 try later")
    smtpd.script("RSET", HANG)
    task = asyncio.create_task(provider.send(outgoing()))
    await smtpd.wait_for("RSET")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await provider.send(outgoing())
    assert smtpd.connections == 2


async def test_ehlo_refused_with_421(smtpd: SMTPServer, make_provider: MakeProvider) -> None:
    smtpd.script("EHLO", "421 4.3.2 shutting down")
    with pytest.raises(ProviderTransientError) as info:
        await make_provider(smtpd).send(outgoing())
    assert info.value.status == 421


async def test_no_common_auth_mechanism(
    start_smtpd: StartServer, make_provider: MakeProvider
) -> None:
    server = await start_smtpd(oauth_tokens={"ann": {"tok"}})  # offers XOAUTH2 only
    with pytest.raises(ProviderAuthError, match="XOAUTH2"):
        await make_provider(server, auth=ANN).send(outgoing())


# -- pipelining (RFC 2920) ---------------------------------------------------------


def raw_message(*to: str, mime: bytes) -> OutgoingMessage:
    return OutgoingMessage(
        email_id="em-1",
        message_id="<m1@postroom.test>",
        from_=Address(email="ann@example.com"),
        to=tuple(Address(email=a) for a in to),
        subject="Hello",
        mime=mime,
    )


MIME = b"From: ann@example.com\nSubject: Hello\n\n.hidden line\nend"


async def test_mail_rcpt_and_data_go_out_in_one_write(
    start_smtpd: StartServer, make_provider: MakeProvider
) -> None:
    server = await start_smtpd(pipelining=True)
    provider = make_provider(server)
    await provider.send(raw_message("bob@example.com", "cy@example.com", mime=MIME))
    assert server.written_with_mail == [
        b"RCPT TO:<bob@example.com>\r\nRCPT TO:<cy@example.com>\r\nDATA\r\n"
    ]
    (received,) = server.received
    assert received.rcpt_tos == ["bob@example.com", "cy@example.com"]
    # line ends made CRLF and the leading dot stuffed on the wire (the server unstuffs it)
    assert (
        received.data == b"From: ann@example.com\r\nSubject: Hello\r\n\r\n.hidden line\r\nend\r\n"
    )


async def test_without_pipelining_each_command_waits_for_its_reply(
    start_smtpd: StartServer, make_provider: MakeProvider
) -> None:
    server = await start_smtpd(pipelining=False)
    await make_provider(server).send(raw_message("bob@example.com", mime=MIME))
    assert server.written_with_mail == [b""]
    assert server.received[0].data.endswith(b".hidden line\r\nend\r\n")


async def test_refusals_read_in_step_leave_the_connection_usable(
    start_smtpd: StartServer, make_provider: MakeProvider
) -> None:
    server = await start_smtpd(pipelining=True)
    provider = make_provider(server)
    server.script("RCPT", "550 5.1.1 no such user", address="gone@example.com")
    result = await provider.send(raw_message("gone@example.com", "bob@example.com", mime=MIME))
    assert result.rejected == {"gone@example.com": "550 5.1.1 no such user"}
    server.script("RCPT", "550 5.1.1 no such user", address="gone@example.com")
    with pytest.raises(ProviderRejected) as refused:
        await provider.send(raw_message("gone@example.com", mime=MIME))
    assert refused.value.context["rejected"] == {"gone@example.com": "550 5.1.1 no such user"}
    server.script("MAIL", "553 5.7.1 sender refused")
    with pytest.raises(ProviderRejected, match="553"):
        await provider.send(raw_message("bob@example.com", mime=MIME))
    await provider.send(raw_message("bob@example.com", mime=MIME))
    # one connection throughout: every reply was read, so it stayed in step
    assert server.connections == 1
    assert [r.rcpt_tos for r in server.received] == [["bob@example.com"], ["bob@example.com"]]
