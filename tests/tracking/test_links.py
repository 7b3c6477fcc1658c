"""Open pixel, click redirect and one-click unsubscribe, end to end through the outbox."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.tracking.tokens import BadToken, Signer
from tests.tracking.conftest import API, Sent, row_counts, send_and_drain

HTML = (
    "<html><body><p>Hi</p>"
    '<a href="https://shop.example.com/a?x=1&amp;y=2">shop</a> '
    "<a href='mailto:help@example.com'>mail us</a> "
    '<a href="#top">top</a> '
    '<a href="https://example.com/unsubscribe?u=1">unsubscribe</a> '
    '<a data-postroom-notrack href="https://example.com/private">private</a>'
    "</body></html>"
)
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Thunderbird/133.0"


def message(tmp_path: Path, sent: Sent) -> EmailMessage:
    eml = tmp_path / "var" / "outbox" / f"{sent.email_id}.eml"
    return email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)  # type: ignore[return-value]


def html_of(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


def local(url: str) -> str:
    """A public link as a path for the in-process client."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def tracked(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path, **kw: Any
) -> tuple[Sent, str]:
    (sent,) = await send_and_drain(
        client,
        postroom,
        content={"text": "Hi", "html": HTML},
        trackOpens=True,
        trackClicks=True,
        **kw,
    )
    return sent, html_of(message(tmp_path, sent))


async def test_open_and_click_through_the_rewritten_message(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path, clock: ManualClock
) -> None:
    sent, html = await tracked(client, postroom, tmp_path)
    hrefs = re.findall(r"""href=["']([^"']*)["']""", html)
    assert hrefs[0].startswith("http://127.0.0.1:8025/t/c/")
    # left alone: mailto, anchors, unsubscribe links, opted-out links
    assert hrefs[1:] == [
        "mailto:help@example.com",
        "#top",
        "https://example.com/unsubscribe?u=1",
        "https://example.com/private",
    ]
    (pixel,) = re.findall(r'<img src="([^"]+)"', html)
    assert html.index(pixel) < html.index("</body>")

    clock.advance(120)  # a person reads it later
    opened = await client.get(local(pixel), headers={"user-agent": BROWSER})
    assert opened.status_code == 200 and opened.headers["content-type"] == "image/gif"
    clock.advance(30)
    clicked = await client.get(
        local(hrefs[0].replace("&amp;", "&")), headers={"user-agent": BROWSER}
    )
    assert clicked.status_code == 302
    assert clicked.headers["location"] == "https://shop.example.com/a?x=1&y=2"

    body = (await client.get(f"{API}/tracking/{sent.record_id}")).json()
    assert body["status"] == "clicked"
    assert [e["type"] for e in body["events"]] == ["opened", "clicked"]
    assert body["events"][1]["data"]["url"] == "https://shop.example.com/a?x=1&y=2"
    assert body["summary"]["clickedHuman"] == 1 and body["summary"]["openedHuman"] == 1


async def test_tampered_forged_and_expired_tokens_record_nothing_and_never_redirect(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path, clock: ManualClock
) -> None:
    sent, html = await tracked(client, postroom, tmp_path)
    click = local(re.findall(r'href="([^"]*)"', html)[0].replace("&amp;", "&"))
    kid, body, mac = click.removeprefix("/t/c/").split(".")
    forger = Signer([(kid, b"not-the-real-key-at-all")])
    evil = forger.sign(
        "c",
        {"e": sent.email_id, "r": sent.recipient, "u": "https://evil.example"},
        expires=clock.now() + timedelta(days=1),
    )
    before = await row_counts(postroom)
    for path in (
        f"/t/c/{kid}.{body}.{mac[:-2]}AA",  # signature changed
        f"/t/c/{kid}.{body[:-4]}AAAA.{mac}",  # payload changed
        f"/t/c/zz.{body}.{mac}",  # unknown key id
        f"/t/c/{evil}",  # another host, signed with a guessed key
        f"/t/o/{kid}.{body}.{mac}.gif",  # a click token used as a pixel
        f"/t/u/{kid}.{body}.{mac}",  # ... or as an unsubscribe
        "/t/c/garbage",
        f"/t/c/{kid}.{body}.{mac[:-2]}%C3%A9",  # a signature that is not ASCII
        f"/t/o/{kid}.{body}.%C3%A9%C3%A9.gif",
        f"/t/u/{kid}.%C3%A9.{mac}",  # ... a payload that is not
        "/t/c/%C3%A9.x.y",  # ... a key id that is not
    ):
        response = await client.get(path)
        assert response.status_code in (400, 404), path
        assert "location" not in response.headers
    assert await row_counts(postroom) == before

    clock.advance(timedelta(days=401).total_seconds())
    expired = await client.get(click)
    assert expired.status_code == 404 and "location" not in expired.headers
    assert "expired" in expired.json()["detail"]


