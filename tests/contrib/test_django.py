"""The Django email backend, configured as a Django project would, against a running Postroom."""

from __future__ import annotations

import email
import email.policy
import time
from collections.abc import Iterator
from email.message import EmailMessage as ParsedMessage
from pathlib import Path
from typing import cast

import django
import pytest
from django.conf import settings as django_settings
from django.core import mail
from django.core.exceptions import ImproperlyConfigured
from django.test.utils import override_settings
from sqlalchemy import Table, func, select

from postroom.app import Postroom
from postroom.client import ApiError, PostroomClient
from postroom.config import Settings
from postroom.db.models import EmailJob
from tests.support.processes import env_for, serving

BACKEND = "postroom.contrib.django.EmailBackend"
jobs_t = cast(Table, EmailJob.__table__)

if not django_settings.configured:
    django_settings.configure(
        EMAIL_BACKEND=BACKEND, DEFAULT_FROM_EMAIL="App <app@example.com>", USE_TZ=True
    )
    django.setup()


@pytest.fixture
def running(postroom: Postroom, settings: Settings) -> Iterator[str]:
    """``postroom serve`` on the test database: the API and a worker to the dev outbox."""
    env = env_for(settings.data_dir, settings.effective_database_url)
    with serving(env) as (base, _proc):
        yield base


def wait_sent(client: PostroomClient, email_id: str) -> None:
    deadline = time.monotonic() + 30
    while client.status(email_id).status != "sent":
        assert time.monotonic() < deadline, client.status(email_id)
        time.sleep(0.05)


def outbox(settings: Settings) -> list[ParsedMessage]:
    return [
        cast(ParsedMessage, email.message_from_bytes(p.read_bytes(), policy=email.policy.default))
        for p in sorted(settings.outbox_dir.glob("*.eml"))
    ]


async def test_multi_alternatives_with_attachment_through_a_running_postroom(
    postroom: Postroom, settings: Settings, running: str
) -> None:
    key, _ = await postroom.keys.create("django", ["send"])
    message = mail.EmailMultiAlternatives(
        subject="Your invoice",
        body="Plain text body",
        to=["Ann <ann@example.com>"],
        cc=["bob@example.com"],
        bcc=["eve@example.com"],
        reply_to=["help@example.com"],
        headers={"X-Order": "1234"},
    )
    message.attach_alternative("<p>HTML body</p>", "text/html")
    message.attach("invoice.pdf", b"%PDF-1.4 fake", "application/pdf")
    with override_settings(POSTROOM={"URL": running, "API_KEY": key}):
        assert message.send() == 1
        assert mail.send_mail("Second", "Hi", None, ["zed@example.com"]) == 1

    with PostroomClient(running, key) as client:
        job_ids = [str(row) for row in await _job_ids(postroom)]
        assert len(job_ids) == 2
        for email_id in job_ids:
            wait_sent(client, email_id)
        statuses = [client.status(i) for i in job_ids]
    invoice = next(s for s in statuses if s.subject == "Your invoice")
    assert sorted((r.email, r.type) for r in invoice.recipients) == [
        ("ann@example.com", "to"),
        ("bob@example.com", "cc"),
        ("eve@example.com", "bcc"),
    ]
    sent = next(m for m in outbox(settings) if m["Subject"] == "Your invoice")
    assert sent["From"] == "App <app@example.com>"
    assert sent["Reply-To"] == "help@example.com" and sent["X-Order"] == "1234"
    assert "Bcc" not in sent
    assert sent.get_body(("plain",)).get_content().strip() == "Plain text body"  # type: ignore[union-attr]
    assert sent.get_body(("html",)).get_content().strip() == "<p>HTML body</p>"  # type: ignore[union-attr]
    [attachment] = list(sent.iter_attachments())
    assert attachment.get_filename() == "invoice.pdf"
    assert attachment.get_content() == b"%PDF-1.4 fake"


async def _job_ids(postroom: Postroom) -> list[object]:
    async with postroom.engine.connect() as conn:
        return list(
            (await conn.execute(select(jobs_t.c.id).order_by(jobs_t.c.created_at))).scalars()
        )


async def test_fail_silently_counts_only_accepted_messages(
    postroom: Postroom, running: str
) -> None:
    key, _ = await postroom.keys.create("django", ["send"])
    good = mail.EmailMessage("ok", "body", to=["ann@example.com"])
    # Django refuses header injection itself; Postroom refuses this envelope address
    bad = mail.EmailMessage("bad", "body", to=["ann@example.com"], bcc=["not-an-address"])
    with override_settings(POSTROOM={"URL": running, "API_KEY": key}):
        connection = mail.get_connection(fail_silently=True)
        assert connection.send_messages([good, bad, mail.EmailMessage("none", "b")]) == 1
        with pytest.raises(ApiError) as caught:
            mail.get_connection().send_messages([bad])
    assert caught.value.status_code == 422


def test_missing_configuration_is_improperly_configured() -> None:
    with override_settings(POSTROOM={}), pytest.raises(ImproperlyConfigured, match="API_KEY"):
        mail.get_connection(fail_silently=True)


async def test_in_process_enqueues_into_the_database(
    postroom: Postroom, settings: Settings, tmp_path: Path
) -> None:
    options = {
        "IN_PROCESS": True,
        "SETTINGS": {"database_url": settings.effective_database_url, "data_dir": str(tmp_path)},
    }
    with override_settings(POSTROOM=options):
        assert mail.send_mail("In process", "Hi", None, ["ann@example.com"]) == 1
    async with postroom.engine.connect() as conn:
        job = (await conn.execute(select(jobs_t))).one()
        assert (await conn.execute(select(func.count()).select_from(jobs_t))).scalar_one() == 1
    assert job.data["request"]["subject"] == "In process"
    assert job.data["metadata"]["source"] == "django"
