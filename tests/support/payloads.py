"""Request bodies for tests."""

from __future__ import annotations

from typing import Any


def email(**overrides: Any) -> dict[str, Any]:
    """A valid EmailRequest body, with ``overrides`` applied."""
    body: dict[str, Any] = {
        "to": [{"email": "ann@example.com", "name": "Ann"}],
        "from": {"email": "app@example.com", "name": "App"},
        "subject": "Hello",
        "content": {"text": "Hello Ann", "html": "<p>Hello Ann</p>"},
    }
    body.update(overrides)
    return body