def test_rotated_keys_still_verify_and_removed_ones_do_not() -> None:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    old = Signer([("k1", b"old-secret-0123456789")])
    token = old.sign("c", {"u": "https://a.example"}, expires=now + timedelta(days=1))
    rotated = Signer([("k2", b"new-secret-0123456789"), ("k1", b"old-secret-0123456789")])
    assert rotated.verify(token, "c", now=now)["u"] == "https://a.example"
    assert rotated.sign("c", {}, expires=now + timedelta(days=1)).startswith("k2.")
    with pytest.raises(BadToken):
        Signer([("k2", b"new-secret-0123456789")]).verify(token, "c", now=now)


async def test_machine_opens_and_scanner_clicks_are_flagged(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path, clock: ManualClock
) -> None:
    sent, html = await tracked(client, postroom, tmp_path)
    (pixel,) = re.findall(r'<img src="([^"]+)"', html)
    click = local(re.findall(r'href="([^"]*)"', html)[0].replace("&amp;", "&"))
    # a scanner follows the link the moment the message arrives
    assert (await client.head(click, headers={"user-agent": BROWSER})).status_code == 302
    clock.advance(1)
    assert (await client.get(click, headers={"user-agent": BROWSER})).status_code == 302
    clock.advance(300)
    await client.get(
        local(pixel), headers={"user-agent": "Mozilla/5.0 (via ggpht.com GoogleImageProxy)"}
    )
    clock.advance(1)
    await client.get(click, headers={"user-agent": "Mozilla/5.0 (compatible; Barracuda Sentinel)"})

    body = (await client.get(f"{API}/tracking/{sent.record_id}")).json()
    reasons = [e["data"].get("machine") for e in body["events"]]
    assert reasons == ["head-request", "on-delivery", "privacy-proxy", "scanner-agent"]
    assert body["summary"]["clickedTotal"] == 3 and body["summary"]["clickedHuman"] == 0
    assert body["status"] == "sent"  # no person has opened or clicked


async def test_marketing_mail_has_one_click_unsubscribe_which_works_twice(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path
) -> None:
    (sent,) = await send_and_drain(client, postroom, type="marketing")
    msg = message(tmp_path, sent)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    (url,) = re.findall(r"<(https?://[^>]+)>", str(msg["List-Unsubscribe"]))

    page = await client.get(local(url))
    assert page.status_code == 200 and '<form method="post"' in page.text
    assert (await client.get(f"{API}/suppressions")).json()[
        "suppressions"
    ] == []  # GET changes nothing

    for _ in range(2):
        response = await client.post(
            local(url),
            content="List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 200, response.text
    listed = (await client.get(f"{API}/suppressions")).json()["suppressions"]
    assert [(s["email"], s["scope"], s["reason"]) for s in listed] == [
        ("ann@example.com", "marketing", "unsubscribe")
    ]
    body = (await client.get(f"{API}/tracking/{sent.record_id}")).json()
    assert [e["type"] for e in body["events"]] == ["unsubscribed"]
    # marketing only: a receipt still goes, the next newsletter does not
    assert (await client.post(f"{API}/send", json=_body("transactional"))).json()[
        "status"
    ] == "queued"
    assert (await client.post(f"{API}/send", json=_body("marketing"))).json()[
        "status"
    ] == "suppressed"


async def test_transactional_mail_and_a_user_list_unsubscribe_get_no_postroom_headers(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path
) -> None:
    (receipt,) = await send_and_drain(client, postroom)
    assert message(tmp_path, receipt)["List-Unsubscribe"] is None
    (own,) = await send_and_drain(
        client, postroom, type="marketing", headers={"List-Unsubscribe": "<mailto:off@example.com>"}
    )
    msg = message(tmp_path, own)
    assert msg["List-Unsubscribe"] == "<mailto:off@example.com>"
    assert msg["List-Unsubscribe-Post"] is None


async def test_tracking_defaults_per_type_and_explicit_false(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path
) -> None:
    content = {"text": "Hi", "html": HTML}
    (news,) = await send_and_drain(client, postroom, type="marketing", content=content)
    assert "/t/c/" in html_of(message(tmp_path, news)) and "/t/o/" in html_of(
        message(tmp_path, news)
    )
    (receipt,) = await send_and_drain(client, postroom, content=content)
    assert "/t/" not in html_of(message(tmp_path, receipt))
    (off,) = await send_and_drain(
        client, postroom, type="marketing", content=content, trackOpens=False, trackClicks=False
    )
    assert "/t/c/" not in html_of(message(tmp_path, off)) and "/t/o/" not in html_of(
        message(tmp_path, off)
    )


def _body(kind: str) -> dict[str, object]:
    return {
        "to": [{"email": "ann@example.com"}],
        "from": {"email": "app@example.com"},
        "subject": "Hi",
        "content": {"text": "Hi"},
        "type": kind,
    }
