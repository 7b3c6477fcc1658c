"""``FastSend`` answers ``POST /send`` ahead of the router: exactly as FastAPI's route.

Every request is made twice, once to the app as served and once to the same app
without ``FastSend`` (so FastAPI's ``send_email`` route answers), and the two
answers must agree: status, the headers a client reads, and the body (the ids
and times of a 202 differ, so there its shape and the fixed fields).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from postroom.api.app import create_app
from postroom.api.routes.email import FastSend
from postroom.app import Postroom
from postroom.tracking import suppressions
from tests.support.payloads import email as email_body

SEND = "/api/system/email/send"
#: what differs between two answers to the same request however they are made
_VARYING = frozenset({"date", "server"})


def _client(postroom: Postroom, key: str, *, fast: bool) -> httpx.AsyncClient:
    app = create_app(postroom, workers=0)
    if not fast:  # before the first request builds the middleware stack
        app.user_middleware = [m for m in app.user_middleware if m.cls is not FastSend]
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://postroom.test",
        headers={"Authorization": f"Bearer {key}"},
    )


@pytest.fixture
async def pair(
    postroom: Postroom, admin_key: str
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    async with (
        _client(postroom, admin_key, fast=True) as fast,
        _client(postroom, admin_key, fast=False) as routed,
    ):
        yield fast, routed


def _headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in _VARYING}


async def both(
    pair: tuple[httpx.AsyncClient, httpx.AsyncClient], **request: Any
) -> tuple[httpx.Response, httpx.Response]:
    fast, routed = pair
    return await fast.post(SEND, **request), await routed.post(SEND, **request)


def assert_same_problem(fast: httpx.Response, routed: httpx.Response, status: int) -> None:
    assert routed.status_code == status, routed.text
    assert fast.status_code == status, fast.text
    assert fast.headers["content-type"] == "application/problem+json"
    assert _headers(fast) == _headers(routed)
    assert fast.json() == routed.json()


def assert_same_acceptance(fast: httpx.Response, routed: httpx.Response) -> dict[str, Any]:
    assert routed.status_code == 202, routed.text
    assert fast.status_code == 202, fast.text
    assert _headers(fast).keys() == _headers(routed).keys()
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
    assert fast.headers["content-length"] == str(len(fast.content))
    a, b = fast.json(), routed.json()
    assert a.keys() == b.keys()
    assert a["id"] != b["id"]  # two emails were queued
    for field in ("status", "attempts", "recipients", "queueId", "createdAt", "scheduledAt"):
        assert a[field] == b[field], field
    return dict(a)


async def test_an_accepted_email_is_answered_alike(pair: Any, postroom: Postroom) -> None:
    fast, routed = await both(
        pair,
        json=email_body(
            to=[{"email": "ann@example.com"}, {"email": "bob@example.com", "type": "cc"}]
        ),
    )
    result = assert_same_acceptance(fast, routed)
    assert result["status"] == "queued" and result["recipients"] == 2
    status = await postroom.status(result["id"])
    assert status.status == "queued"  # committed before the 202


async def test_a_suppressed_recipient_is_answered_alike(pair: Any, postroom: Postroom) -> None:
    async with postroom.engine.begin() as conn:
        await suppressions.add(
            conn, "ann@example.com", scope="global", reason="manual", now=postroom.clock.now()
        )
    fast, routed = await both(pair, json=email_body())
    assert assert_same_acceptance(fast, routed)["status"] == "suppressed"


@pytest.mark.parametrize(
    ("request_args", "status"),
    [
        ({"content": b"{}", "headers": {"Content-Type": "text/plain"}}, 415),
        ({"content": b"{}"}, 415),  # no content type at all
        ({"content": b'{"to": [', "headers": {"Content-Type": "application/json"}}, 422),
        ({"content": b"[" * 40 + b"]" * 40, "headers": {"Content-Type": "application/json"}}, 422),
        (
            {
                "content": b'{"subject": "a\\u0000"}',
                "headers": {"Content-Type": "application/json"},
            },
            422,
        ),
        ({"json": [email_body()]}, 422),  # not an object
        ({"json": email_body(to=[])}, 422),
        ({"json": email_body(to=[{"email": "not an address"}], subject=7)}, 422),
        ({"json": {**email_body(), "unknown": 1}}, 422),
        ({"json": email_body(provider="no-such-provider")}, 422),
        ({"json": email_body(), "headers": {"Idempotency-Key": " "}}, 422),
        ({"json": email_body(), "headers": {"Idempotency-Key": "k" * 201}}, 422),
        ({"json": email_body(), "headers": {"Authorization": "Bearer pr_00000000_nope"}}, 401),
        ({"json": email_body(), "headers": {"Authorization": "Basic YTpi"}}, 401),
        ({"json": email_body(), "headers": {"Authorization": ""}}, 401),
    ],
    ids=[
        "text-plain",
        "no-content-type",
        "bad-json",
        "too-deep",
        "nul",
        "array",
        "no-recipients",
        "invalid-fields",
        "unknown-field",
        "unknown-provider",
        "blank-idempotency-key",
        "long-idempotency-key",
        "unknown-key",
        "not-bearer",
        "no-key",
    ],
)
async def test_a_refused_request_is_answered_alike(
    pair: Any, request_args: dict[str, Any], status: int
) -> None:
    fast, routed = await both(pair, **request_args)
    assert_same_problem(fast, routed, status)


async def test_a_key_without_the_send_scope_is_answered_alike(
    pair: Any, postroom: Postroom
) -> None:
    reader, _ = await postroom.keys.create("reader", ["read"])
    fast, routed = await both(
        pair, json=email_body(), headers={"Authorization": f"Bearer {reader}"}
    )
    assert_same_problem(fast, routed, 403)


async def test_a_revoked_key_is_answered_alike(pair: Any, postroom: Postroom) -> None:
    key, info = await postroom.keys.create("gone", ["send"])
    await postroom.keys.revoke(info.prefix)
    fast, routed = await both(pair, json=email_body(), headers={"Authorization": f"Bearer {key}"})
    assert_same_problem(fast, routed, 401)


async def test_idempotency_keys_are_answered_alike(pair: Any) -> None:
    fast, routed = pair
    answers = []
    for client, key in ((fast, "fast-1"), (routed, "routed-1")):
        headers = {"Idempotency-Key": key}
        first = await client.post(SEND, json=email_body(), headers=headers)
        again = await client.post(SEND, json=email_body(), headers=headers)
        other = await client.post(SEND, json=email_body(subject="Other"), headers=headers)
        assert first.status_code == again.status_code == 202
        assert again.json() == first.json()  # the first response, exactly
        answers.append((first, other))
    (fast_first, fast_other), (routed_first, routed_other) = answers
    assert_same_acceptance(fast_first, routed_first)
    assert_same_problem(fast_other, routed_other, 422)


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_methods_still_reach_the_router(pair: Any, method: str) -> None:
    fast, routed = pair
    a = await fast.request(method, SEND)
    b = await routed.request(method, SEND)
    assert_same_problem(a, b, 405)
    assert a.headers["allow"] == "POST"


async def test_the_access_log_sees_the_fast_path(
    pair: Any, caplog: pytest.LogCaptureFixture
) -> None:
    fast, _ = pair
    with caplog.at_level("INFO", logger="postroom.access"):
        await fast.post(SEND, json=email_body())
        await fast.post(SEND, json=[])
    lines = [r.getMessage() for r in caplog.records if r.name == "postroom.access"]
    assert [line.split(" ")[:3] for line in lines] == [
        ["POST", SEND, "202"],
        ["POST", SEND, "422"],
    ]
