"""Comparing a secret a request brings with the expected one, in constant time."""

from __future__ import annotations

import hmac


def same_secret(given: str, expected: str) -> bool:
    """``hmac.compare_digest`` of the two as UTF-8: on ``str`` it raises TypeError for
    any non-ASCII character, which a hostile request can send in a token, a form field
    or a webhook's signature (a 500 instead of a refusal)."""
    return hmac.compare_digest(given.encode(), expected.encode())
