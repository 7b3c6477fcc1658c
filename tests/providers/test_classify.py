from __future__ import annotations

import socket
import ssl
from datetime import UTC, datetime
from typing import NamedTuple

import aiosmtplib
import httpx
import pytest

from postroom.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRejected,
    ProviderTimeout,
    ProviderTransientError,
)
from postroom.providers.classify import (
    classify_exception,
    classify_http,
    classify_smtp,
    enhanced_status,
    retry_after_from_headers,
    retry_after_from_text,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW_TS = int(NOW.timestamp())


class Expect(NamedTuple):
    error: type[ProviderError] | None
    retryable: bool | None = None
    retry_after: float | None = None


TRANSIENT = Expect(ProviderTransientError, True)
REJECTED = Expect(ProviderRejected, False)
AUTH = Expect(ProviderAuthError, True)
TIMEOUT = Expect(ProviderTimeout, True)


def transient_after(seconds: float | None) -> Expect:
    return Expect(ProviderTransientError, True, seconds)


SMTP_CASES: list[tuple[int, str, Expect]] = [
    (421, "4.3.2 Service not available, closing transmission channel", TRANSIENT),
    (
        421,
        "4.7.28 Our system has detected an unusual rate of mail; try again in 30 seconds",
        transient_after(30),
    ),
    (421, "4.7.0 Too many connections, please retry in 2 minutes", transient_after(120)),
    (450, "4.2.1 Mailbox busy, try again later", TRANSIENT),
    (
        450,
        "4.7.1 <bob@example.com>: Recipient address rejected: greylisted, wait 300s",
        transient_after(300),
    ),
    (451, "4.3.0 Local error in processing", TRANSIENT),
    (451, "4.7.500 Server busy. Please try again later from [203.0.113.9]", TRANSIENT),
    (452, "4.5.3 Too many recipients", TRANSIENT),
    (452, "4.3.1 Insufficient system storage", TRANSIENT),
    (454, "Throttling failure: Maximum sending rate exceeded.", TRANSIENT),
    (454, "4.7.0 Temporary authentication failure", TRANSIENT),
    (432, "4.7.12 A password transition is needed", TRANSIENT),
    (550, "5.1.1 <bob@example.com>: Recipient address rejected: User unknown", REJECTED),
    (550, "Requested action not taken: mailbox unavailable", REJECTED),
    (551, "5.1.6 User not local; please try <forward@example.org>", REJECTED),
    (552, "5.3.4 Message size exceeds fixed maximum message size", REJECTED),
    (552, "5.2.2 Mailbox full", REJECTED),
    (553, "5.1.3 Bad recipient address syntax", REJECTED),
    (554, "5.7.1 Message rejected as spam", REJECTED),
    (554, "5.7.1 <bob@example.com>: Relay access denied", REJECTED),
    (554, "Message rejected: Email address is not verified.", REJECTED),
    (500, "5.5.1 Command unrecognized", REJECTED),
    (535, "5.7.8 Authentication credentials invalid", AUTH),
    (535, "Incorrect authentication data", AUTH),
    (530, "5.7.0 Authentication required", AUTH),
    (530, "5.7.0 Must issue a STARTTLS command first", AUTH),
    (534, "5.7.14 Please log in via your web browser", AUTH),
    (538, "5.7.11 Encryption required for requested authentication mechanism", AUTH),
    (550, "5.7.139 Authentication unsuccessful, basic authentication is disabled", AUTH),
    (550, "5.4.5 Daily user sending limit exceeded", TRANSIENT),
    (554, "Throttling failure: Daily message quota exceeded.", TRANSIENT),
    (550, "4.7.1 Try again later (inconsistent server)", TRANSIENT),
    (-1, "Malformed SMTP response line: garbage", TRANSIENT),
    (250, "unexpected success where an error was due", TRANSIENT),
]


@pytest.mark.parametrize(("code", "text", "expect"), SMTP_CASES)
def test_classify_smtp(code: int, text: str, expect: Expect) -> None:
    error = classify_smtp("relay", code, text)
    assert type(error) is expect.error
    assert error.retryable is expect.retryable
    assert error.status == code
    assert error.retry_after == expect.retry_after
    assert error.provider == "relay"
    assert error.response_excerpt is not None and str(code) in error.response_excerpt


@pytest.mark.parametrize(
    ("code", "text", "expect"),
    [
        (554, "5.7.1 No SMTP service here", TRANSIENT),
        (550, "5.7.1 Client host rejected", TRANSIENT),
        (535, "5.7.8 Authentication credentials invalid", AUTH),
        (421, "4.3.2 Shutting down", TRANSIENT),
    ],
)
def test_classify_smtp_while_connecting(code: int, text: str, expect: Expect) -> None:
    error = classify_smtp("relay", code, text, connecting=True)
    assert type(error) is expect.error
    assert error.retryable is expect.retryable


def test_smtp_context_carries_enhanced_status_and_throttling() -> None:
    error = classify_smtp("ses", 454, "Throttling failure: Maximum sending rate exceeded.")
    assert error.context == {"rate_limited": True}
    error = classify_smtp("relay", 550, "5.1.1 <bob@example.com>:\n user unknown")
    assert error.context == {"enhanced_status": "5.1.1"}
    assert error.response_excerpt == "550 5.1.1 <bob@example.com>: user unknown"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5.1.1 user unknown", "5.1.1"),
        ("Requested action aborted (4.7.28)", "4.7.28"),
        ("connection from 192.168.5.1.2 refused", None),
        ("version 10.5.1 here", None),
        ("3.1.1 is not a class", None),
        ("no code at all", None),
    ],
)
def test_enhanced_status(text: str, expected: str | None) -> None:
    assert enhanced_status(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("try again in 45 seconds", 45.0),
        ("Please retry after 1.5 min", 90.0),
        ("wait 2 hours", 7200.0),
        ("try again later", None),
        ("retry at 12:30", None),
    ],
)
def test_retry_after_from_text(text: str, expected: float | None) -> None:
    assert retry_after_from_text(text) == expected


