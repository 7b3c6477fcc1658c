"""Request bodies: JSON only (415 otherwise), and hostile JSON is a 422, never a 500."""

from __future__ import annotations

import httpx
import pytest

from tests.support.payloads import email as email_body

SEND = "/api/system/email/send"
BODY_ROUTES = [
    ("POST", SEND),
    ("POST", "/api/system/email/providers"),
    ("PUT", "/api/system/email/providers/Development%20outbox"),
    ("POST", "/api/system/email/test"),
]


@pytest.mark.parametrize(("method", "url"), BODY_ROUTES)
@pytest.mark.parametrize("depth", [33, 10_000])
async def test_deeply_nested_json_is_422(
    client: httpx.AsyncClient, method: str, url: str, depth: int
) -> None:
    hostile = "[" * depth + "]" * depth
    response = await client.request(
        method, url, content=hostile, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "nested" in response.json()["detail"]


async def test_nesting_within_the_limit_is_accepted(client: httpx.AsyncClient) -> None:
    deep: dict[str, object] = {}
    for _ in range(29):
        deep = {"a": deep}
    response = await client.post(SEND, json=email_body(metadata=deep))
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(("method", "url"), BODY_ROUTES)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_a_body_that_is_not_json_is_415(
    client: httpx.AsyncClient, method: str, url: str, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.request(method, url, content=b'{"a": 1}', headers=headers)
    assert response.status_code == 415, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert "application/json" in response.json()["detail"]


async def test_json_with_a_charset_or_a_json_suffix_is_accepted(client: httpx.AsyncClient) -> None:
    import json

    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = await client.post(
            SEND, content=json.dumps(email_body()), headers={"Content-Type": content_type}
        )
        assert response.status_code == 202, (content_type, response.text)


@pytest.mark.parametrize(("method", "url"), BODY_ROUTES)
async def test_malformed_json_is_422_not_400(
    client: httpx.AsyncClient, method: str, url: str
) -> None:
    response = await client.request(
        method, url, content=b'{"to": [', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "body"


@pytest.mark.parametrize(
    "change",
    [
        {"metadata": {"k": "a\u0000"}},
        {"metadata": {"\u0000": 1}},
        {"userId": "a\u0000"},
        {"content": {"text": "a\u0000b"}},
    ],
)
async def test_a_nul_character_is_422_on_every_database(
    client: httpx.AsyncClient, change: dict[str, object]
) -> None:
    response = await client.post(SEND, json=email_body(**change))
    assert response.status_code == 422, response.text
    assert "NUL" in response.json()["detail"]
