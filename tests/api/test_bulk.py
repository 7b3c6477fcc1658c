"""POST /bulk: one record and job per recipient, all or nothing, progress, idempotency."""

from __future__ import annotations

import email
import email.policy
import json
import uuid
from pathlib import Path
from typing import Any, cast

import httpx
from sqlalchemy import Table, func, select

from postroom.app import Postroom
from postroom.db.models import EmailJob, EmailQueue, EmailRecord

API = "/api/system/email"
jobs_t = cast(Table, EmailJob.__table__)
records_t = cast(Table, EmailRecord.__table__)
queues_t = cast(Table, EmailQueue.__table__)

NEWSLETTER = {
    "name": "newsletter",
    "type": "marketing",
    "subject": "News for {{ name }}",
    "content": {"html": "<p>Dear {{ name }}, your code is <b>{{ code }}</b>. {{ footer }}</p>"},
    "variables": [
        {"name": "name", "type": "string"},
        {"name": "code", "type": "integer"},
        {"name": "footer", "type": "string", "required": False, "default": "Bye"},
    ],
}


async def count(postroom: Postroom, table: Table) -> int:
    async with postroom.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def drain(postroom: Postroom) -> None:
    worker = postroom.worker()
    try:
        while await worker.drain():
            pass
    finally:
        await worker.aclose()


def recipients(n: int) -> list[dict[str, Any]]:
    return [
        {"email": f"user{i}@example.com", "name": f"User {i}", "templateData": {"code": i}}
        for i in range(n)
    ]


async def test_a_thousand_personalised_messages_land_in_the_outbox(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path
) -> None:
    await client.post(f"{API}/templates", json=NEWSLETTER)
    body = {
        "from": {"email": "news@example.com"},
        "templateId": "newsletter",
        "templateData": {"name": "friend", "footer": "See you"},
        "recipients": [
            {**r, "templateData": {**r["templateData"], "name": r["name"]}}
            for r in recipients(1000)
        ],
    }
    response = await client.post(f"{API}/bulk", json=body)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["recipients"] == 1000
    async with postroom.engine.connect() as conn:
        queue = (
            await conn.execute(
                select(queues_t.c.name).where(queues_t.c.id == uuid.UUID(accepted["queueId"]))
            )
        ).scalar_one()
    assert queue == "bulk"  # marketing mail goes to the bulk queue
    assert await count(postroom, jobs_t) == 1000 and await count(postroom, records_t) == 1000
    progress = (await client.get(f"{API}/bulk/{accepted['id']}")).json()
    assert (progress["total"], progress["queued"], progress["sent"]) == (1000, 1000, 0)

    await drain(postroom)

    progress = (await client.get(f"{API}/bulk/{accepted['id']}")).json()
    assert (progress["queued"], progress["sent"], progress["failed"]) == (0, 1000, 0)
    assert progress["suppressed"] == 0
    seen = set()
    for eml in (tmp_path / "var" / "outbox").glob("*.eml"):
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        i = int(str(message["To"]).split("user")[1].split("@")[0])
        assert message["Subject"] == f"News for User {i}"
        html = message.get_body(("html",))
        assert html is not None and f"Dear User {i}, your code is <b>{i}</b>. See you" in (
            html.get_content()
        )
        seen.add(i)
    assert seen == set(range(1000))


