"""Forged, tampered, stale and replayed webhooks: refused with 401/403, nothing written."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from postroom.app import Postroom
from postroom.clock import ManualClock
from tests.support.providers import add_provider
from tests.tracking.conftest import API, record, row_counts, send_and_drain
from tests.tracking.signing import (
    MAILGUN_KEY,
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    SendGridKeys,
    basic,
    mailgun_body,
)

HOOK = f"{API}/webhook"
Request = tuple[str, bytes, dict[str, str]]


def _retimed(body: bytes, **changes: str) -> bytes:
    doc = json.loads(body)
    doc["signature"].update(changes)
    return json.dumps(doc).encode()


async def test_forged_requests_are_refused_and_write_nothing(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    sg = SendGridKeys()
    await add_provider(
        postroom,
        name="mg",
        type="mailgun",
        config={"domain": "mg.example.com"},
        authentication={"apiKey": "k", "webhookSigningKey": MAILGUN_KEY},
        enabled=False,
    )
    await add_provider(
        postroom,
        name="mg-unset",
        type="mailgun",
        config={"domain": "mg.example.com"},
        authentication={"apiKey": "k"},
        enabled=False,
    )
    await add_provider(
        postroom,
        name="sg",
        type="sendgrid",
        authentication={"apiKey": "k", "webhookPublicKey": sg.public_b64},
        enabled=False,
    )
    await add_provider(
        postroom,
        name="pm",
        type="postmark",
        authentication={
            "serverToken": "t",
            "webhookUser": POSTMARK_USER,
            "webhookPassword": POSTMARK_PASSWORD,
        },
        enabled=False,
    )
    (sent,) = await send_and_drain(client, postroom)
    now = int(clock.now().timestamp())
    bounce = {
        "event": "failed",
        "severity": "permanent",
        "id": "mg-1",
        "timestamp": now,
        "recipient": sent.recipient,
        "message": {"headers": {"message-id": sent.message_id.strip("<>")}},
        "delivery-status": {"code": 550, "description": "5.1.1 no such user"},
    }
    good_mg = mailgun_body(bounce, timestamp=now)
    sg_events = json.dumps(
        [
            {
                "email": sent.recipient,
                "event": "bounce",
                "timestamp": now,
                "sg_event_id": "e1",
                "sg_message_id": sent.message_id,
                "reason": "550 5.1.1 no such user",
            }
        ]
    ).encode()
    sg_headers = sg.headers(sg_events, now)
    other_key = ec.generate_private_key(ec.SECP256R1())
    pm_body = json.dumps(
        {
            "RecordType": "Bounce",
            "ID": 1,
            "Type": "HardBounce",
            "MessageID": sent.message_id,
            "Email": sent.recipient,
            "BouncedAt": "2026-11-30T12:00:00Z",
            "Details": "550 5.1.1",
        }
    ).encode()
    json_ct = {"content-type": "application/json"}

    def sg_with(**h: str) -> dict[str, str]:
        return {**sg_headers, **h}

    def b64sig(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
        return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()

    tampered_sig = json.loads(good_mg)["signature"]["signature"]
    tampered_sig = ("0" if tampered_sig[0] != "0" else "1") + tampered_sig[1:]
    forged: dict[str, Callable[[], Request]] = {
        "mailgun: signed with another key": lambda: (
            "mg",
            mailgun_body(bounce, timestamp=now, key="wrong-key"),
            json_ct,
        ),
        "mailgun: signature digit flipped": lambda: (
            "mg",
            _retimed(good_mg, signature=tampered_sig),
            json_ct,
        ),
        "mailgun: a signature that is not ASCII": lambda: (
            "mg",
            _retimed(good_mg, signature="\u00e9" * 64),
            json_ct,
        ),
        "mailgun: timestamp changed after signing": lambda: (
            "mg",
            _retimed(good_mg, timestamp=str(now + 1)),
            json_ct,
        ),
        "mailgun: token changed after signing": lambda: (
            "mg",
            _retimed(good_mg, token="f" * 50),
            json_ct,
        ),
        "mailgun: stale but well signed": lambda: (
            "mg",
            mailgun_body(bounce, timestamp=now - 3600),
            json_ct,
        ),
        "mailgun: from the future": lambda: (
            "mg",
            mailgun_body(bounce, timestamp=now + 3600),
            json_ct,
        ),
        "mailgun: no signature": lambda: (
            "mg",
            json.dumps({"event-data": bounce}).encode(),
            json_ct,
        ),
        "mailgun: signature without token": lambda: (
            "mg",
            json.dumps(
                {"signature": {"timestamp": str(now), "signature": "ab"}, "event-data": bounce}
            ).encode(),
            json_ct,
        ),
        "mailgun: not JSON": lambda: ("mg", b"timestamp=1&token=2&signature=3", {}),
        "mailgun: no signing key configured": lambda: ("mg-unset", good_mg, json_ct),
        "mailgun: SendGrid-signed body": lambda: ("mg", sg_events, sg_headers),
        "sendgrid: signed by another key": lambda: (
            "sg",
            sg_events,
            sg_with(
                **{
                    "X-Twilio-Email-Event-Webhook-Signature": b64sig(
                        other_key, str(now).encode() + sg_events
                    )
                }
            ),
        ),
        "sendgrid: body tampered": lambda: (
            "sg",
            sg_events.replace(b"bounce", b"delivered"),
            sg_headers,
        ),
        "sendgrid: timestamp header changed": lambda: (
            "sg",
            sg_events,
            sg_with(**{"X-Twilio-Email-Event-Webhook-Timestamp": str(now + 5)}),
        ),
        "sendgrid: no signature header": lambda: (
            "sg",
            sg_events,
            {"X-Twilio-Email-Event-Webhook-Timestamp": str(now)},
        ),
        "sendgrid: no timestamp header": lambda: (
            "sg",
            sg_events,
            {
                "X-Twilio-Email-Event-Webhook-Signature": sg_headers[
                    "X-Twilio-Email-Event-Webhook-Signature"
                ]
            },
        ),
        "sendgrid: signature not base64": lambda: (
            "sg",
            sg_events,
            sg_with(**{"X-Twilio-Email-Event-Webhook-Signature": "%%%"}),
        ),
        "sendgrid: stale but well signed": lambda: (
            "sg",
            sg_events,
            sg.headers(sg_events, now - 3600),
        ),
        "sendgrid: signature over the body alone": lambda: (
            "sg",
            sg_events,
            sg_with(**{"X-Twilio-Email-Event-Webhook-Signature": b64sig(sg.private, sg_events)}),
        ),
        "sendgrid: HMAC instead of ECDSA": lambda: (
            "sg",
            sg_events,
            sg_with(
                **{
                    "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(
                        hmac.new(b"k", sg_events, hashlib.sha256).digest()
                    ).decode()
                }
            ),
        ),
        "postmark: no credentials": lambda: ("pm", pm_body, json_ct),
        "postmark: wrong password": lambda: ("pm", pm_body, basic(POSTMARK_USER, "guess")),
        "postmark: wrong user": lambda: ("pm", pm_body, basic("admin", POSTMARK_PASSWORD)),
        "postmark: bearer instead of basic": lambda: (
            "pm",
            pm_body,
            {"authorization": f"Bearer {POSTMARK_PASSWORD}"},
        ),
        "postmark: malformed basic": lambda: ("pm", pm_body, {"authorization": "Basic !!!"}),
    }
    assert len(forged) >= 20
    baseline = await row_counts(postroom)
    for name, build in forged.items():
        provider, body, headers = build()
        response = await client.post(f"{HOOK}/{provider}", content=body, headers=headers)
        assert response.status_code in (401, 403), (name, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/problem+json"), name
        assert await row_counts(postroom) == baseline, name
    assert (await record(postroom, sent.record_id)).status == "sent"

    # replays: the genuine request is accepted once, its copy refused and writes nothing
    for provider, body, headers in (("mg", good_mg, json_ct), ("sg", sg_events, sg_headers)):
        assert (
            await client.post(f"{HOOK}/{provider}", content=body, headers=headers)
        ).status_code == 200
        after_first = await row_counts(postroom)
        replay = await client.post(f"{HOOK}/{provider}", content=body, headers=headers)
        assert replay.status_code == 403, (provider, replay.text)
        assert await row_counts(postroom) == after_first


@pytest.mark.parametrize("ident", ["nope", "00000000-0000-0000-0000-000000000000"])
async def test_unknown_provider_is_404(client: httpx.AsyncClient, ident: str) -> None:
    response = await client.post(f"{HOOK}/{ident}", content=b"[]")
    assert response.status_code == 404


async def test_a_provider_type_without_webhooks_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post(f"{HOOK}?provider=Development outbox", content=b"{}")
    assert response.status_code == 404
    assert "sends no webhooks" in response.json()["detail"]
