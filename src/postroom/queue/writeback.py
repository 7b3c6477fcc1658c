"""The worker's write-back: results buffered and written to the database in batches.

Two failures must not turn into a loop that floods the log or stalls delivery:

- **The database refuses writes** (disk full, server down): every result stays
  buffered (its lease is still heartbeated, so nothing is lost) and the next try
  waits twice as long as the last one, up to ``RETRY_CAP_S``. The error is logged
  once with its traceback, then once per ``LOG_INTERVAL_S`` with a count, and
  once more when writes succeed again.
- **One result cannot be written** (whatever the reason): a failed batch is
  written again result by result, so the others go through. A result that fails
  while other writes succeed (other results, or the heartbeat when it is alone)
  is given ``MAX_STRIKES`` tries and then dropped
  with an error: its lease runs out and the job is sent again (at least once,
  never lost).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.queue import store
from postroom.queue.jobs import Result

log = logging.getLogger("postroom.queue.worker")

#: first wait after a failed write-back; it doubles with each failure ...
RETRY_FIRST_S = 0.1
#: ... up to this
RETRY_CAP_S = 10.0
#: a repeated error is logged at most once per interval, with a count
LOG_INTERVAL_S = 60.0
#: a result that fails this many times while other writes succeed is dropped
MAX_STRIKES = 3


class RepeatedError:
    """Logs a failure that repeats once per interval with a count, not every time."""

    def __init__(
        self,
        what: str,
        *,
        interval_s: float = LOG_INTERVAL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what
        self.interval_s = interval_s
        self._monotonic = monotonic
        self.total = 0
        self._since: float | None = None
        self._in_interval = 0
        self._interval_start = 0.0

    @property
    def failing(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException) -> None:
        now = self._monotonic()
        self.total += 1
        if self._since is None:
            self._since = self._interval_start = now
            self._in_interval = 0
            log.error("%s failed; will try again", self.what, exc_info=exc)
            return
        self._in_interval += 1
        if now - self._interval_start >= self.interval_s:
            log.error(
                "%s failed %d more times in the last %.0f s (%d in all); last error: %s: %s",
                self.what,
                self._in_interval,
                now - self._interval_start,
                self.total,
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )
            self._interval_start = now
            self._in_interval = 0

    def recovered(self) -> None:
        if self._since is None:
            return
        log.warning(
            "%s works again after %d failures over %.0f s",
            self.what,
            self.total,
            self._monotonic() - self._since,
        )
        self._since = None
        self.total = 0


class WriteBack:
    """Buffered results of one worker and the lease tokens they still hold."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        worker_id: str,
        stats: Counter[str],
        probe: Callable[[], Awaitable[object]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        #: a small write (the heartbeat) that tells a bad result from a failing database
        self._probe = probe
        self.worker_id = worker_id
        self.stats = stats
        self._monotonic = monotonic
        self.results: list[Result] = []
        #: tokens of results not written yet: their leases must still be heartbeated
        self.tokens: Counter[str] = Counter()
        self.errors = RepeatedError(
            f"worker {worker_id}: writing results back", monotonic=monotonic
        )
        self._delay_s = 0.0
        self._next_try = 0.0
        self._strikes: Counter[uuid.UUID] = Counter()

    def __len__(self) -> int:
        return len(self.results)

    @property
    def failing(self) -> bool:
        """The last write-back failed: the database may refuse writes."""
        return self.errors.failing

    def add(self, result: Result) -> None:
        self.results.append(result)
        self.tokens[result.job.locked_by] += 1

    async def flush(self, *, force: bool = False) -> None:
        """Write buffered results back, unless a failure asked to wait (``force`` does not)."""
        if not self.results or (not force and self._monotonic() < self._next_try):
            return
        batch, self.results = self.results, []
        try:
            written = await store.finish(self.engine, batch)
        except asyncio.CancelledError:
            # stopped mid-write (the worker shuts down its periodic flush): keep the
            # batch for the final flush, or its jobs would wait for their leases to run
            # out and be sent again. Written after all, its results are fenced off.
            self.results = batch + self.results
            raise
        except Exception as exc:
            if len(batch) == 1:
                self._failed(batch, exc, isolated=await self._database_writes())
                return
            written, failed, error = await self._one_by_one(batch)
            if failed:
                self._failed(failed, error, isolated=len(failed) < len(batch))
                failed_ids = {id(r) for r in failed}
                self._settle([r for r in batch if id(r) not in failed_ids], written)
                return
        self._settle(batch, written)

    async def _database_writes(self) -> bool:
        """Whether the database takes other writes (then the lone result is the trouble)."""
        if self._probe is None:
            return False
        try:
            await self._probe()
        except Exception:
            return False
        return True

    async def _one_by_one(
        self, batch: list[Result]
    ) -> tuple[set[uuid.UUID], list[Result], BaseException]:
        """Write each result on its own, so one that cannot be written blocks no other."""
        written: set[uuid.UUID] = set()
        failed: list[Result] = []
        error: BaseException = RuntimeError("unknown")
        for result in batch:
            try:
                written |= await store.finish(self.engine, [result])
            except Exception as exc:
                failed.append(result)
                error = exc
        return written, failed, error

    def _failed(self, failed: list[Result], exc: BaseException, *, isolated: bool) -> None:
        keep = failed
        if isolated:
            # other writes succeeded: these results, not the database, are the trouble
            keep = []
            for result in failed:
                self._strikes[result.job.id] += 1
                if self._strikes[result.job.id] < MAX_STRIKES:
                    keep.append(result)
                    continue
                self._forget([result])
                self.stats["dropped"] += 1
                log.error(
                    "worker %s: dropping the result of job %s after %d failed writes (%s: %s); "
                    "its lease will run out and the job will be tried again",
                    self.worker_id,
                    result.job.id,
                    MAX_STRIKES,
                    type(exc).__name__,
                    exc,
                )
        # failed ones go to the back, so the next try starts with the others
        self.results = self.results + keep
        if not isolated:
            self._delay_s = min(RETRY_CAP_S, max(RETRY_FIRST_S, self._delay_s * 2))
            self._next_try = self._monotonic() + self._delay_s
            self.errors.failed(exc)

    def _settle(self, batch: list[Result], written: set[uuid.UUID]) -> None:
        if batch:
            self._delay_s = 0.0
            self._next_try = 0.0
            self.errors.recovered()
        self._forget(batch)
        lost = len(batch) - len([r for r in batch if r.job.id in written])
        if lost:
            self.stats["fenced"] += lost
            log.warning(
                "worker %s: %d results refused: their lease had expired", self.worker_id, lost
            )

    def _forget(self, done: list[Result]) -> None:
        for result in done:
            self.tokens[result.job.locked_by] -= 1
            self._strikes.pop(result.job.id, None)
        self.tokens += Counter()  # drop zero counts
