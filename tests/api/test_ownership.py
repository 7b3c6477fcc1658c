"""Who may read an email's status: a ``send`` key its own mail, ``read`` every email."""

from __future__ import annotations

import httpx

from postroom.app import Postroom
from tests.support.payloads import email as email_body

SEND = "/api/system/email/send"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def status_url(ident: str) -> str:
    return f"/api/system/email/status/{ident}"


async def test_a_send_key_reads_only_its_own_mail(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    alice, _ = await postroom.keys.create("alice", ["send"])
    bob, _ = await postroom.keys.create("bob", ["send"])
    mine = (await client.post(SEND, json=email_body(), headers=auth(alice))).json()
    theirs = (await client.post(SEND, json=email_body(), headers=auth(bob))).json()
    local = await postroom.send(email_body())  # the facade: no API key

    own = await client.get(status_url(mine["id"]), headers=auth(alice))
    assert own.status_code == 200
    assert own.json()["recipients"][0]["email"] == "ann@example.com"
    for other in (theirs["id"], local.id):
        response = await client.get(status_url(other), headers=auth(alice))
        assert response.status_code == 404, response.text
        assert "ann@example.com" not in response.text
    # by a recipient record's id too
    record_id = own.json()["recipients"][0]["id"]
    assert (await client.get(status_url(record_id), headers=auth(alice))).status_code == 200
    assert (await client.get(status_url(record_id), headers=auth(bob))).status_code == 404


async def test_read_and_admin_keys_see_every_email(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    sender, _ = await postroom.keys.create("sender", ["send"])
    reader, _ = await postroom.keys.create("reader", ["read"])
    sent = (await client.post(SEND, json=email_body(), headers=auth(sender))).json()
    local = await postroom.send(email_body())

    for ident in (sent["id"], local.id):
        assert (await client.get(status_url(ident), headers=auth(reader))).status_code == 200
        assert (await client.get(status_url(ident))).status_code == 200  # admin
        assert (await postroom.status(ident)).id == ident  # the facade sees all


async def test_a_manage_only_key_reads_status_too(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    manager, _ = await postroom.keys.create("ops", ["manage"])
    local = await postroom.send(email_body())
    assert (await client.get(status_url(local.id), headers=auth(manager))).status_code == 200
