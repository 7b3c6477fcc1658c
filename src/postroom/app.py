"""``Postroom``: the in-process facade used by the API, the CLI and library users.

::

    async with Postroom() as postroom:
        result = await postroom.send({"to": [{"email": "ann@example.com"}], ...})
        status = await postroom.status(result.id)
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.clock import Clock, SystemClock
from postroom.config import Settings, load_settings
from postroom.db import clock as db_clock
from postroom.db import engine as db_engine
from postroom.db import migrate
from postroom.db.groupcommit import GroupCommit
from postroom.errors import ConfigError, RequestInvalid
from postroom.events.endpoints import Endpoints
from postroom.gcpause import gc_paused
from postroom.providers import credentials, registry
from postroom.providers.routing import ProviderRouter
from postroom.queue.retry import default_retry
from postroom.queue.worker import Worker
from postroom.schemas.bulk import BulkAccepted, BulkRequest
from postroom.schemas.email import EmailRequest
from postroom.schemas.results import EmailSendResult, EmailStatus
from postroom.services import bootstrap, status
from postroom.services.bulk import BulkSender
from postroom.services.keys import KeyStore
from postroom.services.raw_sending import RawEnvelope, RawSender
from postroom.services.router import QueueDirectory
from postroom.services.sending import Sender
from postroom.services.users import UserStore
from postroom.templates.domains import DomainKeys
from postroom.tracking import hits

log = logging.getLogger(__name__)


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as ``[{"field": "to.0.email", "message": ...}]``."""
    out = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "body"
        message = err["msg"].removeprefix("Value error, ")
        out.append({"field": field, "message": message})
    return out


