"""Turn provider replies into Postroom's error tree, so retry and failover decide alike.

Pure functions, shared by every adapter: ``classify_smtp`` reads an SMTP reply code
and its RFC 3463 enhanced status code, ``classify_http`` reads an HTTP status and
its rate-limit headers, ``classify_exception`` covers transport failures (drops,
timeouts, TLS). Each returns the exception; the adapter raises it ``from`` the
vendor error.

SMTP errors carry the reply code as ``status`` and the enhanced code (if any) as
``context["enhanced_status"]``; throttling replies set ``context["rate_limited"]``
so the worker can reschedule them without spending an attempt.
"""

from __future__ import annotations

import re
import ssl
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from postroom.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRejected,
    ProviderTimeout,
    ProviderTransientError,
)

__all__ = [
    "classify_exception",
    "classify_http",
    "classify_smtp",
    "enhanced_status",
    "retry_after_from_headers",
    "retry_after_from_text",
]

#: RFC 3463 ``class.subject.detail``; the look-arounds keep IP addresses and versions out
_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
#: reply codes that mean "your credentials or session security were refused"
_AUTH_CODES = frozenset({530, 534, 535, 538})
#: 5.7.8 bad credentials, 5.7.9 mechanism too weak, 5.7.11 encryption required,
#: 5.7.14 interactive login required (Gmail), 5.7.139 basic auth disabled (Microsoft)
_AUTH_ENHANCED = frozenset({"5.7.8", "5.7.9", "5.7.11", "5.7.14", "5.7.139"})
#: sender-side throttling: retried later, never a verdict on the message
_THROTTLING = re.compile(
    r"throttl|rate[- ]?limit|rate exceeded|sending rate|too many (?:messages|connections"
    r"|requests)|sending (?:limit|quota)|daily (?:user )?sending",
    re.IGNORECASE,
)
_RETRY_TEXT = re.compile(
    r"(?:try again|retry|wait|resume)\D{0,24}?(\d+(?:\.\d+)?)\s*"
    r"(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h)\b",
    re.IGNORECASE,
)
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}
#: ``RateLimit: "default";r=0;t=30`` (draft-ietf-httpapi-ratelimit-headers)
_RATELIMIT_T = re.compile(r"(?:^|[;,\s])t=(\d+(?:\.\d+)?)")
#: a reset value this large is a Unix timestamp, not a delay in seconds
_EPOCH_THRESHOLD = 1_000_000_000.0


def enhanced_status(text: str) -> str | None:
    """The first RFC 3463 enhanced status code in ``text`` (e.g. ``"5.1.1"``), if any."""
    match = _ENHANCED.search(text)
    return ".".join(match.groups()) if match else None


def retry_after_from_text(text: str) -> float | None:
    """Seconds a server asked us to wait in prose ("try again in 5 minutes"), if it did."""
    match = _RETRY_TEXT.search(text)
    if match is None:
        return None
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)[0].lower()]


def classify_smtp(
    provider: str | None, code: int, message: str, *, connecting: bool = False
) -> ProviderError:
    """Classify one SMTP reply.

    4xx replies (or any ``4.x.x`` enhanced code) are transient; auth refusals
    (530/534/535/538, ``5.7.8`` and kin) are auth errors; throttling is transient even
    when a server words it as 5xx; every other 5xx rejects the message. With
    ``connecting`` (greeting, EHLO, STARTTLS) a 5xx says nothing about the message,
    so it is transient too: the message may still go through another provider.
    """
    text = " ".join(message.split())
    enhanced = enhanced_status(text)
    excerpt = f"{code} {text}".strip()
    context: dict[str, object] = {"enhanced_status": enhanced} if enhanced else {}
    klass = code // 100
    throttled = bool(_THROTTLING.search(text))
    if throttled:
        context["rate_limited"] = True
    cls: type[ProviderError] = ProviderTransientError
    retry_after = None
    if klass == 4 or (enhanced or "").startswith("4.") or (klass == 5 and throttled):
        retry_after = retry_after_from_text(text)
    elif klass == 5 and (code in _AUTH_CODES or enhanced in _AUTH_ENHANCED):
        cls = ProviderAuthError
    elif klass == 5 and not connecting:
        cls = ProviderRejected
    # else: a 5xx while connecting, or a reply that makes no sense here (-1 = unparseable)
    return cls(
        f"SMTP {excerpt}",
        provider=provider,
        status=code,
        response_excerpt=excerpt,
        retry_after=retry_after,
        **context,
    )


