"""The webhooks page over plain HTTP: list and page, add (the secret once), enable and
disable, rotate, delete, the delivery log and redelivery, refusals, a viewer."""

from __future__ import annotations

import html
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.dashboard import webhooks
from postroom.errors import NotFound
from postroom.events.endpoints import deliveries_t, endpoints_t
from tests.dashboard.test_http import PASSWORD, csrf_of, sign_in
from tests.events.conftest import Receiver, dispatch, receiver
from tests.support.payloads import email

__all__ = ["receiver"]  # the fixture, used by name

ORIGIN = {"Origin": "https://dash.test"}
#: a public address, so the egress guard lets it through without a DNS lookup
PUBLIC = "https://93.184.216.34/postroom"


def _form(token: str, url: str = PUBLIC, **fields: str) -> dict[str, str]:
    return {"csrf_token": token, "url": url, "enabled": "on", **fields}


async def _stored_secret(postroom: Postroom, endpoint_id: str) -> str:
    from sqlalchemy import select

    async with postroom.engine.connect() as conn:
        sealed = (
            await conn.execute(
                select(endpoints_t.c.secret).where(endpoints_t.c.id == uuid.UUID(endpoint_id))
            )
        ).scalar_one()
    return postroom.fernet.decrypt(sealed.encode()).decode()


def _secret_in(page: str) -> str:
    return page.split('data-field="new-secret">')[1].split("<")[0]


async def test_an_endpoint_is_added_and_its_secret_shown_once(
    web: httpx.AsyncClient, postroom: Postroom
) -> None:
    await sign_in(web)
    empty = await web.get("/webhooks")
    assert empty.status_code == 200 and "No webhook endpoints yet" in empty.text
    assert 'href="/webhooks" aria-current="page"' in empty.text  # in the navigation
    token = await csrf_of(web, "/webhooks")
    form = _form(
        token,
        description="CRM sync",
        allowNetworks="10.0.0.0/8, 192.168.0.0/16",
        **{"type_email.bounced": "on", "type_email.sent": "on"},
    )
    added = await web.post("/webhooks", data=form, headers=ORIGIN)
    assert added.status_code == 200, added.text
    assert added.headers["cache-control"] == "no-store"
    secret = _secret_in(added.text)
    assert secret.startswith("whsec_") and "shown this once" in added.text
    [stored] = (await postroom.webhooks.list_page())["endpoints"]
    assert stored["url"] == PUBLIC and stored["description"] == "CRM sync"
    assert stored["eventTypes"] == ["email.bounced", "email.sent"] and stored["enabled"]
    assert stored["allowNetworks"] == ["10.0.0.0/8", "192.168.0.0/16"]
    assert await _stored_secret(postroom, stored["id"]) == secret
    listed = (await web.get("/webhooks")).text
    row = listed.split(f'data-endpoint="{stored["id"]}"')[1].split("</tr>")[0]
    assert PUBLIC in row and "email.bounced, email.sent" in row and "CRM sync" in row
    assert '"state">enabled<' in row and "none yet" in row
    detail = (await web.get(f"/webhooks/{stored['id']}")).text
    assert "10.0.0.0/8, 192.168.0.0/16" in detail
    assert secret not in listed and secret not in detail and "whsec_" not in detail
    every = await web.post("/webhooks", data={**_form(token), "events": "all"}, headers=ORIGIN)
    assert every.status_code == 200
    endpoints = (await postroom.webhooks.list_page())["endpoints"]
    assert sorted(len(e["eventTypes"]) for e in endpoints) == [0, 2]  # [] is every event


