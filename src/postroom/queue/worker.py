"""The worker: claim, compose, send, write back. Loop, concurrency, heartbeat, shutdown.

One asyncio loop drives up to ``concurrency`` sends at once. Claims and write-backs
are batched: a claim leases up to ``batch_size`` jobs in one statement, and results
are written back together every few milliseconds, because on a fast relay the
database round trips, not SMTP, bound throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom import logs
from postroom.analytics import guardrails, provider_guardrails, rollups
from postroom.clock import Clock, SystemClock
from postroom.compose import dkim
from postroom.compose import raw as raw_mime
from postroom.compose.message import compose
from postroom.compose.signer import Signer
from postroom.config import Settings
from postroom.db.clock import DatabaseClock
from postroom.db.engine import reader
from postroom.db.models import EmailQueue
from postroom.errors import ComposeError, PostroomError, ProviderError, ProviderUnavailable
from postroom.events.dispatcher import Dispatcher
from postroom.providers import credentials
from postroom.providers.base import OutgoingMessage, SendResult
from postroom.providers.routing import Candidate, NoProvider, ProviderRouter
from postroom.queue import notify, store
from postroom.queue import prune as retention
from postroom.queue.bulks import SharedRequests
from postroom.queue.jobs import Job, Outcome, Result
from postroom.queue.retry import RetryConfig, RetryPolicy, default_retry
from postroom.queue.writeback import RepeatedError, WriteBack
from postroom.templates.domains import DomainKeys
from postroom.templates.versions import TemplateStore
from postroom.tracking.context import TrackingContext

log = logging.getLogger(__name__)
queues_t = cast(Table, EmailQueue.__table__)

#: longest claim pause after no provider could take a message
MAX_CLAIM_PAUSE_S = 5.0
#: a host clock further than this off the database's is worth a warning
CLOCK_WARN_S = 5.0
#: write results back at least this often
FLUSH_INTERVAL_S = 0.02
#: how often a worker with ``worker.prune_after_days`` set prunes
PRUNE_INTERVAL_S = 3600.0


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def process_gone(token: str, host: str) -> bool:
    """Whether lease ``token`` (``host:pid:suffix#n``) is held by a process of ``host``
    that no longer exists. This process's own tokens and unparsable ones never are."""
    parts = token.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    return False


#: queue priority -> claim order when queues are claimed one by one
QUEUE_RANK = {"critical": 4, "high": 3, "normal": 2, "low": 1}


@dataclass(frozen=True, kw_only=True, slots=True)
class _QueueLimits:
    concurrency: int
    batch_size: int | None
    rank: int
    #: the queue's ``retry`` config as a policy (base and cap of the backoff)
    retry: RetryPolicy


class Worker:
    """Processes jobs until told to stop."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        router: ProviderRouter,
        *,
        clock: Clock | None = None,
        worker_id: str | None = None,
        queue_names: Sequence[str] | None = None,
        retry_policy: RetryPolicy | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.router = router
        self.clock = clock or SystemClock()
        self.id = worker_id or default_worker_id()
        self.queue_names = list(queue_names) if queue_names else None
        #: an explicit policy overrides the queues' own ``retry`` configs
        self._fixed_retry = retry_policy
        self._retry_defaults = default_retry(settings)
        #: public URL and link keys for open/click tracking and List-Unsubscribe
        self.tracking = TrackingContext.from_settings(settings)
        #: the spec's 2^n s: how long a throttled message waits when no Retry-After says
        self.retry = retry_policy or RetryPolicy(cap_s=settings.retry_max_backoff_s)
        ws = settings.worker
        self.concurrency = ws.concurrency
        self.batch_size = ws.batch_size
        self.lease_s = ws.lease_s
        self._tokens = (f"{self.id}#{n}" for n in itertools.count(1))
        self._inflight: dict[asyncio.Task[None], Job] = {}
        #: periodic tasks inside their action, which shutdown lets finish (see _every)
        self._periodic_busy: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._wake = asyncio.Event()
        self._queue_limits: dict[uuid.UUID, _QueueLimits] = {}
        self._queues_loaded_at = 0.0
        self._processed = 0
        #: claim once this many slots are free (or when idle): fewer, fuller claims
        self._claim_threshold = max(1, min(self.batch_size, self.concurrency) // 4)
        self._claims_paused_until = 0.0
        self._clock_warned = False
        #: counters for logs, the CLI and benchmarks
        self.stats: Counter[str] = Counter()
        self.writeback = WriteBack(
            engine, worker_id=self.id, stats=self.stats, probe=self._heartbeat, monotonic=monotonic
        )
        self.templates = TemplateStore(engine, self.clock)
        self.bulks = SharedRequests(engine)
        fernet = credentials.load_fernet(settings)
        self.dkim_keys = DomainKeys(engine, fernet, self.clock)
        self.signer = Signer(ws.dkim_signers)
        #: outgoing event webhooks, delivered beside the send loop
        self.webhooks = Dispatcher(engine, fernet, self.clock, worker_id=self.id)
        self._claim_errors = RepeatedError(f"worker {self.id}: claiming", monotonic=monotonic)

    # -- the loop ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then shut down gracefully."""
        log.info("worker %s started (concurrency %d)", self.id, self.concurrency)
        background = [
            asyncio.create_task(self._every(self.lease_s / 3, self._heartbeat)),
            asyncio.create_task(self._every(max(1.0, self.lease_s / 4), self._reap)),
            asyncio.create_task(self._every(FLUSH_INTERVAL_S, self.flush)),
            asyncio.create_task(self._every(guardrails.PERIOD_S, self._guardrails)),
            asyncio.create_task(self._every(rollups.ROLL_PERIOD_S, self._roll_closed)),
            asyncio.create_task(self.webhooks.run()),
        ]
        if self.engine.dialect.name == "postgresql":
            background.append(asyncio.create_task(notify.listen(self.engine, self.wake)))
        if self.settings.worker.prune_after_days is not None:
            background.append(asyncio.create_task(self._every(PRUNE_INTERVAL_S, self.prune)))
        try:
            await self._reap()  # measures the clock offset first
            await self._release_gone()
            while not stop.is_set():
                claimed = await self._claim_if_room()
                if claimed:
                    continue
                await self._idle(stop)
        finally:
            await self._shutdown()
            self._stopping = True
            for task in background:
                if task not in self._periodic_busy:  # the others stop after their action
                    task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self.flush(force=True)
            await self.aclose()
            log.info("worker %s stopped: %s", self.id, dict(self.stats))

    async def drain(self, *, max_rounds: int = 10_000) -> int:
        """Process every job that is due now, then return how many were processed.

        For tests, ``postroom worker --burst`` and benchmarks.
        """
        before = self._processed
        await self._sync_clock()
        for _ in range(max_rounds):
            # only a claim made with nothing in flight proves that nothing is due:
            # with sends in flight, a busy queue may have been left out of it
            idle = not self._inflight
            claimed = await self._claim_if_room(force=True)
            if not claimed and idle:
                break
            if self._inflight:
                await asyncio.wait(list(self._inflight), return_when=asyncio.FIRST_COMPLETED)
            if len(self.writeback) >= self.batch_size:
                await self.flush()
        await self.flush()
        return self._processed - before

    async def aclose(self) -> None:
        """Close the provider and webhook connections this worker opened."""
        await self.router.aclose()
        await self.webhooks.aclose()
        await self.signer.aclose()

    def wake(self) -> None:
        """Look for work now (a NOTIFY arrived or a job was enqueued in-process)."""
        self._wake.set()

    async def _idle(self, stop: asyncio.Event) -> None:
        self._wake.clear()
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(stop.wait()),
        ]
        room = len(self._inflight) < self.concurrency
        if self._inflight:
            waiters.extend(self._inflight)
        timeout = self.settings.worker.poll_interval_s if room else None
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for fut in waiters[:2]:
            if not fut.done():
                fut.cancel()

    async def _guardrails(self) -> None:
        """Pause queues and disable providers whose mail bounces too much (see
        ``analytics.guardrails`` and ``analytics.provider_guardrails``)."""
        await guardrails.check(self.engine, self.clock.now())
        await provider_guardrails.check(self.engine, self.clock.now())

    async def _roll_closed(self) -> None:
        """Roll the analytics periods that closed since, ahead of the reads."""
        await rollups.roll_closed(self.engine, self.clock.now())

    async def _every(self, period_s: float, action: Any) -> None:
        """Run ``action`` every ``period_s`` until shutdown, which cancels this loop only
        while it sleeps: an action cancelled half-way loses its work (its transaction
        is rolled back; on SQLite the engine does it, see ``db.engine``)."""
        task = asyncio.current_task()
        assert task is not None
        while not self._stopping:
            await asyncio.sleep(period_s)
            self._periodic_busy.add(task)
            try:
                await action()
            except Exception:  # keep the loop alive; the next period tries again
                log.exception("worker %s: periodic %s failed", self.id, action.__name__)
            finally:
                self._periodic_busy.discard(task)

    # -- claiming ----------------------------------------------------------------------

    async def _load_queues(self) -> None:
        """Each queue's processor settings, reloaded every few seconds."""
        now = time.monotonic()
        if now - self._queues_loaded_at <= 5.0:
            return
        q = queues_t.c
        stmt = select(q.id, q.name, q.priority, q.processor, q.retry)
        async with reader(self.engine).connect() as conn:
            rows = (await conn.execute(stmt)).all()
        limits: dict[uuid.UUID, _QueueLimits] = {}
        for row in rows:
            if self.queue_names is not None and row.name not in self.queue_names:
                continue
            processor = row.processor or {}
            limits[row.id] = _QueueLimits(
                concurrency=int(processor.get("concurrency") or self.concurrency),
                batch_size=int(processor["batchSize"]) if processor.get("batchSize") else None,
                rank=QUEUE_RANK.get(row.priority, 2),
                retry=RetryConfig.from_json(row.retry, defaults=self._retry_defaults).policy(),
            )
        self._queue_limits = limits
        self._queues_loaded_at = now

    async def _claim_plan(self, room: int) -> list[tuple[list[uuid.UUID] | None, int]]:
        """The claims to make now: (queue ids or None for all, at most how many).

        One claim over every queue with room, unless a queue sets its own
        ``batchSize``: then one claim per queue, most urgent queue first.
        """
        await self._load_queues()
        busy = Counter(job.queue_id for job in self._inflight.values())
        free = {qid: q.concurrency - busy[qid] for qid, q in self._queue_limits.items()}
        open_ids = [qid for qid, n in free.items() if n > 0]
        if not open_ids:
            return []
        if all(q.batch_size is None for q in self._queue_limits.values()):
            limit = min(room, self.batch_size, sum(free[qid] for qid in open_ids))
            everything = self.queue_names is None and len(open_ids) == len(self._queue_limits)
            return [(None if everything else open_ids, limit)]
        return [
            ([qid], min(free[qid], self._queue_limits[qid].batch_size or self.batch_size))
            for qid in sorted(open_ids, key=lambda q: -self._queue_limits[q].rank)
        ]

    async def _claim_if_room(self, *, force: bool = False) -> list[Job]:
        if not force and time.monotonic() < self._claims_paused_until:
            return []
        if not force and self.writeback.failing:
            return []  # no new work while results cannot be written back
        room = self.concurrency - len(self._inflight)
        # claim in batches: wait for a reasonable amount of room unless idle
        if room <= 0 or (not force and self._inflight and room < self._claim_threshold):
            return []
        claimed: list[Job] = []
        try:
            for queue_ids, cap in await self._claim_plan(room):
                limit = min(cap, room - len(claimed))
                if limit <= 0:
                    break
                claimed += await store.claim(
                    self.engine,
                    token=next(self._tokens),
                    limit=limit,
                    now=self.clock.now(),
                    lease_s=self.lease_s,
                    queue_ids=queue_ids,
                )
        except Exception as exc:
            self._claim_errors.failed(exc)
            await asyncio.sleep(self.settings.worker.poll_interval_s)
        else:
            self._claim_errors.recovered()
        if claimed:
            # load providers once here, not concurrently from every task
            try:
                await self.router.refresh()
            except Exception:
                log.exception("worker %s: loading providers failed", self.id)
        for job in claimed:
            task = asyncio.create_task(self._process(job))
            self._inflight[task] = job
            task.add_done_callback(self._done)
        self.stats["claimed"] += len(claimed)
        return claimed

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("worker %s: job task crashed", self.id, exc_info=task.exception())

    # -- one job -----------------------------------------------------------------------

    async def _process(self, job: Job) -> None:
        started = self.clock.now()
        candidate: Candidate | None = None
        try:
            request = job.request
            if "raw" in job.data:  # SMTP or /send/raw: the stored bytes go out as they are
                message = raw_mime.outgoing(str(job.id), job.data)
                if self.tracking is not None:  # unless its type or flags ask for tracking
                    message = raw_mime.tracked(message, request, self.tracking, started)
            else:
                if "bulk" in job.data:  # its recipient joined to the bulk's shared message
                    request = await self.bulks.request(job.data)
                if "templatePin" in request:  # rendered from the version pinned at enqueue
                    request = await self.templates.render_request(request)
                message = compose(
                    str(job.id),
                    request,
                    now=started,
                    message_id_domain=self.settings.message_id_domain,
                    tracking=self.tracking,
                )
            message = await self._signed(message, composed="raw" not in job.data)
            # a provider that could not be reached got nothing: not an attempt, so
            # the next one is tried at once; the attempt log keeps why it was skipped
            unreached: dict[uuid.UUID, str] = {}
            while not isinstance(
                choice := await self.router.acquire(
                    message,
                    failed_provider_id=job.failed_provider_id,
                    only=request.get("provider"),
                    skip=unreached,
                ),
                NoProvider,
            ):
                candidate = choice
                try:
                    async with self.router.slot(candidate):
                        started = self.clock.now()  # waiting for a connection is not the attempt
                        sent = await self._send(candidate, message)
                    break
                except ProviderUnavailable as exc:
                    unreached[candidate.id] = f"{exc.code}: {exc.message}"
            if isinstance(choice, NoProvider):
                # nothing can send now: stop claiming for a while instead of claiming
                # and deferring the whole backlog batch after batch
                pause = min(choice.retry_after_s, MAX_CLAIM_PAUSE_S)
                self._claims_paused_until = max(self._claims_paused_until, time.monotonic() + pause)
                now = self.clock.now()
                result = Result(
                    job=job,
                    outcome="deferred",
                    started_at=started,
                    finished_at=now,
                    # the provider last skipped, so the next try fails over from it
                    provider_id=candidate.id if candidate else None,
                    provider_name=candidate.spec.name if candidate else None,
                    retry_at=now + timedelta(seconds=choice.retry_after_s),
                    error_code=choice.code,
                    error_message=choice.reason,
                )
            else:
                result = Result(
                    job=job,
                    outcome="sent",
                    started_at=started,
                    finished_at=self.clock.now(),
                    provider_id=choice.id,
                    provider_name=choice.spec.name,
                    message_id=sent.provider_message_id,
                    rejected=dict(sent.rejected),
                )
        except Exception as exc:  # every failure becomes a recorded outcome
            result = self._failure(job, exc, started, candidate)
        self._record(result)

    async def _signed(self, message: OutgoingMessage, *, composed: bool) -> OutgoingMessage:
        """DKIM-signed when the From domain has an active key: the last step of composing.

        ``composed``: Postroom wrote the From header from ``message.from_``, so an ASCII
        address gives the domain without parsing the header back out of the MIME.
        """
        address = message.from_.email
        if composed and address.isascii():
            domain: str | None = address.rpartition("@")[2].lower() or None
        else:
            domain = dkim.header_from_domain(message.mime)
        key = await self.dkim_keys.signer(domain) if domain else None
        if key is None:
            return message
        try:
            return dataclasses.replace(message, mime=await self.signer.sign(message.mime, key))
        except dkim.SigningError as exc:
            raise ComposeError(str(exc)) from exc

    async def _send(self, candidate: Candidate, message: OutgoingMessage) -> SendResult:
        """Send through ``candidate`` and tell the router how it went."""
        t0 = time.perf_counter()
        try:
            sent = await candidate.provider.send(message)
        except Exception as exc:
            self.router.report(candidate, error=exc, latency_ms=(time.perf_counter() - t0) * 1000)
            raise
        self.router.report(candidate, error=None, latency_ms=(time.perf_counter() - t0) * 1000)
        return sent

    def _retry_policy(self, job: Job) -> RetryPolicy:
        """The backoff of the job's queue (its ``retry`` config), unless one was fixed."""
        limits = self._queue_limits.get(job.queue_id) if job.queue_id else None
        if self._fixed_retry is not None:
            return self._fixed_retry
        return limits.retry if limits is not None else self._retry_defaults.policy()

    def _failure(self, job: Job, exc: BaseException, started: Any, candidate: Any) -> Result:
        if not isinstance(exc, PostroomError):
            log.error(
                "job %s attempt %d: unexpected %s",
                job.id,
                job.attempts,
                type(exc).__name__,
                exc_info=exc,
            )
        outcome: Outcome
        if isinstance(exc, ProviderError) and exc.context.get("rate_limited"):
            # throttled (429, SES 454, 421 4.7.x rate limits): the message was not
            # at fault, so wait as asked without spending an attempt
            outcome, delay = "deferred", exc.retry_after or self.retry.backoff(1)
        else:
            outcome, delay = self._retry_policy(job).decide(
                attempts=job.attempts, max_attempts=job.max_attempts, error=exc
            )
        now = self.clock.now()
        detail: dict[str, Any] = {}
        if isinstance(exc, ProviderError):
            detail = {"status": exc.status, "retryable": exc.retryable}
            if exc.retry_after:
                detail["retryAfter"] = exc.retry_after
        return Result(
            job=job,
            outcome=outcome,
            started_at=started,
            finished_at=now,
            provider_id=candidate.id if candidate else None,
            provider_name=candidate.spec.name if candidate else None,
            retry_at=now + timedelta(seconds=delay) if outcome != "failed" else None,
            error_code=exc.code if isinstance(exc, PostroomError) else "internal",
            error_message=str(exc) or type(exc).__name__,
            error_detail=detail,
        )

    def _record(self, result: Result) -> None:
        logs.delivery(log, result)
        self.writeback.add(result)
        self._processed += 1
        self.stats[result.outcome] += 1
        if len(self.writeback) >= self.batch_size:
            self.wake()

    async def flush(self, *, force: bool = False) -> None:
        """Write buffered results back (``queue.writeback``: backoff while the database fails)."""
        await self.writeback.flush(force=force)

    # -- leases ------------------------------------------------------------------------

    def _held_tokens(self) -> set[str]:
        return {job.locked_by for job in self._inflight.values()} | set(self.writeback.tokens)

    async def _heartbeat(self) -> None:
        await store.heartbeat(
            self.engine, self._held_tokens(), now=self.clock.now(), lease_s=self.lease_s
        )

    async def _sync_clock(self) -> None:
        """Measure this process's offset to the database's clock (``db.clock``)."""
        if not isinstance(self.clock, DatabaseClock):
            return
        try:
            offset = await self.clock.sync()
        except Exception as exc:  # keep the last offset; the database may be down
            log.warning("worker %s: reading the database's clock failed: %s", self.id, exc)
            return
        if abs(offset.total_seconds()) > CLOCK_WARN_S and not self._clock_warned:
            self._clock_warned = True
            log.warning(
                "worker %s: this host's clock is %+.1f s off the database's; "
                "leases and due times use the database's",
                self.id,
                -offset.total_seconds(),
            )

    async def _reap(self) -> None:
        await self._sync_clock()
        reaped = await store.reap(self.engine, now=self.clock.now())
        if reaped:
            self.stats["reaped"] += reaped
            log.warning("worker %s: returned %d jobs with expired leases", self.id, reaped)

    async def prune(self) -> None:
        """Retention (``worker.prune_after_days``): delete finished mail past the window."""
        days = self.settings.worker.prune_after_days
        if days is None:
            return
        cutoff = self.clock.now() - timedelta(days=days)
        done = await retention.prune(self.engine, cutoff=cutoff)
        if done.jobs:
            log.info("worker %s: pruned %d jobs finished before %s", self.id, done.jobs, cutoff)

    async def _release_gone(self) -> None:
        """Take back the leases of workers of this host whose process no longer exists.

        After a crash (``kill -9``) of a process on this host, its jobs need not wait
        for their leases to run out. Workers of other hosts are left to ``reap``.
        """
        host = socket.gethostname()
        gone = {t for t in await store.lease_holders(self.engine) if process_gone(t, host)}
        released = await store.release_dead(self.engine, gone, now=self.clock.now())
        if released:
            self.stats["released_gone"] += released
            log.warning(
                "worker %s: took back %d jobs of worker processes that no longer exist",
                self.id,
                released,
            )

    async def _shutdown(self) -> None:
        """Let in-flight sends finish within the grace period; give the rest back."""
        if not self._inflight:
            return
        grace = self.settings.worker.shutdown_grace_s
        log.info("worker %s: waiting up to %.0fs for %d sends", self.id, grace, len(self._inflight))
        _, pending = await asyncio.wait(list(self._inflight), timeout=grace)
        if not pending:
            return
        unfinished = [self._inflight[t] for t in pending if t in self._inflight]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        now = self.clock.now()
        for job in unfinished:
            self._record(
                Result(
                    job=job,
                    outcome="retry",
                    finished_at=now,
                    retry_at=now,
                    error_code="shutdown",
                    error_message="the worker stopped before the send finished",
                )
            )
        with contextlib.suppress(Exception):
            await self.flush(force=True)