HTTP_CASES: list[tuple[int, dict[str, str], Expect]] = [
    (200, {}, Expect(None)),
    (202, {"Retry-After": "10"}, Expect(None)),
    (400, {}, REJECTED),
    (401, {}, AUTH),
    (403, {}, AUTH),
    (404, {}, REJECTED),
    (409, {}, REJECTED),
    (413, {}, REJECTED),
    (422, {}, REJECTED),
    (408, {}, TIMEOUT),
    (429, {}, transient_after(None)),
    (429, {"Retry-After": "30"}, transient_after(30)),
    (429, {"retry-after": "0"}, transient_after(0)),
    (429, {"Retry-After": "Sat, 01 Mar 2025 12:02:00 GMT"}, transient_after(120)),
    (429, {"Retry-After": "Sat, 01 Mar 2025 11:00:00 GMT"}, transient_after(0)),
    (429, {"Retry-After": "Sat, 01 Mar 2025 12:02:00 -0000"}, transient_after(120)),
    (429, {"Retry-After": "soon"}, transient_after(None)),
    (429, {"X-RateLimit-Reset": "Sat, 01 Mar 2025 12:01:00 GMT"}, transient_after(60)),
    (429, {"X-RateLimit-Reset": str(NOW_TS + 45)}, transient_after(45)),
    (429, {"X-RateLimit-Reset": str((NOW_TS + 5) * 1000)}, transient_after(5)),
    (429, {"RateLimit-Reset": "12"}, transient_after(12)),
    (429, {"X-Rate-Limit-Reset": "7"}, transient_after(7)),
    (429, {"RateLimit": '"default";r=0;t=25'}, transient_after(25)),
    (429, {"Retry-After": "3", "X-RateLimit-Reset": "99"}, transient_after(3)),
    (500, {}, TRANSIENT),
    (500, {"X-RateLimit-Reset": "99"}, TRANSIENT),  # a reset header alone is not a wait
    (501, {}, REJECTED),
    (502, {}, TRANSIENT),
    (503, {}, TRANSIENT),
    (503, {"Retry-After": "120"}, transient_after(120)),
    (504, {}, TIMEOUT),
    (507, {}, TRANSIENT),
    (301, {"Location": "https://elsewhere"}, TRANSIENT),
]