async def test_a_bad_recipient_is_422_by_index_and_nothing_is_queued(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await client.post(f"{API}/templates", json=NEWSLETTER)
    people = recipients(50)
    for r in people:
        r["templateData"]["name"] = r["name"]
    del people[7]["templateData"]["name"]
    people[9]["templateData"]["code"] = "nine"
    body = {"from": {"email": "news@example.com"}, "templateId": "newsletter", "recipients": people}
    response = await client.post(f"{API}/bulk", json=body)
    assert response.status_code == 422, response.text
    errors = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert errors == {
        "recipients.7.templateData.name": "required variable is missing",
        "recipients.9.templateData.code": "must be of type integer, got str",
    }
    people[7]["templateData"]["name"] = "x"
    people[9]["templateData"]["code"] = 9
    people[3]["email"] = "not an address"
    response = await client.post(f"{API}/bulk", json=body)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["recipients.3.email"]
    assert await count(postroom, jobs_t) == 0 and await count(postroom, records_t) == 0


async def test_a_shared_message_without_template(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path
) -> None:
    body = {
        "from": {"email": "news@example.com"},
        "type": "transactional",
        "subject": "Maintenance tonight",
        "content": {"text": "We will be down 22:00-23:00."},
        "recipients": [{"email": "a@example.com"}, {"email": "b@example.com", "name": "B"}],
    }
    accepted = (await client.post(f"{API}/bulk", json=body)).json()
    await drain(postroom)
    files = sorted((tmp_path / "var" / "outbox").glob("*.eml"))
    assert len(files) == 2
    for eml in files:
        message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        assert message["Subject"] == "Maintenance tonight"
    assert (await client.get(f"{API}/bulk/{accepted['id']}")).json()["sent"] == 2


async def test_idempotency_key_answers_the_first_bulk_and_queues_nothing_more(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await client.post(f"{API}/templates", json=NEWSLETTER)
    body = {
        "from": {"email": "news@example.com"},
        "templateId": "newsletter",
        "templateData": {"name": "friend"},
        "recipients": recipients(20),
    }
    headers = {"Idempotency-Key": "campaign-7"}
    first = await client.post(f"{API}/bulk", json=body, headers=headers)
    second = await client.post(f"{API}/bulk", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert await count(postroom, jobs_t) == 20


async def test_bulk_refuses_subject_with_template_and_unknown_bulk_is_404(
    client: httpx.AsyncClient,
) -> None:
    await client.post(f"{API}/templates", json=NEWSLETTER)
    body = {"templateId": "newsletter", "subject": "x", "recipients": recipients(1)}
    response = await client.post(f"{API}/bulk", json=body)
    assert response.status_code == 422 and "come from the template" in response.text
    assert (await client.get(f"{API}/bulk/nope")).status_code == 404


async def test_bulk_headers_follow_the_send_header_policy(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    body = {
        "from": {"email": "news@example.com"},
        "subject": "Hello",
        "content": {"text": "Hi"},
        "recipients": [{"email": "a@example.com"}],
    }
    for headers in ({"DKIM-Signature": "v=1"}, {"X-Postroom-Id": "x"}, {"X-A": "a\r\nBcc: b"}):
        response = await client.post(f"{API}/bulk", json={**body, "headers": headers})
        assert response.status_code == 422, response.text
        assert [e["field"] for e in response.json()["errors"]] == ["headers"]
    assert await count(postroom, jobs_t) == 0
    accepted = await client.post(f"{API}/bulk", json={**body, "headers": {"X-Campaign": "w48"}})
    assert accepted.status_code == 202, accepted.text


async def test_an_idempotency_key_reused_with_another_bulk_is_refused(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await client.post(f"{API}/templates", json=NEWSLETTER)
    body: dict[str, Any] = {
        "from": {"email": "news@example.com"},
        "templateId": "newsletter",
        "templateData": {"name": "friend"},
        "recipients": recipients(5),
    }
    headers = {"Idempotency-Key": "campaign-8"}
    first = await client.post(f"{API}/bulk", json=body, headers=headers)
    assert first.status_code == 202
    # key order and spacing do not make another request
    same = await client.post(
        f"{API}/bulk",
        content=json.dumps(dict(reversed(body.items())), indent=2),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert same.status_code == 202 and same.json()["id"] == first.json()["id"]
    changed = {**body, "recipients": recipients(6)}
    other = await client.post(f"{API}/bulk", json=changed, headers=headers)
    assert other.status_code == 422
    assert other.headers["content-type"].startswith("application/problem+json")
    assert "different request" in other.json()["detail"]
    assert await count(postroom, jobs_t) == 5
    # another API key has its own keys: the same key is a new bulk send there
    sender, _ = await postroom.keys.create("other", ["send"])
    theirs = await client.post(
        f"{API}/bulk", json=changed, headers={**headers, "Authorization": f"Bearer {sender}"}
    )
    assert theirs.status_code == 202 and theirs.json()["id"] != first.json()["id"]
    assert await count(postroom, jobs_t) == 11


async def test_a_send_key_reads_only_its_own_bulk_sends_and_their_mail(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await client.post(f"{API}/templates", json=NEWSLETTER)
    alice, _ = await postroom.keys.create("alice", ["send"])
    bob, _ = await postroom.keys.create("bob", ["send"])
    body = {
        "from": {"email": "news@example.com"},
        "templateId": "newsletter",
        "templateData": {"name": "friend"},
        "recipients": recipients(3),
    }
    as_alice = {"Authorization": f"Bearer {alice}"}
    as_bob = {"Authorization": f"Bearer {bob}"}
    accepted = (await client.post(f"{API}/bulk", json=body, headers=as_alice)).json()
    local = await postroom.send_bulk(body)  # the facade: no API key

    assert (await client.get(f"{API}/bulk/{accepted['id']}", headers=as_alice)).json()["total"] == 3
    for headers, ident in ((as_bob, accepted["id"]), (as_alice, local.id)):
        response = await client.get(f"{API}/bulk/{ident}", headers=headers)
        assert response.status_code == 404, response.text
    assert (await client.get(f"{API}/bulk/{local.id}")).status_code == 200  # admin
    # each recipient's own mail belongs to the sender of the bulk send
    async with postroom.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(records_t.c.id, records_t.c.job_id, jobs_t.c.api_key_id)
                .join(jobs_t, jobs_t.c.id == records_t.c.job_id)
                .where(records_t.c.bulk_id == uuid.UUID(accepted["id"]))
            )
        ).all()
    assert len(rows) == 3 and len({r.job_id for r in rows}) == 3
    for row in rows:
        own = await client.get(f"{API}/status/{row.job_id}", headers=as_alice)
        assert own.status_code == 200, own.text
        assert own.json()["recipients"][0]["email"].startswith("user")
        assert (await client.get(f"{API}/status/{row.job_id}", headers=as_bob)).status_code == 404
        assert (await client.get(f"{API}/status/{row.id}", headers=as_bob)).status_code == 404


async def test_recipients_are_validated_as_strictly_on_the_fast_path(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    """Plain recipients take a fast path; anything doubtful gets the full validation's
    errors, by index, and nothing is queued."""
    base: dict[str, Any] = {"from": {"email": "news@example.com"}, "subject": "Hi",
                            "content": {"text": "Hello"}}  # fmt: skip
    bad = [
        ({"email": "a@example.com", "name": "A\r\nBcc: x@evil.example"}, "recipients.1.name"),
        ({"email": "a@localhost.test"}, "recipients.1.email"),
        ({"email": "not an address"}, "recipients.1.email"),
        ({"email": "a@example.com", "nickname": "x"}, "recipients.1.nickname"),
        ({"email": "a@example.com", "metadata": ["x"]}, "recipients.1.metadata"),
        ({"email": "a@example.com", "name": "x" * 256}, "recipients.1.name"),
    ]
    for recipient, field in bad:
        body = {**base, "recipients": [{"email": "first@example.com"}, recipient]}
        response = await client.post(f"{API}/bulk", json=body)
        assert response.status_code == 422, (recipient, response.text)
        fields = [e["field"] for e in response.json()["errors"]]
        assert field in fields, (recipient, fields)
    repeated = {**base, "recipients": [{"email": "Ann@Example.com"}, {"email": "ann@example.COM"}]}
    response = await client.post(f"{API}/bulk", json=repeated)
    assert response.status_code == 422 and "recipients.1 repeats recipients.0" in response.text
    assert await count(postroom, jobs_t) == 0
    # unicode and mixed-case addresses are normalized as email-validator does
    ok = {
        **base,
        "recipients": [
            {"email": "Zoë@Example.COM", "name": "Zoë"},
            {"email": "Bob@Example.COM", "metadata": {"k": "\\tab"}},
        ],
    }
    assert (await client.post(f"{API}/bulk", json=ok)).status_code == 202
    async with postroom.engine.connect() as conn:
        stored = (
            await conn.execute(
                select(
                    records_t.c.recipient_email, records_t.c.recipient_name, records_t.c.metadata
                ).order_by(records_t.c.recipient_email)
            )
        ).all()
    assert [tuple(r) for r in stored] == [
        ("Bob@example.com", None, {"k": "\\tab"}),
        ("Zoë@example.com", "Zoë", {}),
    ]


async def test_rows_streamed_in_chunks_keep_every_recipient_and_character(
    client: httpx.AsyncClient, postroom: Postroom, monkeypatch: Any
) -> None:
    from postroom.services import bulkcopy

    monkeypatch.setattr(bulkcopy, "CHUNK", 7)  # 23 recipients: four chunks, the last short
    names = [f'User {i} \\ "q" é' if i % 5 == 0 else f"User {i}" for i in range(23)]
    body = {
        "from": {"email": "news@example.com"},
        "subject": "Hi",
        "content": {"text": "Hello"},
        "metadata": {"k": "a\\b\tc"},
        "recipients": [
            {"email": f"user{i}@example.com", "name": name, "metadata": {"i": i}}
            for i, name in enumerate(names)
        ],
    }
    response = await client.post(f"{API}/bulk", json=body)
    assert response.status_code == 202, response.text
    query = select(records_t.c.recipient_email, records_t.c.recipient_name, records_t.c.metadata)
    async with postroom.engine.connect() as conn:
        rows = (await conn.execute(query.join(jobs_t, jobs_t.c.id == records_t.c.job_id))).all()
    got = {email: (name, metadata) for email, name, metadata in rows}
    assert got == {
        f"user{i}@example.com": (name, {"k": "a\\b\tc", "i": i}) for i, name in enumerate(names)
    }
