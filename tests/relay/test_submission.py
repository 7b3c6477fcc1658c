"""SMTP submission: real clients (aiosmtplib, smtplib) through the relay to a provider."""

from __future__ import annotations

import asyncio
import base64
import re
import smtplib
from typing import cast

import aiosmtplib
import pytest
from sqlalchemy import Table, func, select

from postroom.app import Postroom
from postroom.config import SmtpSettings
from postroom.db.models import EmailJob
from postroom.relay.server import Relay
from tests.providers.smtp_server import SMTPServer
from tests.relay.conftest import drain
from tests.support.tls import Certs

jobs_t = cast(Table, EmailJob.__table__)

HEAD = (
    b"From: App <app@example.com>\r\n"
    b"To: Ann <ann@example.com>\r\n"
    b"Cc: bob@example.com\r\n"
    b"Bcc: eve@example.com\r\n"
    b"Subject: Hello relay\r\n"
    b"Message-ID: <m1@example.com>\r\n"
    b"Date: Thu, 01 Jan 2026 12:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
)
BODY = b"Hi Ann,\r\n.a line that starts with a dot\r\nbye\r\n"
MESSAGE = HEAD + b"\r\n" + BODY
RCPTS = ["ann@example.com", "bob@example.com", "eve@example.com"]
QUEUED = re.compile(r"queued as ([0-9a-f-]{36})")


async def stored_jobs(postroom: Postroom) -> int:
    async with postroom.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(jobs_t))).scalar_one())


def port(relay: Relay, index: int = 0) -> int:
    return relay.addresses[index][1]


async def submit(relay: Relay, certs: Certs, key: str, message: bytes = MESSAGE) -> str:
    """aiosmtplib over STARTTLS with AUTH; returns the DATA reply."""
    _, reply = await aiosmtplib.send(
        message,
        sender="app@example.com",
        recipients=RCPTS,
        hostname="127.0.0.1",
        port=port(relay),
        start_tls=True,
        tls_context=certs.client,
        username="api",
        password=key,
    )
    return reply


async def test_aiosmtplib_starttls_auth_is_queued_and_delivered(
    postroom: Postroom, relay: Relay, certs: Certs, send_key: str, provider: SMTPServer
) -> None:
    reply = await submit(relay, certs, send_key)
    match = QUEUED.search(reply)
    assert match, reply
    email_id = match.group(1)

    status = await postroom.status(email_id)
    assert status.status == "queued" and status.subject == "Hello relay"
    assert sorted((r.email, r.type) for r in status.recipients) == [
        ("ann@example.com", "to"),
        ("bob@example.com", "cc"),
        ("eve@example.com", "bcc"),
    ]

    assert await drain(postroom) == 1
    [received] = provider.received
    assert received.mail_from == "app@example.com"
    assert sorted(received.rcpt_tos) == RCPTS
    # the same bytes, less the Bcc field: blind recipients live in the envelope only
    assert received.data == MESSAGE.replace(b"Bcc: eve@example.com\r\n", b"")
    status = await postroom.status(email_id)
    assert status.status == "sent" and status.provider == "upstream"
    assert {r.message_id for r in status.recipients} == {"<m1@example.com>"}


async def test_smtplib_starttls_login(
    postroom: Postroom, relay: Relay, certs: Certs, send_key: str, provider: SMTPServer
) -> None:
    def client() -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", port(relay), timeout=10) as smtp:
            smtp.starttls(context=certs.client)
            smtp.login("api", send_key)  # smtplib prefers PLAIN, then LOGIN
            smtp.mail("app@example.com")
            for rcpt in RCPTS:
                smtp.rcpt(rcpt)
            return smtp.data(MESSAGE)

    code, reply = await asyncio.to_thread(client)
    assert code == 250
    match = QUEUED.search(reply.decode())
    assert match
    assert await drain(postroom) == 1
    [received] = provider.received
    assert sorted(received.rcpt_tos) == RCPTS
    assert (await postroom.status(match.group(1))).status == "sent"


async def test_auth_login_mechanism(
    postroom: Postroom, relay: Relay, certs: Certs, send_key: str
) -> None:
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port(relay), start_tls=True, tls_context=certs.client
    ) as smtp:
        await smtp.ehlo()
        assert {"plain", "login"} == {m.lower() for m in smtp.server_auth_methods}
        await smtp.auth_login("api", send_key)
        await smtp.sendmail("app@example.com", ["ann@example.com"], MESSAGE)
    assert await stored_jobs(postroom) == 1