def _seconds_until(value: str, now: datetime) -> float | None:
    """A Retry-After value: delay-seconds or an HTTP-date."""
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _reset_seconds(value: str, now: datetime) -> float | None:
    """A rate-limit reset value: seconds from now, or a Unix timestamp (s or ms)."""
    try:
        number = float(value.strip())
    except ValueError:
        return _seconds_until(value, now)
    if number >= _EPOCH_THRESHOLD * 1000:
        number /= 1000
    if number >= _EPOCH_THRESHOLD:
        number -= now.timestamp()
    return max(0.0, number)


def retry_after_from_headers(
    headers: Mapping[str, str], now: datetime | None = None, *, rate_limited: bool = True
) -> float | None:
    """Seconds to wait, from ``Retry-After`` or (when rate limited) reset headers."""
    now = now or datetime.now(UTC)
    lowered = {key.lower(): value for key, value in headers.items()}
    if "retry-after" in lowered:
        seconds = _seconds_until(lowered["retry-after"], now)
        if seconds is not None:
            return seconds
    if not rate_limited:
        return None
    for name in ("ratelimit-reset", "x-ratelimit-reset", "x-rate-limit-reset"):
        if name in lowered:
            seconds = _reset_seconds(lowered[name], now)
            if seconds is not None:
                return seconds
    match = _RATELIMIT_T.search(lowered.get("ratelimit", ""))
    return float(match.group(1)) if match else None


def classify_http(
    provider: str | None,
    status: int,
    headers: Mapping[str, str],
    body_excerpt: str,
    now: datetime | None = None,
) -> ProviderError | None:
    """Classify an HTTP API response; ``None`` means 2xx, the call succeeded.

    429 and 5xx are transient (408 and 504 as timeouts), 401 and 403 are auth
    errors (the key is wrong or lacks permission, whatever the message), 501 and
    other 4xx reject the message. ``Retry-After`` is honoured on any status;
    rate-limit reset headers only on 429.
    """
    if 200 <= status < 300:
        return None
    excerpt = " ".join(body_excerpt.split())[:500]
    message = f"HTTP {status}: {excerpt}" if excerpt else f"HTTP {status}"
    retry_after = retry_after_from_headers(headers, now, rate_limited=status == 429)
    context: dict[str, object] = {}
    cls: type[ProviderError] = ProviderTransientError
    if status == 429:
        context["rate_limited"] = True
    elif status in (408, 504):
        cls = ProviderTimeout
    elif status in (401, 403):
        cls = ProviderAuthError
    elif 400 <= status < 500 or status == 501:
        cls = ProviderRejected
    # else: 5xx, and 1xx/3xx which an API should never answer: try again later
    if not cls.retryable or cls is ProviderAuthError:
        retry_after = None
    return cls(
        message,
        provider=provider,
        status=status,
        response_excerpt=excerpt or None,
        retry_after=retry_after,
        **context,
    )


def classify_exception(provider: str | None, exc: BaseException) -> ProviderError:
    """Classify a transport failure: timeouts, dropped connections, TLS and DNS errors.

    Built-in exceptions are handled directly, httpx ones when httpx is in use (it is
    not imported here otherwise). Anything unknown counts as transient.
    """
    if isinstance(exc, ProviderError):
        return exc
    detail = str(exc) or type(exc).__name__
    if "httpx" in sys.modules:
        import httpx

        if isinstance(exc, httpx.TimeoutException):
            return ProviderTimeout(f"timed out: {detail}", provider=provider)
        if isinstance(exc, httpx.HTTPError):
            return ProviderTransientError(f"HTTP transport error: {detail}", provider=provider)
    if isinstance(exc, TimeoutError):
        return ProviderTimeout(f"timed out: {detail}", provider=provider)
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = getattr(exc, "verify_message", None) or detail
        return ProviderTransientError(
            f"TLS certificate verification failed: {reason}",
            provider=provider,
            tls=True,
        )
    if isinstance(exc, ssl.SSLError):
        return ProviderTransientError(f"TLS error: {detail}", provider=provider, tls=True)
    if isinstance(exc, ConnectionError):
        return ProviderTransientError(f"connection lost: {detail}", provider=provider)
    if isinstance(exc, OSError):
        return ProviderTransientError(f"network error: {detail}", provider=provider)
    return ProviderTransientError(f"{type(exc).__name__}: {detail}", provider=provider)
