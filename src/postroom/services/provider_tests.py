"""Trying providers out: ``check()`` on demand, and a test email sent at once.

The test email is sent directly through the provider, not queued: the point is
the provider's own answer (accepted, or the error it gave), at once, without
retries or failover hiding it. So it is not an email Postroom tracks (no record,
no status), but it takes a slot under the provider's limits and counts in its
statistics like any other send.
"""

from __future__ import annotations

import time
import uuid
from email.utils import parseaddr
from typing import Any

from pydantic import ValidationError

from postroom.compose.message import compose
from postroom.config import Settings
from postroom.db.engine import reader
from postroom.errors import MessageError, NotFound, PostroomError, RateLimited
from postroom.providers import health, ratelimit, routing
from postroom.schemas import providers as schemas
from postroom.schemas.email import EmailSender
from postroom.services.providers import ProviderService, scrub

TEST_TEXT = (
    "This is a test email from Postroom.\r\n\r\n"
    "It was sent through the provider named in the subject line to check its settings.\r\n"
)


class ProviderTester:
    def __init__(self, service: ProviderService, settings: Settings) -> None:
        self.service = service
        self.settings = settings

    async def check(self, ident: str) -> schemas.ProviderTestResult:
        """Run the provider's ``check()`` now and store the result for its health."""
        row = await self.service.row(ident)
        provider = self.service.build(row)
        try:
            result = await health.run_check(provider)
        finally:
            await provider.aclose()
        now = self.service.clock.now()
        await health.record_check(self.service.engine, row.id, result, now)
        return schemas.ProviderTestResult(
            provider_id=str(row.id),
            provider=row.name,
            ok=result.ok,
            latency_ms=None if result.latency_ms is None else round(result.latency_ms, 1),
            detail=scrub(result.detail, self.service.secrets(row)) or "",
            checked_at=now,
        )

    async def check_unsaved(self, data: schemas.ProviderCreate) -> schemas.ProviderTestResult:
        """Run ``check()`` for a provider before it is stored (nothing is recorded)."""
        provider = await self.service.build_unsaved(data)
        try:
            result = await health.run_check(provider)
        finally:
            await provider.aclose()
        return schemas.ProviderTestResult(
            provider_id="",
            provider=data.name,
            ok=result.ok,
            latency_ms=None if result.latency_ms is None else round(result.latency_ms, 1),
            detail=scrub(result.detail, data.authentication) or "",
            checked_at=self.service.clock.now(),
        )

    async def send(self, request: schemas.TestEmailRequest) -> schemas.TestEmailResult:
        """Send one test message through the named provider; without one, down the
        routing order as mail goes: the next provider is tried when one cannot take
        it (unreachable, credentials, throttled, at its limit), not when it refuses
        the message itself. Every provider tried is in ``attempts``."""
        if request.provider_id is not None:
            rows = [await self.service.row(request.provider_id)]
        else:
            rows = await self._in_order()
        sender = request.from_ or self._default_sender()
        attempts: list[schemas.TestEmailAttempt] = []
        full: list[RateLimited] = []
        for row in rows:
            try:
                attempt, outcome = await self._send_one(row, request, sender)
            except RateLimited as exc:
                full.append(exc)
                attempt, outcome = self._skipped(row, exc), "throttled"
            attempts.append(attempt)
            if outcome in ("sent", "rejected"):  # accepted, or the message itself refused
                break
        if len(full) == len(attempts):
            raise full[-1]  # nobody could take it: 429
        last = attempts[-1]
        return schemas.TestEmailResult(
            **last.model_dump(by_alias=False, exclude={"attempts"}), attempts=attempts
        )

    async def _send_one(
        self, row: Any, request: schemas.TestEmailRequest, sender: EmailSender
    ) -> tuple[schemas.TestEmailAttempt, str]:
        now = self.service.clock.now()
        message = compose(
            str(uuid.uuid4()),
            {
                "from": sender.model_dump(exclude_none=True),
                "to": [r.model_dump(mode="json", exclude_none=True) for r in request.to],
                "subject": f"{request.subject} ({row.name})",
                "content": {"text": TEST_TEXT},
            },
            now=now,
            message_id_domain=self.settings.message_id_domain,
        )
        await self._take_slot(row, now)
        provider = self.service.build(row)
        error: Exception | None = None
        started = time.perf_counter()
        try:
            sent = await provider.send(message)
        except PostroomError as exc:
            error, sent = exc, None
        finally:
            await provider.aclose()
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        outcomes = health.OutcomeBuffer()
        detail = health.describe(error) if error else None
        outcome = health.outcome_of(error)
        outcomes.record(row.id, now, outcome, latency_ms=latency_ms, error=detail)
        await outcomes.flush(self.service.engine)
        secrets = self.service.secrets(row)
        attempt = schemas.TestEmailAttempt(
            ok=error is None,
            provider_id=str(row.id),
            provider=row.name,
            message_id=message.message_id,
            provider_message_id=sent.provider_message_id if sent else None,
            response=scrub(sent.response, secrets) if sent else None,
            latency_ms=latency_ms,
            error=(
                schemas.TestEmailError(code=error.code, message=scrub(error.message, secrets) or "")
                if isinstance(error, PostroomError)
                else None
            ),
        )
        return attempt, outcome

    def _skipped(self, row: Any, exc: RateLimited) -> schemas.TestEmailAttempt:
        """A provider at its limit: not tried, and said so."""
        return schemas.TestEmailAttempt(
            ok=False,
            provider_id=str(row.id),
            provider=row.name,
            message_id="",
            error=schemas.TestEmailError(code=exc.code, message=exc.message),
        )

    async def _in_order(self) -> list[Any]:
        """The enabled providers in the order mail goes to them (the outbox only alone)."""
        async with reader(self.service.engine).connect() as conn:
            rows = (await conn.execute(routing.ENABLED_IN_ORDER)).all()
        pool = routing.routable(rows, lambda r: str(r.type))
        if not pool:
            raise NotFound("no provider is enabled")
        return list(pool)

    def _default_sender(self) -> EmailSender:
        if not self.settings.default_from:
            raise MessageError("give 'from': POSTROOM_DEFAULT_FROM is not set", field="from")
        name, address = parseaddr(self.settings.default_from)
        try:
            return EmailSender(email=address, name=name or None)
        except ValidationError:
            raise MessageError(
                "POSTROOM_DEFAULT_FROM is not a valid address; give 'from'", field="from"
            ) from None

    async def _take_slot(self, row: Any, now: Any) -> None:
        try:
            limits = ratelimit.Limits.parse(row.limits)
        except PostroomError:
            return
        if not limits.windows:
            return
        granted = await ratelimit.reserve(
            self.service.engine, row.id, [(w, w.start(now), 1) for w in limits.windows]
        )
        full = [w for w in limits.windows if granted.get(w.kind, 0) <= 0]
        if full:
            resets = max(w.end(w.start(now)) for w in full)
            raise RateLimited(
                f"{row.name} is at its {full[0].kind} limit until {resets:%Y-%m-%dT%H:%M:%SZ}"
            )