async def test_auth_refused_without_tls(postroom: Postroom, relay: Relay, send_key: str) -> None:
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port(relay), start_tls=False) as smtp:
        await smtp.ehlo()
        assert not smtp.supports_extension("auth")
        token = base64.b64encode(f"\0api\0{send_key}".encode()).decode()
        reply = await smtp.execute_command(b"AUTH", b"PLAIN", token.encode())
        assert reply.code == 538
        reply = await smtp.execute_command(b"MAIL", b"FROM:<app@example.com>")
        assert reply.code == 530
    assert await stored_jobs(postroom) == 0


@pytest.mark.parametrize(
    ("username", "password"),
    [("api", "pr_00000000_wrong"), ("someone", None), ("api", "")],
)
async def test_wrong_credentials_535(
    postroom: Postroom,
    relay: Relay,
    certs: Certs,
    send_key: str,
    username: str,
    password: str | None,
) -> None:
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port(relay), start_tls=True, tls_context=certs.client
    ) as smtp:
        await smtp.ehlo()
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
            await smtp.auth_plain(username, send_key if password is None else password)
        assert caught.value.code == 535


async def test_key_without_send_scope_535(postroom: Postroom, relay: Relay, certs: Certs) -> None:
    read_key, _ = await postroom.keys.create("reader", ["read"])
    with pytest.raises(aiosmtplib.SMTPAuthenticationError) as caught:
        await submit(relay, certs, read_key)
    assert caught.value.code == 535
    assert await stored_jobs(postroom) == 0


async def test_relay_without_auth_refused(postroom: Postroom, relay: Relay, certs: Certs) -> None:
    """No AUTH, not a trusted network: no relaying, over TLS or not."""
    for start_tls in (False, True):
        async with aiosmtplib.SMTP(
            hostname="127.0.0.1",
            port=port(relay),
            start_tls=start_tls,
            tls_context=certs.client,
        ) as smtp:
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
                await smtp.sendmail("app@example.com", ["victim@example.net"], MESSAGE)
            assert caught.value.code == 530
            reply = await smtp.execute_command(b"RCPT", b"TO:<victim@example.net>")
            assert reply.code in (503, 530)
    assert await stored_jobs(postroom) == 0


async def test_message_over_size_limit_552_and_nothing_stored(
    postroom: Postroom, relay: Relay, certs: Certs, send_key: str
) -> None:
    limit = postroom.settings.max_message_bytes = 4096
    big = HEAD + b"\r\n" + b"x" * 70 + b"\r\n"
    big += (b"y" * 70 + b"\r\n") * (limit // 72 + 10)
    async with aiosmtplib.SMTP(
        hostname="127.0.0.1", port=port(relay), start_tls=True, tls_context=certs.client
    ) as smtp:
        await smtp.login("api", send_key)
        assert smtp.supports_extension("size")
        assert smtp.esmtp_extensions["size"] == str(limit)
        # declared too large: refused at MAIL
        declared = f"FROM:<a@example.com> SIZE={limit + 1}".encode()
        reply = await smtp.execute_command(b"MAIL", declared)
        assert reply.code == 552
        # not declared: refused after the data
        await smtp.mail("app@example.com")
        await smtp.rcpt("ann@example.com")
        with pytest.raises(aiosmtplib.SMTPDataError) as caught:
            await smtp.data(big)
        assert caught.value.code == 552
    assert await stored_jobs(postroom) == 0


async def test_too_many_recipients_452(postroom: Postroom, certs: Certs, send_key: str) -> None:
    settings = SmtpSettings(tls_cert=certs.cert, tls_key=certs.key, max_recipients=2)
    relay = await Relay(postroom, settings).start(0)
    try:
        async with aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port(relay), start_tls=True, tls_context=certs.client
        ) as smtp:
            await smtp.login("api", send_key)
            await smtp.mail("app@example.com")
            await smtp.rcpt("a@example.com")
            await smtp.rcpt("b@example.com")
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as caught:
                await smtp.rcpt("c@example.com")
            assert caught.value.code == 452
            response = await smtp.data(MESSAGE)
            assert response.code == 250
    finally:
        await relay.aclose()
    assert await stored_jobs(postroom) == 1


async def test_invalid_message_554_and_nothing_stored(
    postroom: Postroom, relay: Relay, certs: Certs, send_key: str
) -> None:
    no_from = b"To: ann@example.com\r\nSubject: x\r\n\r\nbody\r\n"
    with pytest.raises(aiosmtplib.SMTPDataError) as caught:
        await submit(relay, certs, send_key, no_from)
    assert caught.value.code == 554 and "From" in caught.value.message
    assert await stored_jobs(postroom) == 0