async def test_a_refused_endpoint_says_why_beside_the_field(
    web: httpx.AsyncClient, postroom: Postroom
) -> None:
    await sign_in(web)
    token = await csrf_of(web, "/webhooks")

    async def refused(form: dict[str, str], field: str) -> str:
        answer = await web.post("/webhooks", data=form, headers=ORIGIN)
        assert answer.status_code == 422, answer.text
        assert 'data-field="new-secret"' not in answer.text
        return html.unescape(answer.text.split(f'data-error-for="{field}">')[1].split("<")[0])

    sent = {"type_email.sent": "on"}
    assert "http:// or https:// URL" in await refused(_form(token, "not a url", **sent), "url")
    assert "loopback" in await refused(_form(token, "http://127.0.0.1:9/x", **sent), "url")
    assert "private" in await refused(_form(token, "https://10.1.2.3/x", **sent), "url")
    creds = await refused(_form(token, "https://u:p@93.184.216.34/x", **sent), "url")
    assert "credentials" in creds
    assert "tick at least one" in await refused(_form(token), "eventTypes")
    both = await refused({**_form(token, **sent), "events": "all"}, "eventTypes")
    assert "not both" in both
    assert "'some' is not 'all'" in await refused({**_form(token), "events": "some"}, "eventTypes")
    unknown = await refused(_form(token, **{"type_email.teleported": "on"}), "eventTypes")
    assert "'email.teleported'" in unknown
    networks = await refused(_form(token, allowNetworks="10.0.0.0/33", **sent), "allowNetworks")
    assert "10.0.0.0/33" in networks
    # the form comes back as it was sent
    again = await web.post(
        "/webhooks",
        data=_form(token, "http://127.0.0.1:9/x", description="kept", **sent),
        headers=ORIGIN,
    )
    assert 'value="http://127.0.0.1:9/x"' in again.text and 'value="kept"' in again.text
    assert 'name="type_email.sent" checked' in again.text
    assert 'aria-invalid="true" aria-describedby="wh-url-error"' in again.text
    assert (await postroom.webhooks.list_page())["endpoints"] == []
    # with its network allowed, the loopback receiver is accepted
    allowed = _form(token, "http://127.0.0.1:9/x", allowNetworks="127.0.0.0/8", **sent)
    assert (await web.post("/webhooks", data=allowed, headers=ORIGIN)).status_code == 200


async def test_disable_enable_rotate_and_delete(web: httpx.AsyncClient, postroom: Postroom) -> None:
    created = await postroom.webhooks.create(url=PUBLIC, event_types=["email.sent"])
    ident = created["id"]
    await sign_in(web)
    token = await csrf_of(web, f"/webhooks/{ident}")
    off = await web.post(f"/webhooks/{ident}/disable", data={"csrf_token": token}, headers=ORIGIN)
    assert off.status_code == 303 and off.headers["location"] == f"/webhooks/{ident}?done=disabled"
    assert not (await postroom.webhooks.get(uuid.UUID(ident)))["enabled"]
    page = (await web.get(off.headers["location"])).text
    assert '"state">disabled<' in page and "no events are recorded" in page
    assert f'action="/webhooks/{ident}/enable"' in page
    on = await web.post(f"/webhooks/{ident}/enable", data={"csrf_token": token}, headers=ORIGIN)
    assert on.status_code == 303 and (await postroom.webhooks.get(uuid.UUID(ident)))["enabled"]

    rotated = await web.post(
        f"/webhooks/{ident}/rotate", data={"csrf_token": token}, headers=ORIGIN
    )
    assert rotated.status_code == 200
    secret = _secret_in(rotated.text)
    assert secret != created["secret"] and secret.startswith("whsec_")
    assert await _stored_secret(postroom, ident) == secret
    assert secret not in (await web.get(f"/webhooks/{ident}")).text

    gone = await web.post(f"/webhooks/{ident}/delete", data={"csrf_token": token}, headers=ORIGIN)
    assert gone.status_code == 303
    assert "was deleted" in html.unescape((await web.get(gone.headers["location"])).text)
    with pytest.raises(NotFound):
        await postroom.webhooks.get(uuid.UUID(ident))
    missing = await web.get(f"/webhooks/{ident}")
    assert missing.status_code == 404 and "no webhook endpoint" in missing.text
    again = await web.post(f"/webhooks/{ident}/delete", data={"csrf_token": token}, headers=ORIGIN)
    assert again.status_code == 404


