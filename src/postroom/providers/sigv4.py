"""AWS Signature Version 4 for a single request (header-based signing).

Small on purpose: SES needs nothing more than signing a JSON POST or a GET, and
this keeps botocore out of the runtime dependencies. The steps and names follow
AWS's "Create a signed AWS API request" documentation.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote, urlsplit

__all__ = ["ALGORITHM", "Credentials", "sign"]

ALGORITHM = "AWS4-HMAC-SHA256"


@dataclass(frozen=True, kw_only=True, slots=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # never print the secret
        return f"Credentials(access_key_id={self.access_key_id!r})"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def _uri_encode(value: str) -> str:
    return quote(value, safe="-_.~")


def canonical_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    return "&".join(f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in sorted(pairs))


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = _hmac(f"AWS4{secret}".encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def sign(
    *,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    credentials: Credentials,
    region: str,
    service: str,
    now: datetime | None = None,
) -> dict[str, str]:
    """The headers to add to the request: ``X-Amz-Date``, the token and ``Authorization``.

    ``headers`` must hold every header to sign, including ``Host`` exactly as it will
    be sent; ``url`` is the request URL with its path already percent-encoded.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    added = {"X-Amz-Date": amz_date}
    if credentials.session_token:
        added["X-Amz-Security-Token"] = credentials.session_token

    to_sign = {k.lower(): " ".join(v.strip().split()) for k, v in {**headers, **added}.items()}
    names = sorted(to_sign)
    signed_headers = ";".join(names)
    parts = urlsplit(url)
    canonical_request = "\n".join(
        [
            method.upper(),
            # the path is sent encoded once; AWS services other than S3 encode it again
            quote(parts.path or "/", safe="/~"),
            canonical_query(parts.query),
            "".join(f"{name}:{to_sign[name]}\n" for name in names),
            signed_headers,
            _sha256(body),
        ]
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join([ALGORITHM, amz_date, scope, _sha256(canonical_request.encode())])
    key = signing_key(credentials.secret_access_key, date, region, service)
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    added["Authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return added
