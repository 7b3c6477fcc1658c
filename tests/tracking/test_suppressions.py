"""Suppressions: the API, CSV, and the send path skipping suppressed recipients."""

from __future__ import annotations

from pathlib import Path

import httpx

from postroom.app import Postroom
from tests.tracking.conftest import API, send_and_drain

SUP = f"{API}/suppressions"


async def test_add_list_search_page_and_remove(client: httpx.AsyncClient) -> None:
    for name in ("ann", "bob", "cat", "dan", "eve"):
        response = await client.post(SUP, json={"email": f"{name}@Example.com"})
        assert response.status_code == 201, response.text
    again = await client.post(SUP, json={"email": "ann@example.com"})
    assert again.status_code == 200 and again.json()["added"] is False
    await client.post(SUP, json={"email": "ann@example.com", "scope": "marketing"})

    first = (await client.get(SUP, params={"limit": 2})).json()
    assert [s["email"] for s in first["suppressions"]] == ["ann@example.com"] * 2
    seen = [s["email"] for s in first["suppressions"]]
    cursor = first["nextCursor"]
    while cursor:
        page = (await client.get(SUP, params={"limit": 2, "cursor": cursor})).json()
        seen += [s["email"] for s in page["suppressions"]]
        cursor = page["nextCursor"]
    assert seen == ["ann@example.com"] * 2 + [
        f"{n}@example.com" for n in ("bob", "cat", "dan", "eve")
    ]

    found = (await client.get(SUP, params={"search": "DAN"})).json()["suppressions"]
    assert [s["email"] for s in found] == ["dan@example.com"]
    assert found[0]["reason"] == "manual" and found[0]["scope"] == "global"

    assert (await client.delete(f"{SUP}/ann@example.com", params={"scope": "marketing"})).json()[
        "removed"
    ] == 1
    assert (await client.delete(f"{SUP}/ann@example.com")).status_code == 200
    assert (await client.delete(f"{SUP}/ann@example.com")).status_code == 404


async def test_bad_input_is_a_clear_error_and_adds_nothing(client: httpx.AsyncClient) -> None:
    for body in (
        {"email": "not-an-address"},
        {"email": "a@example.com", "scope": "everything"},
        {"email": "a@example.com", "reason": "because"},
        {"email": "a@example.com", "colour": "red"},
        {},
    ):
        response = await client.post(SUP, json=body)
        assert response.status_code == 422, body
        assert response.headers["content-type"].startswith("application/problem+json")
    assert (await client.get(f"{SUP}?cursor=%%%")).status_code == 422
    assert (await client.get(SUP)).json()["suppressions"] == []


async def test_csv_round_trip_and_a_bad_row_adds_nothing(client: httpx.AsyncClient) -> None:
    good = (
        "email,scope,reason\nann@example.com,global,manual\nbob@example.com,marketing,unsubscribe\n"
    )
    response = await client.post(
        f"{SUP}/import", content=good, headers={"content-type": "text/csv"}
    )
    assert response.json() == {"rows": 2, "added": 2}
    bad = "email,scope\ncat@example.com,global\nnope,global\n"
    response = await client.post(f"{SUP}/import", content=bad, headers={"content-type": "text/csv"})
    assert response.status_code == 422 and "line 3" in response.json()["detail"]

    exported = (await client.get(f"{SUP}/export")).text.splitlines()
    assert exported[0] == "email,scope,reason,createdAt,expiresAt"
    assert [line.split(",")[:3] for line in exported[1:]] == [
        ["ann@example.com", "global", "manual"],
        ["bob@example.com", "marketing", "unsubscribe"],
    ]


async def test_a_suppressed_recipient_is_skipped_while_the_others_go(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path
) -> None:
    await client.post(SUP, json={"email": "bob@example.com", "reason": "hard-bounce"})
    recs = await send_and_drain(
        client,
        postroom,
        to=[{"email": "ann@example.com"}, {"email": "Bob@example.com", "type": "cc"}],
    )

    status = (await client.get(f"{API}/status/{recs[0].email_id}")).json()
    by_email = {r["email"]: r for r in status["recipients"]}
    assert by_email["ann@example.com"]["status"] == "sent"
    assert by_email["Bob@example.com"]["status"] == "suppressed"
    assert by_email["Bob@example.com"]["suppressed"] == "hard-bounce"
    eml = (tmp_path / "var" / "outbox" / f"{recs[0].email_id}.eml").read_text()
    assert "ann@example.com" in eml and "bob@example.com" not in eml.lower()


async def test_all_suppressed_is_not_sent_and_says_so(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path
) -> None:
    await client.post(SUP, json={"email": "ann@example.com"})
    response = await client.post(f"{API}/send", json={**_body(), "type": "transactional"})
    assert response.json()["status"] == "suppressed"
    worker = postroom.worker()
    assert await worker.drain() == 0
    await worker.aclose()
    status = (await client.get(f"{API}/status/{response.json()['id']}")).json()
    assert status["status"] == "suppressed"
    assert not (tmp_path / "var" / "outbox" / f"{response.json()['id']}.eml").exists()


async def test_marketing_scope_stops_only_marketing_mail(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await client.post(SUP, json={"email": "ann@example.com", "scope": "marketing"})
    marketing = (await client.post(f"{API}/send", json={**_body(), "type": "marketing"})).json()
    receipt = (await client.post(f"{API}/send", json={**_body(), "type": "transactional"})).json()
    assert marketing["status"] == "suppressed"
    assert receipt["status"] == "queued"


async def test_an_expired_suppression_no_longer_applies(client: httpx.AsyncClient) -> None:
    await client.post(SUP, json={"email": "ann@example.com", "expiresAt": "2000-01-01T00:00:00Z"})
    assert (await client.post(f"{API}/send", json=_body())).json()["status"] == "queued"


def _body() -> dict[str, object]:
    return {
        "to": [{"email": "ann@example.com"}],
        "from": {"email": "app@example.com"},
        "subject": "Hi",
        "content": {"text": "Hi"},
    }