@pytest.mark.parametrize(("status", "headers", "expect"), HTTP_CASES)
def test_classify_http(status: int, headers: dict[str, str], expect: Expect) -> None:
    error = classify_http("esp", status, headers, '{"message": "nope"}', now=NOW)
    if expect.error is None:
        assert error is None
        return
    assert type(error) is expect.error
    assert error.retryable is expect.retryable
    assert error.status == status
    assert error.retry_after == expect.retry_after
    assert error.provider == "esp"
    assert error.response_excerpt == '{"message": "nope"}'


def test_http_429_is_marked_rate_limited() -> None:
    error = classify_http("esp", 429, {}, "", now=NOW)
    assert error is not None and error.context == {"rate_limited": True}
    assert error.message == "HTTP 429" and error.response_excerpt is None


def test_http_headers_are_case_insensitive_and_now_defaults_to_the_clock() -> None:
    assert retry_after_from_headers({"RETRY-AFTER": "5"}) == 5.0
    assert retry_after_from_headers(httpx.Headers({"retry-after": "6"})) == 6.0
    assert retry_after_from_headers({"X-RateLimit-Reset": "9"}, rate_limited=False) is None


EXCEPTION_CASES: list[tuple[BaseException, Expect]] = [
    (TimeoutError(), TIMEOUT),
    (OSError(113, "No route to host"), TRANSIENT),
    (aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response"), TIMEOUT),
    (aiosmtplib.SMTPConnectTimeoutError("Timed out connecting"), TIMEOUT),
    (aiosmtplib.SMTPServerDisconnected("Connection lost"), TRANSIENT),
    (aiosmtplib.SMTPConnectError("Error connecting to relay on port 587"), TRANSIENT),
    (ConnectionResetError(104, "Connection reset by peer"), TRANSIENT),
    (ConnectionRefusedError(111, "Connection refused"), TRANSIENT),
    (BrokenPipeError(32, "Broken pipe"), TRANSIENT),
    (socket.gaierror(-2, "Name or service not known"), TRANSIENT),
    (ssl.SSLError(1, "wrong version number"), TRANSIENT),
    (ssl.SSLCertVerificationError(1, "certificate verify failed"), TRANSIENT),
    (httpx.ConnectTimeout("timed out"), TIMEOUT),
    (httpx.ReadTimeout("timed out"), TIMEOUT),
    (httpx.ConnectError("connection refused"), TRANSIENT),
    (httpx.RemoteProtocolError("peer closed connection"), TRANSIENT),
    (RuntimeError("surprise"), TRANSIENT),
]


@pytest.mark.parametrize(("exc", "expect"), EXCEPTION_CASES, ids=lambda v: type(v).__name__)
def test_classify_exception(exc: BaseException, expect: Expect) -> None:
    error = classify_exception("relay", exc)
    assert type(error) is expect.error
    assert error.retryable is expect.retryable
    assert error.status is None
    assert error.retry_after is None
    assert error.provider == "relay"


def test_classify_exception_keeps_provider_errors() -> None:
    error = ProviderRejected("no", provider="relay")
    assert classify_exception("relay", error) is error


def test_timeouts_are_builtin_timeouts() -> None:
    assert isinstance(classify_exception("relay", TimeoutError()), TimeoutError)
    assert isinstance(classify_http("esp", 504, {}, ""), TimeoutError)