class Postroom:
    """One Postroom: database, queues, providers. Start it before use; close it after."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        clock: Clock | None = None,
        engine: AsyncEngine | None = None,
    ) -> None:
        self.settings = settings or load_settings()
        self._own_engine = engine is None
        self.engine = engine or db_engine.create_engine(self.settings)
        #: the time every process agrees on: the database's clock (``db.clock``); an
        #: injected clock stands in for it (tests)
        self.time_reference: db_clock.Reference = (
            db_clock.reading(clock)
            if clock
            else functools.partial(db_clock.server_now, self.engine)
        )
        self.clock: Clock = clock or db_clock.DatabaseClock(SystemClock(), self.time_reference)
        self.queues = QueueDirectory(self.engine)
        self.sender = Sender(self.engine, self.settings, self.clock, self.queues)
        self.raw_sender = RawSender(self.sender)
        self.bulk = BulkSender(self.sender)
        self.keys = KeyStore(self.engine, self.clock)
        self.users = UserStore(self.engine, self.clock)
        self.fernet = credentials.load_fernet(self.settings)
        self.domains = DomainKeys(self.engine, self.fernet, self.clock)
        #: outgoing event webhooks: endpoints, delivery log, redelivery
        self.webhooks = Endpoints(self.engine, self.fernet, self.clock)
        #: open-pixel and click events, committed a batch of concurrent ones at a time
        self.link_events: GroupCommit[hits.Hit, uuid.UUID] = GroupCommit(hits.writer(self.engine))
        self._workers: list[Worker] = []
        #: set once :meth:`start` has succeeded
        self.started = False

    async def start(self, *, migrate_schema: bool | None = None) -> Postroom:
        """Check (or, on SQLite by default, apply) migrations and create the defaults."""
        if migrate_schema is None:
            migrate_schema = self.settings.is_sqlite
        if migrate_schema:
            await migrate.upgrade(self.engine)
        elif not await migrate.is_current(self.engine):
            raise ConfigError("the database schema is not up to date: run 'postroom migrate'")
        if isinstance(self.clock, db_clock.DatabaseClock):
            await self.clock.sync()
        await bootstrap.ensure_defaults(self.engine, self.clock, retry=default_retry(self.settings))
        self.started = True
        return self

    async def aclose(self) -> None:
        await self.link_events.aclose()
        if self._own_engine:
            await self.engine.dispose()

    async def __aenter__(self) -> Postroom:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- use cases ---------------------------------------------------------------------

    def parse_request(self, data: Mapping[str, Any] | EmailRequest) -> EmailRequest:
        """Validate a request; RequestInvalid lists every problem."""
        if isinstance(data, EmailRequest):
            data = data.model_dump(by_alias=True, exclude_none=True)
        try:
            return EmailRequest.model_validate(
                data, context={"max_message_bytes": self.settings.max_message_bytes}
            )
        except ValidationError as exc:
            raise RequestInvalid(validation_errors(exc)) from None

    async def send(
        self,
        request: Mapping[str, Any] | EmailRequest,
        *,
        idempotency_key: str | None = None,
        api_key_id: uuid.UUID | None = None,
    ) -> EmailSendResult:
        """Accept one email; it is durable when this returns.

        ``api_key_id`` names the API key sending it; mail sent without one belongs
        to no key: ``send`` keys cannot read its status, ``read`` keys and
        :meth:`status` can, and its idempotency keys form their own scope.
        """
        parsed = self.parse_request(request)
        result = await self.sender.send(
            parsed, idempotency_key=idempotency_key, api_key_id=api_key_id
        )
        for worker in self._workers:
            worker.wake()
        return result

    async def send_bulk(
        self,
        request: Mapping[str, Any] | BulkRequest,
        *,
        idempotency_key: str | None = None,
        api_key_id: uuid.UUID | None = None,
    ) -> BulkAccepted:
        """Accept one message for many recipients; all of it is durable when this returns."""
        with gc_paused():  # up to 100,000 recipients' objects, alive until the end
            if not isinstance(request, BulkRequest):
                try:
                    request = BulkRequest.model_validate(request)
                except ValidationError as exc:
                    raise RequestInvalid(validation_errors(exc)) from None
            result = await self.bulk.send(
                request, idempotency_key=idempotency_key, api_key_id=api_key_id
            )
        for worker in self._workers:
            worker.wake()
        return result

    async def send_raw(
        self,
        mime: bytes,
        envelope: RawEnvelope | None = None,
        *,
        idempotency_key: str | None = None,
        api_key_id: uuid.UUID | None = None,
    ) -> EmailSendResult:
        """Accept one finished MIME message; it is durable when this returns.
        ``api_key_id`` owns it (None: the facade), as for :meth:`send`."""
        result = await self.raw_sender.send_raw(
            mime, envelope or RawEnvelope(), idempotency_key=idempotency_key, api_key_id=api_key_id
        )
        for worker in self._workers:
            worker.wake()
        return result

    async def status(
        self, email_id: str, *, owner: uuid.UUID | str | None = status.ANY_OWNER
    ) -> EmailStatus:
        """The email's status; ``owner`` limits it to one API key's mail (None: the
        facade's own), as for a ``send``-scoped key."""
        return await status.get_status(self.engine, email_id, owner=owner)

    async def ping(self) -> None:
        """Raise unless the database answers."""
        async with db_engine.reader(self.engine).connect() as conn:
            await conn.execute(text("SELECT 1"))

    def provider_router(self) -> ProviderRouter:
        return ProviderRouter(
            self.engine,
            fernet=self.fernet,
            context=registry.ProviderContext(data_dir=self.settings.data_dir),
            clock=self.clock,
        )

    def worker(
        self,
        *,
        worker_id: str | None = None,
        queue_names: Sequence[str] | None = None,
        clock: Clock | None = None,
    ) -> Worker:
        """A worker bound to this Postroom; run it with ``await worker.run(stop_event)``.

        Its clock is ``clock`` (default: this process's) corrected to the database's.
        """
        if clock is None and isinstance(self.clock, db_clock.DatabaseClock):
            worker_clock = self.clock  # one offset per process, kept fresh by its workers
        else:
            worker_clock = db_clock.DatabaseClock(clock or self.clock, self.time_reference)
        w = Worker(
            self.engine,
            self.settings,
            self.provider_router(),
            clock=worker_clock,
            worker_id=worker_id,
            queue_names=queue_names,
        )
        self._workers.append(w)
        return w
