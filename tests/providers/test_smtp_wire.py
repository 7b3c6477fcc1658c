"""The DATA payload of pooled SMTP connections (their transactions: test_smtp.py)."""

from __future__ import annotations

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from postroom.providers.smtp_wire import data_payload


@pytest.mark.parametrize(
    "mime",
    [
        b"Subject: a\r\n\r\nbody\r\n",
        b"Subject: a\r\n\r\nno final line end",
        b".starts with a dot\r\n.\r\n..two\r\nend\r\n",
        b"Subject: a\n\nbare\nline\nfeeds\n.dot\n",
        b"lone\rcarriage\rreturns\r\r\n.",
        b"",
        b"\r\n",
        b"mixed\r\nand\nlone\r\n\n\r.x",
    ],
)
def test_payload_is_what_aiosmtplib_would_send(mime: bytes) -> None:
    expected = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(mime)) + b".\r\n"
    assert data_payload(mime) == expected
