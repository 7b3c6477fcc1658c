"""Amazon SES through SNS: signature v1 and v2 with a self-made certificate,
subscription confirmation, and forged, foreign and replayed messages refused."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.tracking.webhooks import ses
from tests.support.providers import add_provider
from tests.tracking.conftest import API, Sent, record, row_counts, send_and_drain

TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-events"
CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem"
HOOK = f"{API}/webhook/ses"


def _key_and_cert() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


KEY, CERT = _key_and_cert()
OTHER_KEY, _ = _key_and_cert()


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    urls: list[str] = []

    async def fake_fetch(url: str) -> bytes:
        urls.append(url)
        return CERT if url.endswith(".pem") else b"<ConfirmSubscriptionResponse/>"

    monkeypatch.setattr(ses, "fetch", fake_fetch)
    ses._certs.clear()
    yield urls
    ses._certs.clear()


def signed(doc: dict[str, Any], *, version: str = "1", key: rsa.RSAPrivateKey = KEY) -> bytes:
    doc = {
        **doc,
        "SignatureVersion": version,
        "SigningCertURL": doc.get("SigningCertURL", CERT_URL),
    }
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(ses.string_to_sign(doc), padding.PKCS1v15(), algorithm)
    return json.dumps({**doc, "Signature": base64.b64encode(signature).decode()}).encode()


def notification(
    sent: Sent, clock: ManualClock, ses_event: dict[str, Any], n: int = 1
) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": f"sns-{n}",
        "TopicArn": TOPIC,
        "Message": json.dumps(ses_event),
        "Timestamp": clock.now().isoformat().replace("+00:00", "Z"),
    }


def bounce(sent: Sent) -> dict[str, Any]:
    return {
        "eventType": "Bounce",
        "mail": {"messageId": sent.message_id, "destination": [sent.recipient]},
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "feedbackId": "fb-1",
            "timestamp": "2026-11-30T12:00:00.000Z",
            "bouncedRecipients": [
                {
                    "emailAddress": sent.recipient,
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
        },
    }


@pytest.fixture
async def provider(postroom: Postroom) -> None:
    await add_provider(
        postroom,
        name="ses",
        type="ses",
        config={"region": "us-east-1"},
        authentication={"accessKeyId": "AKIA", "secretAccessKey": "s", "webhookTopicArn": TOPIC},
        enabled=False,
    )


@pytest.mark.usefixtures("provider")
async def test_subscription_is_confirmed_through_the_fetcher(
    client: httpx.AsyncClient, clock: ManualClock, fetched: list[str]
) -> None:
    subscribe = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=t"
    body = signed(
        {
            "Type": "SubscriptionConfirmation",
            "MessageId": "sub-1",
            "Token": "t",
            "TopicArn": TOPIC,
            "Message": "You have chosen to subscribe",
            "SubscribeURL": subscribe,
            "Timestamp": clock.now().isoformat().replace("+00:00", "Z"),
        }
    )
    response = await client.post(HOOK, content=body, headers={"content-type": "text/plain"})
    assert response.status_code == 200, response.text
    assert response.json()["note"] == "subscription confirmed"
    assert fetched == [CERT_URL, subscribe]


@pytest.mark.usefixtures("provider")
@pytest.mark.parametrize("version", ["1", "2"])
async def test_signed_bounce_and_delivery_are_applied(
    client: httpx.AsyncClient,
    postroom: Postroom,
    clock: ManualClock,
    fetched: list[str],
    version: str,
) -> None:
    (sent,) = await send_and_drain(client, postroom)
    delivery = {
        "eventType": "Delivery",
        "mail": {"messageId": sent.message_id},
        "delivery": {"timestamp": "2026-11-30T11:59:00.000Z", "recipients": [sent.recipient]},
    }
    for n, event in enumerate((delivery, bounce(sent))):
        body = signed(notification(sent, clock, event, n), version=version)
        response = await client.post(HOOK, content=body, headers={"content-type": "text/plain"})
        assert response.status_code == 200, response.text
    assert (await record(postroom, sent.record_id)).status == "bounced"
    listed = (await client.get(f"{API}/suppressions")).json()["suppressions"]
    assert [s["reason"] for s in listed] == ["hard-bounce"]


@pytest.mark.usefixtures("provider")
async def test_forged_foreign_stale_and_replayed_sns_messages_are_refused(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock, fetched: list[str]
) -> None:
    (sent,) = await send_and_drain(client, postroom)
    good = notification(sent, clock, bounce(sent))
    cases = {
        "certificate on another host": signed(
            {**good, "SigningCertURL": "https://evil.example/c.pem"}
        ),
        "certificate over http": signed(
            {**good, "SigningCertURL": CERT_URL.replace("https", "http")}
        ),
        "look-alike host": signed(
            {**good, "SigningCertURL": "https://sns.us-east-1.amazonaws.com.evil.example/c.pem"}
        ),
        "signed by another key": signed(good, key=OTHER_KEY),
        "message changed after signing": json.loads(signed(good)) | {"Message": "{}"},
        "another topic": signed({**good, "TopicArn": "arn:aws:sns:us-east-1:999999999999:mine"}),
        "an hour and more old": signed({**good, "Timestamp": "2026-01-01T00:00:00Z"}),
        "unknown signature version": signed(good).replace(
            b'"SignatureVersion": "1"', b'"SignatureVersion": "3"'
        ),
    }
    baseline = await row_counts(postroom)
    for name, body in cases.items():
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        response = await client.post(HOOK, content=raw, headers={"content-type": "text/plain"})
        assert response.status_code in (401, 403), (name, response.text)
        assert await row_counts(postroom) == baseline, name
    assert all(url == CERT_URL for url in fetched)  # never fetched from elsewhere

    body = signed(good)
    assert (await client.post(HOOK, content=body)).status_code == 200
    after = await row_counts(postroom)
    assert (await client.post(HOOK, content=body)).status_code == 403
    assert await row_counts(postroom) == after
