"""Analytics, templates, suppressions and settings over plain HTTP: empty states,
the preview's problems, refusals."""

from __future__ import annotations

import html
import json
import uuid

import httpx

from postroom.app import Postroom
from postroom.clock import ManualClock
from tests.dashboard.test_http import csrf_of, sign_in

ORIGIN = {"Origin": "https://dash.test"}


async def test_every_new_page_answers_with_its_empty_state(web: httpx.AsyncClient) -> None:
    await sign_in(web)
    analytics = await web.get("/analytics?period=7d")
    assert analytics.status_code == 200, analytics.text
    assert 'data-analytics="empty"' in analytics.text and "last 7 days" in analytics.text
    assert "data-chart" not in analytics.text
    templates = await web.get("/templates")
    assert templates.status_code == 200 and "No templates yet" in templates.text
    suppressions = await web.get("/suppressions")
    assert suppressions.status_code == 200 and "No address is suppressed" in suppressions.text
    settings = await web.get("/settings")
    assert settings.status_code == 200 and 'name="q.bulk.concurrency"' in settings.text
    for path in ("/analytics", "/templates", "/suppressions", "/settings"):
        assert f'href="{path}"' in settings.text  # in the navigation


async def test_the_preview_names_the_line_of_a_compile_error(web: httpx.AsyncClient) -> None:
    await sign_in(web)
    token = await csrf_of(web, "/templates/new")
    form = {"csrf_token": token, "subject": "Hi {{ name }}", "html": "<p>ok</p>\n{% if %}"}
    answer = await web.post("/templates/preview", data=form, headers=ORIGIN)
    assert answer.status_code == 200
    assert 'data-line="2"' in answer.text and "Line 2</strong> of html" in answer.text
    assert "html line 2" not in answer.text  # the place is said once
    form = {**form, "html": "<p>Hi {{ name }}</p>", "variables": '[{"name": "name"}]'}
    missing = await web.post("/templates/preview", data=form, headers=ORIGIN)
    assert "templateData.name: required variable is missing" in missing.text
    form["data"] = '{"name": "<b>Ann</b>"}'
    ok = await web.post("/templates/preview", data=form, headers=ORIGIN)
    assert "Hi &lt;b&gt;Ann&lt;/b&gt;" in ok.text  # the subject, escaped in the page
    frame = await web.post("/templates/preview/frame", data=form, headers=ORIGIN)
    assert "sandbox" in frame.headers["content-security-policy"]
    assert "<p>Hi &lt;b&gt;Ann&lt;/b&gt;</p>" in frame.text  # autoescaped by the template
    no_token = await web.post("/templates/preview/frame", data={**form, "csrf_token": "x"})
    assert no_token.status_code == 403


async def test_analytics_counts_what_was_sent_and_opened(
    web: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    from sqlalchemy import update

    from postroom.analytics.queries import records
    from tests.support.payloads import email

    sent = [await postroom.send(email(tags=["launch"])) for _ in range(2)]
    await postroom.send(email(tags=["other"]))
    worker = postroom.worker()
    try:
        await worker.drain()
    finally:
        await worker.aclose()
    async with postroom.engine.begin() as conn:  # one reader opened the first message
        await conn.execute(
            update(records)
            .where(records.c.job_id == uuid.UUID(sent[0].id))
            .values(opened_at=postroom.clock.now(), opened_any_at=postroom.clock.now())
        )
    clock.advance(60)  # the window ends now, exclusive
    await sign_in(web)
    page = (await web.get("/analytics?period=24h")).text
    assert 'data-figure="total-sent">3<' in page and 'data-figure="total-opened">1<' in page
    launch = page.split('data-campaign="launch"')[1].split("</tr>")[0]
    assert 'data-figure="sent">2<' in launch and 'data-figure="opened">1<' in launch
    assert page.index('data-campaign="launch"') < page.index('data-campaign="other"')  # opens
    chart = page.split("data-chart='")[1].split("'")[0]
    series = {s["label"]: s["values"] for s in json.loads(html.unescape(chart))["series"]}
    assert sum(series["sent"]) == 3 and sum(series["opened"]) == 1
    assert len(series["sent"]) in (24, 25)  # hourly over 24 hours


async def test_templates_page_through_and_a_deleted_one_leaves_the_list(
    web: httpx.AsyncClient, postroom: Postroom
) -> None:
    from postroom.schemas.templates import TemplateCreate

    store = postroom.sender.templates
    for n in range(27):
        body = {"name": f"t{n:02}", "subject": "Hi", "content": {"text": "Hello"}}
        await store.create(TemplateCreate.model_validate(body))
    await sign_in(web)
    first = (await web.get("/templates")).text
    assert first.count("data-template=") == 25 and 'rel="next"' in first
    second = (await web.get("/templates?page=2")).text
    assert second.count("data-template=") == 2 and "27 templates" in second
    token = await csrf_of(web, "/templates")
    gone = await web.post("/templates/t26/delete", data={"csrf_token": token}, headers=ORIGIN)
    assert gone.headers["location"] == "/templates?done=deleted&name=t26"
    assert (await store.list_all())[-1].name == "t25"
    refused = await web.post(
        "/templates/new",
        data={"csrf_token": token, "name": "t00", "type": "system", "subject": "Hi", "text": "x"},
        headers=ORIGIN,
    )
    assert refused.status_code == 422 and "a template named &#39;t00&#39; exists" in refused.text


async def test_a_refused_suppression_says_why(web: httpx.AsyncClient) -> None:
    await sign_in(web)
    token = await csrf_of(web, "/suppressions")
    bad = await web.post(
        "/suppressions", data={"csrf_token": token, "email": "nobody"}, headers=ORIGIN
    )
    assert bad.status_code == 422 and "email: &#39;nobody&#39; is not a valid" in bad.text
    past = await web.post(
        "/suppressions",
        data={"csrf_token": token, "email": "a@example.com", "expires": "2001-01-01T00:00"},
        headers=ORIGIN,
    )
    assert past.status_code == 422 and "in the future" in past.text
    missing = await web.post(
        "/suppressions/remove",
        data={"csrf_token": token, "email": "a@example.com", "scope": "global"},
        headers=ORIGIN,
    )
    assert missing.status_code == 404 and "is not suppressed" in missing.text


async def test_settings_send_only_what_changed(web: httpx.AsyncClient, postroom: Postroom) -> None:
    from postroom.dashboard.settings import _form_of, body_of
    from postroom.services.system_config import SystemConfigService

    current = await SystemConfigService(postroom).read()
    form = _form_of(current)
    assert body_of(form, current) == {}
    form["q.bulk.retry.maxAttempts"] = "9"
    form["q.transactional.enabled"] = ""
    assert body_of(form, current) == {
        "queueConfig": {
            "queues": {
                "bulk": {"retry": {**_retry(current, "bulk"), "maxAttempts": 9}},
                "transactional": {"enabled": False},
            }
        }
    }
    await sign_in(web)
    token = await csrf_of(web, "/settings")
    same = await web.post(
        "/settings", data={**_form_of(current), "csrf_token": token}, headers=ORIGIN
    )
    assert "Nothing was changed." in same.text


def _retry(current: dict[str, object], queue: str) -> dict[str, object]:
    retry = current["queueConfig"]["queues"][queue]["retry"]  # type: ignore[index]
    return {k: v for k, v in retry.items() if k != "backoff"}
