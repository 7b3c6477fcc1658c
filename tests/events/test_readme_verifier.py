"""The README's verification snippet accepts Postroom's signatures and refuses forgeries."""

from __future__ import annotations

import time
from typing import Any

import pytest

from postroom.events import signing
from tests.e2e.test_readme import code_block


def _verify() -> Any:
    namespace: dict[str, Any] = {}
    exec(code_block("Event webhooks", "python"), namespace)
    return namespace["verify"]


def test_the_readme_verifier_accepts_a_signed_request_and_refuses_others() -> None:
    verify = _verify()
    secret = signing.new_secret()
    body = b'{"type":"email.sent","timestamp":"2026-11-30T09:00:00Z","data":{}}'
    now = int(time.time())
    headers = signing.headers(secret, "msg_1", now, body)
    assert verify(secret, headers, body)["type"] == "email.sent"
    with pytest.raises(ValueError, match="bad signature"):
        verify(secret, headers, body.replace(b"sent", b"sen "))
    with pytest.raises(ValueError, match="bad signature"):
        verify(signing.new_secret(), headers, body)
    stale = signing.headers(secret, "msg_1", now - 3600, body)
    with pytest.raises(ValueError, match="stale"):
        verify(secret, stale, body)
