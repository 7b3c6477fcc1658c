"""A request's size counts UTF-8 bytes, however its text is measured."""

from __future__ import annotations

from postroom.schemas.email import EmailRequest
from tests.support.payloads import email


def size(**overrides: object) -> int:
    return EmailRequest.model_validate(email(**overrides)).estimated_size()


def test_ascii_and_other_text_are_counted_in_bytes() -> None:
    ascii_only = size(subject="Hi", content={"text": "x" * 10, "html": "<p>y</p>"})
    assert ascii_only == 2 + 10 + 8 + 2  # subject, text, html, "{}" for no template data
    accented = size(subject="Grüße", content={"text": "é" * 10, "html": "<p>€</p>"})
    assert accented == len("Grüße".encode()) + 20 + len("<p>€</p>".encode()) + 2