async def test_endpoints_page_through_oldest_first(
    web: httpx.AsyncClient,
    postroom: Postroom,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webhooks, "PAGE_SIZE", 2)
    for n in range(3):
        await postroom.webhooks.create(url=f"{PUBLIC}/{n}")
        clock.advance(1)
    await sign_in(web)
    first = (await web.get("/webhooks")).text
    assert first.count("data-endpoint=") == 2 and f"{PUBLIC}/0" in first
    next_link = html.unescape(first.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0])
    second = (await web.get("/webhooks" + next_link)).text
    assert second.count("data-endpoint=") == 1 and f"{PUBLIC}/2" in second
    assert 'rel="first"' in second and 'rel="next"' not in second
    bad = await web.get("/webhooks?cursor=nonsense")
    assert bad.status_code == 422 and "not a cursor" in bad.text


async def test_the_delivery_log_shows_each_attempt_and_redelivers(
    web: httpx.AsyncClient,
    postroom: Postroom,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created = await postroom.webhooks.create(
        url=receiver.url, event_types=["email.queued"], allow_networks=["127.0.0.0/8"]
    )
    ident = created["id"]
    await sign_in(web)
    empty = (await web.get(f"/webhooks/{ident}")).text
    assert "No events were sent to this endpoint yet" in empty
    receiver.script(500, body=b"busy")
    await postroom.send(email())
    await postroom.send(email())
    assert await dispatch(postroom) == 2
    log = (await postroom.webhooks.deliveries(uuid.UUID(ident)))["deliveries"]
    assert sorted(d["status"] for d in log) == ["delivered", "pending"]
    page = (await web.get(f"/webhooks/{ident}")).text
    for d in log:
        block = page.split(f'data-delivery="{d["id"]}"')[1].split("</tbody>")[0]
        assert "email.queued" in block and f'<span class="badge">{d["status"]}</span>' in block
        attempt = block.split('data-attempt="1"')[1]
        code = d["attemptLog"][0]["statusCode"]
        assert f'data-field="code">{code}<' in attempt
        assert 'data-field="latency">' in attempt and " ms<" in attempt
    assert "HTTP 500: busy" in page
    newest = max(log, key=lambda d: (d["createdAt"], d["id"]))
    listed = (await web.get("/webhooks")).text
    latest = listed.split(f'data-endpoint="{ident}"')[1].split('"latest">')[1].split("</td>")[0]
    assert f'<span class="badge">{newest["status"]}</span> {newest["lastStatusCode"]}' in latest

    pending = await web.get(f"/webhooks/{ident}?status=pending")
    assert pending.text.count("data-delivery=") == 1
    assert (await web.get(f"/webhooks/{ident}?status=bogus")).status_code == 422
    monkeypatch.setattr(webhooks, "PAGE_SIZE", 1)
    first = (await web.get(f"/webhooks/{ident}")).text
    assert first.count("data-delivery=") == 1 and 'rel="next"' in first
    next_link = html.unescape(first.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0])
    second = (await web.get(f"/webhooks/{ident}{next_link}")).text
    assert second.count("data-delivery=") == 1 and 'rel="next"' not in second
    monkeypatch.undo()

    [delivered] = [d for d in log if d["status"] == "delivered"]
    token = await csrf_of(web, f"/webhooks/{ident}")
    again = await web.post(
        f"/webhooks/{ident}/deliveries/{delivered['id']}/redeliver",
        data={"csrf_token": token},
        headers=ORIGIN,
    )
    assert again.status_code == 303
    assert "queued to be sent again" in (await web.get(again.headers["location"])).text
    queued = await postroom.webhooks.delivery(uuid.UUID(ident), uuid.UUID(delivered["id"]))
    assert queued["status"] == "pending"
    sent_before = len(receiver.requests)
    assert await dispatch(postroom) >= 1
    redelivered = await postroom.webhooks.delivery(uuid.UUID(ident), uuid.UUID(delivered["id"]))
    assert redelivered["status"] == "delivered" and redelivered["attempts"] == 2
    assert len(receiver.requests) > sent_before
    async with postroom.engine.begin() as conn:  # a dispatcher is sending it right now
        await conn.execute(
            update(deliveries_t)
            .where(deliveries_t.c.id == uuid.UUID(delivered["id"]))
            .values(status="delivering")
        )
    busy = await web.post(
        f"/webhooks/{ident}/deliveries/{delivered['id']}/redeliver",
        data={"csrf_token": token},
        headers=ORIGIN,
    )
    assert busy.status_code == 409 and "being sent now" in busy.text
    block = busy.text.split(f'data-delivery="{delivered["id"]}"')[1].split("</tbody>")[0]
    assert "Redeliver" not in block  # no button while it is being sent
    stranger = await web.post(
        f"/webhooks/{ident}/deliveries/{uuid.uuid4()}/redeliver",
        data={"csrf_token": token},
        headers=ORIGIN,
    )
    assert stranger.status_code == 404


