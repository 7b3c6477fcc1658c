"""Templates over the API: CRUD, immutable versions, preview, and sending with them."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, cast

import httpx
from sqlalchemy import Table, func, select

from postroom.app import Postroom
from postroom.db.models import EmailJob, EmailRecord

API = "/api/system/email"
jobs_t = cast(Table, EmailJob.__table__)
records_t = cast(Table, EmailRecord.__table__)


def welcome(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "welcome",
        "description": "Sent after sign-up",
        "subject": "Welcome, {{ name }}",
        "content": {
            "html": "<style>p { color: #333 }</style><p>Hello {{ name }}, you have {{ credits }}"
            " credits.</p>",
        },
        "variables": [
            {"name": "name", "type": "string", "example": "Ann"},
            {"name": "credits", "type": "integer", "required": False, "default": 10},
        ],
    }
    body.update(overrides)
    return body


async def jobs(postroom: Postroom) -> int:
    async with postroom.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(jobs_t))).scalar_one())


async def deliver(postroom: Postroom, tmp_path: Path, email_id: str) -> EmailMessage:
    worker = postroom.worker()
    try:
        await worker.drain()
    finally:
        await worker.aclose()
    raw = (tmp_path / "var" / "outbox" / f"{email_id}.eml").read_bytes()
    return cast(EmailMessage, email.message_from_bytes(raw, policy=email.policy.default))


def send_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "to": [{"email": "ann@example.com", "name": "Ann"}],
        "from": {"email": "app@example.com"},
        "templateId": "welcome",
        "templateData": {"name": "Ann"},
    }
    body.update(overrides)
    return body


async def test_crud_and_version_history(client: httpx.AsyncClient) -> None:
    created = await client.post(f"{API}/templates", json=welcome())
    assert created.status_code == 201, created.text
    tpl = created.json()
    assert tpl["version"] == 1 and tpl["enabled"] is True

    # a change of the description alone is no new version
    same = await client.put(f"{API}/templates/welcome", json={"description": "after sign-up"})
    assert same.json()["version"] == 1
    edited = await client.put(f"{API}/templates/{tpl['id']}", json={"subject": "Hi {{ name }}"})
    assert edited.status_code == 200, edited.text
    assert edited.json()["version"] == 2

    versions = (await client.get(f"{API}/templates/welcome/versions")).json()["versions"]
    assert [(v["version"], v["subject"]) for v in versions] == [
        (1, "Welcome, {{ name }}"),
        (2, "Hi {{ name }}"),
    ]
    one = (await client.get(f"{API}/templates/welcome/versions/1")).json()
    assert one["subject"] == "Welcome, {{ name }}"
    assert (await client.get(f"{API}/templates/welcome/versions/3")).status_code == 404
    listed = (await client.get(f"{API}/templates")).json()["templates"]
    assert [t["name"] for t in listed] == ["welcome"]
    assert (await client.post(f"{API}/templates", json=welcome())).status_code == 409


async def test_a_template_that_does_not_compile_is_422_with_part_and_line(
    client: httpx.AsyncClient,
) -> None:
    bad = welcome(content={"html": "<p>\n{% for x in items %}\n{{ x }}\n"})
    response = await client.post(f"{API}/templates", json=bad)
    assert response.status_code == 422, response.text
    assert "html line" in response.json()["detail"]
    escape = welcome(content={"text": "{{ ''.__class__.__mro__ }}"})
    assert (await client.post(f"{API}/templates", json=escape)).status_code == 201
    # ... but rendering it is a clear 422, not a 500 nor a leak
    preview = await client.post(f"{API}/templates/welcome/preview", json={})
    assert preview.status_code == 422
    assert "unsafe" in preview.json()["detail"] and "<class" not in preview.text


async def test_preview_renders_with_examples_or_given_data(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/templates", json=welcome())
    example = (await client.post(f"{API}/templates/welcome/preview", json={})).json()
    assert example["subject"] == "Welcome, Ann"
    assert 'style="color: #333;"' in example["html"]
    assert "Hello Ann, you have 10 credits." in example["text"]
    given = await client.post(
        f"{API}/templates/welcome/preview", json={"templateData": {"name": "<Bo>", "credits": 3}}
    )
    assert "Hello &lt;Bo&gt;, you have 3 credits" in given.json()["html"]


async def test_pinned_version_survives_an_edit_of_a_queued_jobs_template(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path
) -> None:
    await client.post(f"{API}/templates", json=welcome())
    queued = await client.post(f"{API}/template", json=send_body())
    assert queued.status_code == 202, queued.text
    edited = await client.put(
        f"{API}/templates/welcome",
        json={"subject": "Changed {{ name }}", "content": {"text": "new body {{ name }}"}},
    )
    assert edited.json()["version"] == 2
    later = await client.post(f"{API}/send", json=send_body())

    first = await deliver(postroom, tmp_path, queued.json()["id"])
    assert first["Subject"] == "Welcome, Ann"
    html = first.get_body(("html",))
    assert html is not None and "Hello Ann, you have 10 credits." in html.get_content()
    text = first.get_body(("plain",))
    assert text is not None and "Hello Ann, you have 10 credits." in text.get_content()
    second = await deliver(postroom, tmp_path, later.json()["id"])
    assert second["Subject"] == "Changed Ann"
    assert not second.is_multipart() and "new body Ann" in second.get_content()
    versions = (await client.get(f"{API}/templates/welcome/versions")).json()["versions"]
    assert [v["version"] for v in versions] == [1, 2]


async def test_a_pinned_earlier_version_can_be_asked_for(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path
) -> None:
    await client.post(f"{API}/templates", json=welcome())
    await client.put(f"{API}/templates/welcome", json={"subject": "v2 {{ name }}"})
    sent = await client.post(
        f"{API}/send",
        json=send_body(
            templateId=None,
            templateData=None,
            content={"template": {"id": "welcome", "version": 1, "data": {"name": "Cy"}}},
        ),
    )
    assert sent.status_code == 202, sent.text
    message = await deliver(postroom, tmp_path, sent.json()["id"])
    assert message["Subject"] == "Welcome, Cy"
    async with postroom.engine.connect() as conn:
        subject = (await conn.execute(select(records_t.c.subject))).scalar_one()
    assert subject == "Welcome, Cy"


async def test_missing_and_mistyped_variables_are_422_listing_each_and_nothing_is_queued(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await client.post(
        f"{API}/templates",
        json=welcome(content={"text": "{{ name }} {{ credits }} {{ undeclared }}"}),
    )
    response = await client.post(f"{API}/send", json=send_body(templateData={"credits": "ten"}))
    assert response.status_code == 422, response.text
    errors = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert errors == {
        "templateData.name": "required variable is missing",
        "templateData.credits": "must be of type integer, got str",
        "templateData.undeclared": "used by the template but not given",
    }
    assert await jobs(postroom) == 0


async def test_template_and_subject_together_or_unknown_template_are_refused(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await client.post(f"{API}/templates", json=welcome())
    both = await client.post(f"{API}/send", json=send_body(subject="Hi"))
    assert both.status_code == 422 and "come from the template" in both.text
    unknown = await client.post(f"{API}/template", json=send_body(templateId="nope"))
    assert unknown.status_code == 422 and "no template 'nope'" in unknown.text
    no_template = await client.post(
        f"{API}/template",
        json={"to": [{"email": "a@example.com"}], "subject": "x", "content": {"text": "x"}},
    )
    assert no_template.status_code == 422
    assert await jobs(postroom) == 0


async def test_delete_archives_and_queued_mail_still_renders(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path
) -> None:
    created = (await client.post(f"{API}/templates", json=welcome())).json()
    queued = (await client.post(f"{API}/template", json=send_body())).json()
    deleted = await client.delete(f"{API}/templates/welcome")
    assert deleted.status_code == 200
    assert deleted.json()["archived"] is True and "queued" in deleted.json()["detail"]
    assert (await client.get(f"{API}/templates")).json()["templates"] == []
    assert (await client.get(f"{API}/templates/welcome")).status_code == 404
    assert (await client.get(f"{API}/templates/{created['id']}")).json()["archivedAt"]
    refused = await client.post(f"{API}/template", json=send_body(templateId=created["id"]))
    assert refused.status_code == 422 and "was deleted" in refused.text
    by_name = await client.post(f"{API}/template", json=send_body())
    assert by_name.status_code == 422 and "no template 'welcome'" in by_name.text
    message = await deliver(postroom, tmp_path, queued["id"])
    assert message["Subject"] == "Welcome, Ann"
    # the name is free again
    assert (await client.post(f"{API}/templates", json=welcome())).status_code == 201


async def test_a_render_failure_at_send_time_fails_the_job_at_once(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await client.post(
        f"{API}/templates",
        json=welcome(subject="Hi", content={"text": "{{ name.upper(1, 2) }}"}),
    )
    response = await client.post(f"{API}/template", json=send_body())
    assert response.status_code == 202, response.text
    queued = response.json()
    worker = postroom.worker()
    try:
        await worker.drain()
    finally:
        await worker.aclose()
    status = (await client.get(f"{API}/status/{queued['id']}")).json()
    assert status["status"] == "failed"
    assert status["attempts"] == 1
    assert status["attemptLog"][0]["errorCode"] == "compose"
    assert "the template cannot be rendered" in status["attemptLog"][0]["error"]
    assert "str.upper() takes no arguments" in status["attemptLog"][0]["error"]


async def test_a_read_only_key_cannot_change_templates(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    key, _ = await postroom.keys.create("reader", ["read"])
    response = await client.post(
        f"{API}/templates", json=welcome(), headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 403
