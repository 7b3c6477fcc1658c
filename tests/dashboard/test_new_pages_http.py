"""Analytics, templates, suppressions and settings over plain HTTP: empty states,
the preview's problems, refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from postroom.api.app import create_app
from postroom.app import Postroom
from tests.dashboard.test_http import PASSWORD, csrf_of, sign_in

ORIGIN = {"Origin": "https://dash.test"}


@pytest.fixture
async def web(postroom: Postroom) -> AsyncIterator[httpx.AsyncClient]:
    await postroom.users.create("ann", PASSWORD, "admin")
    transport = httpx.ASGITransport(app=create_app(postroom, workers=0))
    async with httpx.AsyncClient(transport=transport, base_url="https://dash.test") as client:
        yield client


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
