"""The overview figures and the message search, against both databases."""

from __future__ import annotations

from datetime import UTC, date, datetime

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.services.messages import MessageLog, Search
from postroom.services.overview import OverviewReader
from postroom.services.providers import ProviderService
from postroom.services.queues import QueueManager
from tests.support.payloads import email
from tests.support.providers import add_provider, disable_all


def overview_reader(postroom: Postroom) -> OverviewReader:
    queues = QueueManager(postroom.engine, postroom.clock, postroom.queues)
    return OverviewReader(postroom.engine, postroom.clock, queues, ProviderService.of(postroom))


def message_log(postroom: Postroom) -> MessageLog:
    return MessageLog(
        postroom.engine,
        data_dir=postroom.settings.data_dir,
        message_id_domain=postroom.settings.message_id_domain,
    )


async def deliver(postroom: Postroom) -> None:
    worker = postroom.worker()
    try:
        await worker.drain()
    finally:
        await worker.aclose()


async def test_overview_counts_today_yesterday_rates_and_backlog(
    postroom: Postroom, clock: ManualClock
) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="fake", type="fake", config={"script": ["ok", "rejected"]})
    clock.set(datetime(2026, 1, 1, 23, 0, tzinfo=UTC))
    await postroom.send(email())  # yesterday: sent
    await postroom.send(email(maxAttempts=1))  # yesterday: rejected, failed
    worker = postroom.worker()  # one worker: its fake provider plays the script once
    try:
        await worker.drain()
        clock.set(datetime(2026, 1, 2, 9, 0, tzinfo=UTC))
        for _ in range(3):
            await postroom.send(email(to=[{"email": "a@example.com"}, {"email": "b@example.com"}]))
        await worker.drain()
    finally:
        await worker.aclose()
    await postroom.send(email(scheduledAt="2026-01-03T00:00:00Z"))  # waits: backlog

    o = await overview_reader(postroom).read()
    assert (o.sent_today, o.sent_yesterday) == (6, 1)
    assert o.change_vs_yesterday == 500.0
    assert o.backlog == 1
    # jobs: 4 sent, 1 failed; recipients: 7 accepted, 1 failed (all within 24 hours)
    assert o.success_rate == 4 / 5
    assert o.delivery_rate == 7 / 8
    assert o.average_send_ms is not None
    assert (o.status, o.active_providers) == ("operational", 1)


async def test_overview_status_is_down_without_providers(postroom: Postroom) -> None:
    await disable_all(postroom)
    o = await overview_reader(postroom).read()
    assert (o.status, o.reason) == ("down", "no provider is enabled")
    assert o.success_rate is None and o.delivery_rate is None and o.sent_today == 0


async def test_search_by_recipient_subject_status_tag_provider_and_date(
    postroom: Postroom, clock: ManualClock
) -> None:
    await postroom.send(email(subject="Welcome 100%", tags=["welcome", "onboarding"]))
    clock.advance(1)
    await postroom.send(
        email(subject="Invoice", to=[{"email": "bill@example.org"}], tags=["billing"])
    )
    await deliver(postroom)
    clock.advance(86_400)
    await postroom.send(email(subject="Later"))
    log = message_log(postroom)

    async def subjects(**fields: object) -> list[str]:
        page = await log.search(Search(**fields))  # type: ignore[arg-type]
        return [row.subject for row in page.rows]

    assert await subjects() == ["Later", "Invoice", "Welcome 100%"]
    assert await subjects(recipient="BILL@") == ["Invoice"]
    assert await subjects(subject="100%") == ["Welcome 100%"]
    assert await subjects(subject="_") == []  # LIKE wildcards are taken literally
    assert await subjects(status="queued") == ["Later"]
    assert await subjects(status="sent") == ["Invoice", "Welcome 100%"]
    assert await subjects(tag="onboarding") == ["Welcome 100%"]
    assert await subjects(tag="welc") == []
    assert await subjects(provider="Development outbox") == ["Invoice", "Welcome 100%"]
    assert await subjects(provider_type="file") == ["Invoice", "Welcome 100%"]
    assert await subjects(day_from=date(2026, 1, 2)) == ["Later"]
    assert await subjects(day_to=date(2026, 1, 1)) == ["Invoice", "Welcome 100%"]


async def test_search_pages(postroom: Postroom, clock: ManualClock) -> None:
    for n in range(5):
        await postroom.send(email(subject=f"n{n}"))
        clock.advance(1)
    log = message_log(postroom)
    first = await log.search(Search(), page_size=2)
    third = await log.search(Search(page=3), page_size=2)
    assert ([r.subject for r in first.rows], first.has_next) == (["n4", "n3"], True)
    assert ([r.subject for r in third.rows], third.has_next) == (["n0"], False)


async def test_stored_content_is_the_outbox_file_or_composed_again(postroom: Postroom) -> None:
    sent = await postroom.send(email(subject="From the outbox"))
    await deliver(postroom)
    waiting = await postroom.send(email(subject="Not sent yet"))
    log = message_log(postroom)
    outbox = await log.stored(sent.id)
    assert outbox.from_outbox and b"Subject: From the outbox" in outbox.mime
    composed = await log.stored(waiting.id)
    assert not composed.from_outbox and b"Subject: Not sent yet" in composed.mime
