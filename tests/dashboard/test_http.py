"""The dashboard over plain HTTP (no browser): headers, cookies, redirects, the API beside it."""

from __future__ import annotations

import httpx

from postroom.app import Postroom
from tests.dashboard.conftest import PASSWORD


async def sign_in(web: httpx.AsyncClient, next_: str = "/") -> httpx.Response:
    form = await web.get("/login")
    token = form.cookies["postroom_login_csrf"]
    return await web.post(
        "/login",
        data={"csrf_token": token, "name": "ann", "password": PASSWORD, "next": next_},
        headers={"Origin": "https://dash.test"},
    )


async def test_pages_carry_a_strict_policy_and_refuse_framing(web: httpx.AsyncClient) -> None:
    page = await web.get("/login")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"


async def test_the_session_cookie_is_secure_over_https(web: httpx.AsyncClient) -> None:
    answer = await sign_in(web)
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    cookie = next(h for h in answer.headers.get_list("set-cookie") if "postroom_session" in h)
    assert all(flag in cookie for flag in ("HttpOnly", "Secure", "SameSite=lax"))


async def test_sign_in_only_redirects_within_the_site(web: httpx.AsyncClient) -> None:
    assert (await sign_in(web, "//evil.example/x")).headers["location"] == "/"
    assert (await sign_in(web, "https://evil.example/")).headers["location"] == "/"
    assert (await sign_in(web, "/queues?x=1")).headers["location"] == "/queues?x=1"


async def test_sign_in_without_its_token_or_from_another_origin_is_refused(
    web: httpx.AsyncClient,
) -> None:
    form = await web.get("/login")
    token = form.cookies["postroom_login_csrf"]
    no_token = await web.post("/login", data={"name": "ann", "password": PASSWORD})
    assert no_token.status_code == 403
    elsewhere = await web.post(
        "/login",
        data={"csrf_token": token, "name": "ann", "password": PASSWORD},
        headers={"Origin": "https://evil.example"},
    )
    assert elsewhere.status_code == 403
    assert "postroom_session" not in elsewhere.cookies
    not_ascii = await web.post(
        "/login",
        data={"csrf_token": "\u00e9" * 8, "name": "ann", "password": PASSWORD},
        headers={"Origin": "https://dash.test"},
    )
    assert not_ascii.status_code == 403
    assert "postroom_session" not in not_ascii.cookies


async def test_the_api_is_unchanged_beside_the_dashboard(web: httpx.AsyncClient) -> None:
    answer = await web.get("/api/system/email/queues")
    assert answer.status_code == 401
    assert answer.headers["content-type"] == "application/problem+json"
    assert (await web.get("/healthz")).status_code == 200
    # pages ask for a sign-in; the script is served
    assert (await web.get("/messages")).headers["location"] == "/login?next=%2Fmessages"
    assert (await web.get("/static/htmx.min.js")).status_code == 200


async def test_an_unknown_message_is_a_page_not_a_traceback(web: httpx.AsyncClient) -> None:
    await sign_in(web)
    missing = await web.get("/messages/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert "no email with id" in missing.text
    bad_date = await web.get("/messages?since=yesterday")
    assert bad_date.status_code == 422 and "YYYY-MM-DD" in bad_date.text


async def test_tracking_events_show_as_a_timeline_only_when_there_are_some(
    web: httpx.AsyncClient, postroom: Postroom
) -> None:
    import uuid
    from datetime import timedelta

    from sqlalchemy import insert, select

    from postroom.services.messages import events_t, records_t, tracking_t
    from tests.support.payloads import email

    await sign_in(web)
    sent = await postroom.send(email(subject="Tracked"))
    page = await web.get(f"/messages/{sent.id}")
    assert page.status_code == 200 and "Tracking" not in page.text
    async with postroom.engine.begin() as conn:
        record_id = (
            await conn.execute(
                select(records_t.c.id).where(records_t.c.job_id == uuid.UUID(sent.id))
            )
        ).scalar_one()
        tracking_id = uuid.uuid4()
        await conn.execute(
            insert(tracking_t).values(
                id=tracking_id,
                email_id=record_id,
                delivery_id="d1",
                recipient_email="ann@example.com",
                tracking_enabled={},
                status="opened",
                events=[],
                created_at=postroom.clock.now(),
                updated_at=postroom.clock.now(),
            )
        )
        for kind, agent, seconds in (("opened", "<b>Mail</b>", 60), ("delivered", None, 1)):
            await conn.execute(
                insert(events_t).values(
                    id=uuid.uuid4(),
                    tracking_id=tracking_id,
                    type=kind,
                    timestamp=postroom.clock.now() + timedelta(seconds=seconds),
                    data={},
                    user_agent=agent,
                )
            )
    page = await web.get(f"/messages/{sent.id}")
    timeline = page.text.split('<ol class="timeline">')[1].split("</ol>")[0]
    assert timeline.index("delivered") < timeline.index("opened")
    assert "&lt;b&gt;Mail&lt;/b&gt;" in timeline


async def test_a_poll_after_the_session_ended_sends_htmx_to_the_sign_in_page(
    web: httpx.AsyncClient,
) -> None:
    answer = await web.get("/overview/figures", headers={"HX-Request": "true"})
    assert (answer.status_code, answer.headers["hx-redirect"]) == (401, "/login")


async def csrf_of(web: httpx.AsyncClient, path: str) -> str:
    page = await web.get(path)
    return page.text.split('name="csrf_token" value="')[1].split('"')[0]


async def test_provider_buttons_enable_disable_and_reprioritise(
    web: httpx.AsyncClient, postroom: Postroom
) -> None:
    await sign_in(web)
    token = await csrf_of(web, "/providers")
    origin = {"Origin": "https://dash.test"}
    off = await web.post(
        "/providers/Development outbox/disable", data={"csrf_token": token}, headers=origin
    )
    assert off.headers["location"] == "/providers?done=disabled&provider=Development+outbox"
    prio = await web.post(
        "/providers/Development outbox/priority",
        data={"csrf_token": token, "priority": "7"},
        headers=origin,
    )
    assert prio.status_code == 303
    bad = await web.post(
        "/providers/Development outbox/priority",
        data={"csrf_token": token, "priority": "-1"},
        headers=origin,
    )
    assert bad.status_code == 422 and "whole number" in bad.text
    from postroom.services.providers import ProviderService

    stored = await ProviderService.of(postroom).get("Development outbox")
    assert (stored.enabled, stored.priority) == (False, 7)


async def test_retry_failed_puts_failed_jobs_back(
    web: httpx.AsyncClient, postroom: Postroom
) -> None:
    from tests.support.payloads import email
    from tests.support.providers import add_provider, disable_all

    await disable_all(postroom)
    await add_provider(postroom, name="fake", type="fake", config={"script": ["rejected"]})
    sent = await postroom.send(email())
    worker = postroom.worker()
    try:
        await worker.drain()
    finally:
        await worker.aclose()
    assert (await postroom.status(sent.id)).status == "failed"
    await sign_in(web)
    token = await csrf_of(web, "/queues")
    answer = await web.post(
        "/queues/transactional/retry",
        data={"csrf_token": token},
        headers={"Origin": "https://dash.test"},
    )
    assert answer.headers["location"] == "/queues?done=retried&queue=transactional"
    assert (await postroom.status(sent.id)).status == "queued"