async def test_a_viewer_reads_but_never_changes_or_sees_a_secret(
    web: httpx.AsyncClient, postroom: Postroom
) -> None:
    created = await postroom.webhooks.create(url=PUBLIC, event_types=["email.sent"])
    ident = created["id"]
    await postroom.users.create("vic", PASSWORD, "viewer")
    login = await web.get("/login")
    await web.post(
        "/login",
        data={
            "csrf_token": login.cookies["postroom_login_csrf"],
            "name": "vic",
            "password": PASSWORD,
            "next": "/",
        },
        headers=ORIGIN,
    )
    listed = await web.get("/webhooks")
    assert listed.status_code == 200 and PUBLIC in listed.text
    assert 'action="/webhooks"' not in listed.text  # no form to add one
    detail = await web.get(f"/webhooks/{ident}")
    assert detail.status_code == 200 and "Delivery log" in detail.text
    assert "Rotate" not in detail.text and "Delete" not in detail.text
    assert 'method="post" action="/webhooks/' not in detail.text
    token = await csrf_of(web, "/webhooks")
    posts: list[tuple[str, dict[str, Any]]] = [
        ("/webhooks", _form(token, **{"type_email.sent": "on"})),
        (f"/webhooks/{ident}/disable", {"csrf_token": token}),
        (f"/webhooks/{ident}/rotate", {"csrf_token": token}),
        (f"/webhooks/{ident}/delete", {"csrf_token": token}),
        (f"/webhooks/{ident}/deliveries/{uuid.uuid4()}/redeliver", {"csrf_token": token}),
    ]
    for path, form in posts:
        answer = await web.post(path, data=form, headers=ORIGIN)
        assert answer.status_code == 403, path
        assert "whsec_" not in answer.text
    assert (await postroom.webhooks.get(uuid.UUID(ident)))["enabled"]
    assert await _stored_secret(postroom, ident) == created["secret"]
    assert len((await postroom.webhooks.list_page())["endpoints"]) == 1


async def test_a_post_without_the_csrf_token_changes_nothing(
    web: httpx.AsyncClient, postroom: Postroom
) -> None:
    created = await postroom.webhooks.create(url=PUBLIC)
    ident = created["id"]
    await sign_in(web)
    token = await csrf_of(web, "/webhooks")
    forged = await web.post(
        "/webhooks", data=_form("forged", **{"type_email.sent": "on"}), headers=ORIGIN
    )
    assert forged.status_code == 403 and "reload the page" in forged.text
    missing = await web.post(f"/webhooks/{ident}/delete", data={}, headers=ORIGIN)
    assert missing.status_code == 403
    not_ascii = await web.post(
        f"/webhooks/{ident}/delete", data={"csrf_token": "\u00e9" * 8}, headers=ORIGIN
    )
    assert not_ascii.status_code == 403
    elsewhere = await web.post(
        f"/webhooks/{ident}/rotate",
        data={"csrf_token": token},
        headers={"Origin": "https://evil.test"},
    )
    assert elsewhere.status_code == 403 and "whsec_" not in elsewhere.text
    assert len((await postroom.webhooks.list_page())["endpoints"]) == 1
    assert await _stored_secret(postroom, ident) == created["secret"]
