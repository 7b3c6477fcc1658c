"""Session behaviour the relay changes in aiosmtpd: DATA replies, the idle timeout."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest

from postroom.app import Postroom
from postroom.config import SmtpSettings
from postroom.relay.server import Relay
from tests.relay.test_submission import MESSAGE, QUEUED, stored_jobs


async def trusted_relay(postroom: Postroom, **settings: float) -> Relay:
    smtp = SmtpSettings(trusted_networks=["127.0.0.0/8"], rate_limit_per_minute=0, **settings)
    return await Relay(postroom, smtp).start(0)


async def test_data_replies_and_the_session_goes_on(postroom: Postroom) -> None:
    relay = await trusted_relay(postroom)
    try:
        async with aiosmtplib.SMTP(
            hostname="127.0.0.1", port=relay.addresses[0][1], start_tls=False
        ) as smtp:
            reply = await smtp.execute_command(b"DATA")
            assert reply.code == 503  # no recipient yet
            await smtp.mail("app@example.com")
            await smtp.rcpt("ann@example.com")
            long_line = MESSAGE + b"x" * 1000 + b"\r\n"
            with pytest.raises(aiosmtplib.SMTPDataError) as caught:
                await smtp.data(long_line)
            assert caught.value.code == 500 and "Line too long" in caught.value.message
            # the envelope is reset; the connection is still in step
            reply = await smtp.execute_command(b"DATA")
            assert reply.code == 503
            for number in range(3):
                await smtp.mail("app@example.com")
                await smtp.rcpt(f"r{number}@example.com")
                response = await smtp.data(MESSAGE)
                assert response.code == 250 and QUEUED.search(response.message)
    finally:
        await relay.aclose()
    assert await stored_jobs(postroom) == 3


async def test_idle_timeout_counts_from_the_last_command(postroom: Postroom) -> None:
    relay = await trusted_relay(postroom, timeout_s=0.6)
    try:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.addresses[0][1], start_tls=False)
        await smtp.connect()
        for _ in range(4):  # 1.6 s in all, never 0.6 s idle
            await asyncio.sleep(0.4)
            assert (await smtp.noop()).code == 250
        await asyncio.sleep(1.2)
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await smtp.noop()
        smtp.close()
    finally:
        await relay.aclose()