async def test_rate_limit_per_credential_451(
    postroom: Postroom, certs: Certs, send_key: str
) -> None:
    settings = SmtpSettings(tls_cert=certs.cert, tls_key=certs.key, rate_limit_per_minute=2)
    relay = await Relay(postroom, settings).start(0)
    try:
        await submit(relay, certs, send_key)
        await submit(relay, certs, send_key)
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
            await submit(relay, certs, send_key)
        assert caught.value.code == 451
        # another credential has its own allowance
        other, _ = await postroom.keys.create("other", ["send"])
        await submit(relay, certs, other)
    finally:
        await relay.aclose()
    assert await stored_jobs(postroom) == 3


async def test_trusted_network_submits_without_auth(postroom: Postroom) -> None:
    settings = SmtpSettings(trusted_networks=["127.0.0.0/8"])
    relay = await Relay(postroom, settings).start(0)
    try:
        _, reply = await aiosmtplib.send(
            MESSAGE,
            sender="app@example.com",
            recipients=["ann@example.com"],
            hostname="127.0.0.1",
            port=port(relay),
            start_tls=False,
        )
    finally:
        await relay.aclose()
    match = QUEUED.search(reply)
    assert match
    status = await postroom.status(match.group(1))
    assert [r.email for r in status.recipients] == ["ann@example.com"]


async def test_untrusted_network_still_needs_auth(postroom: Postroom) -> None:
    relay = await Relay(postroom, SmtpSettings(trusted_networks=["10.0.0.0/8"])).start(0)
    try:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
            await aiosmtplib.send(
                MESSAGE,
                sender="app@example.com",
                recipients=["ann@example.com"],
                hostname="127.0.0.1",
                port=port(relay),
                start_tls=False,
            )
        assert caught.value.code == 530
    finally:
        await relay.aclose()


async def test_insecure_loopback_auth_when_allowed(postroom: Postroom, send_key: str) -> None:
    relay = await Relay(postroom, SmtpSettings(insecure_loopback_auth=True)).start(0)
    try:
        _, reply = await aiosmtplib.send(
            MESSAGE,
            sender="app@example.com",
            recipients=["ann@example.com"],
            hostname="127.0.0.1",
            port=port(relay),
            start_tls=False,
            username="api",
            password=send_key,
        )
    finally:
        await relay.aclose()
    assert QUEUED.search(reply)


async def test_implicit_tls_port(
    postroom: Postroom, certs: Certs, send_key: str, provider: SMTPServer
) -> None:
    from tests.support.processes import free_port

    settings = SmtpSettings(tls_cert=certs.cert, tls_key=certs.key, tls_port=free_port())
    relay = await Relay(postroom, settings).start(0)
    try:
        _, reply = await aiosmtplib.send(
            MESSAGE,
            sender="app@example.com",
            recipients=["ann@example.com"],
            hostname="127.0.0.1",
            port=port(relay, 1),
            use_tls=True,
            tls_context=certs.client,
            username="api",
            password=send_key,
        )
    finally:
        await relay.aclose()
    assert QUEUED.search(reply)
    assert await drain(postroom) == 1
    assert provider.received[0].rcpt_tos == ["ann@example.com"]


async def test_message_id_and_date_added_when_missing(
    postroom: Postroom, relay: Relay, certs: Certs, send_key: str, provider: SMTPServer
) -> None:
    bare = b"From: app@example.com\r\nTo: ann@example.com\r\nSubject: bare\r\n\r\nhello\r\n"
    reply = await submit(relay, certs, send_key, bare)
    match = QUEUED.search(reply)
    assert match
    assert await drain(postroom) == 1
    message = provider.received[0].message()
    assert message["Message-ID"] == f"<{match.group(1)}@example.com>"
    assert message["Date"] is not None
    assert provider.received[0].data.endswith(bare)


def test_tls_port_without_certificate_is_a_config_error(postroom: Postroom) -> None:
    from postroom.errors import ConfigError

    with pytest.raises(ConfigError, match="TLS_PORT"):
        Relay(postroom, SmtpSettings(tls_port=2465))
    with pytest.raises(ConfigError, match="go together"):
        Relay(postroom, SmtpSettings(tls_key="key.pem"))  # type: ignore[arg-type]
