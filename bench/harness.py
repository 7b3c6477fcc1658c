"""What the benchmarks share: fresh databases, the sample message, worker processes.

- :class:`FreshDatabase`: SQLite in a temporary directory, or a new PostgreSQL
  database ``postroom_bench_<random>`` created beside the one a server URL names
  (and dropped at the end), migrated, with an SMTP provider pointing at the sink.
- :func:`request_for`: the benchmark message, about 2 KB of text and HTML for one
  recipient, as a camelCase ``EmailRequest``.
- :class:`WorkerPool`: ``postroom worker`` subprocesses that can be killed,
  restarted and stopped, each logging to its own file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast, get_args

from sqlalchemy import Table, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from postroom.app import Postroom
from postroom.config import Settings
from postroom.db.models import EmailJob, EmailProvider
from postroom.gcpause import quiet_collector
from postroom.queue.jobs import Outcome
from postroom.queue.worker import Worker

BENCH_DIR = Path(__file__).resolve().parent
#: the PostgreSQL server the test suite uses; a benchmark uses it when no URL is given
PG_ENV = "POSTROOM_TEST_DATABASE_URL"
FINAL_STATES = ("completed", "failed")

jobs_t = cast(Table, EmailJob.__table__)
providers_t = cast(Table, EmailProvider.__table__)

_T0 = time.monotonic()


def log(message: str) -> None:
    """One progress line, with the seconds since the benchmark started."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", flush=True)


class Ticker:
    """Calls ``report`` at most every ``every_s`` seconds."""

    def __init__(self, every_s: float = 2.0) -> None:
        self.every_s = every_s
        self._last = time.monotonic()

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            return True
        return False


# -- the message ----------------------------------------------------------------------

SENDER = {"email": "orders@shop.example.com", "name": "Example Shop"}
RECIPIENT_DOMAIN = "example.net"
SUBJECT_PREFIX = "Your order #"
SUBJECT_SUFFIX = " has shipped"

_ITEMS = [
    ("Stainless steel water bottle, 750 ml", "1", "24.90"),
    ("Merino wool hiking socks (2 pairs)", "2", "31.80"),
    ("Trail running cap, grey", "1", "19.50"),
    ("Collapsible camping cup", "3", "26.70"),
]

TEXT = "\n".join(
    [
        "Hello,",
        "",
        "Good news: your order has left our warehouse and is on its way to you.",
        "The parcel is handed to the carrier today; tracking details follow below.",
        "",
        *[f"  {qty} x {name:<40} EUR {price:>7}" for name, qty, price in _ITEMS],
        "",
        "  Shipping                                   EUR    4.90",
        "  Total                                      EUR  107.80",
        "",
        "Carrier: Example Parcel Service, tracking number EPS-4471-9920-1185.",
        "Expected delivery: two to three working days.",
        "",
        "You can follow the parcel and change the delivery date on our website:",
        "https://shop.example.com/orders/track",
        "",
        "If anything is missing or damaged, reply to this message within 30 days",
        "and we will replace it or refund you, whichever you prefer.",
        "",
        "Thank you for shopping with us.",
        "Example Shop customer service",
    ]
)

HTML = "".join(
    [
        '<!doctype html><html><body style="font-family: sans-serif; color: #222">',
        "<p>Hello,</p>",
        "<p>Good news: your order has left our warehouse and is on its way to you. ",
        "The parcel is handed to the carrier today; tracking details follow below.</p>",
        '<table cellpadding="4" style="border-collapse: collapse">',
        *[
            f'<tr><td>{qty} &times;</td><td>{name}</td><td align="right">EUR {price}</td></tr>'
            for name, qty, price in _ITEMS
        ],
        '<tr><td></td><td>Shipping</td><td align="right">EUR 4.90</td></tr>',
        '<tr><td></td><td><b>Total</b></td><td align="right"><b>EUR 107.80</b></td></tr>',
        "</table>",
        "<p>Carrier: Example Parcel Service, tracking number ",
        "<code>EPS-4471-9920-1185</code>. Expected delivery: two to three working days.</p>",
        '<p><a href="https://shop.example.com/orders/track">Follow your parcel</a></p>',
        "<p>If anything is missing or damaged, reply to this message within 30 days ",
        "and we will replace it or refund you, whichever you prefer.</p>",
        "<p>Thank you for shopping with us.<br>Example Shop customer service</p>",
        "</body></html>",
    ]
)


def subject_for(i: int) -> str:
    return f"{SUBJECT_PREFIX}{i:06d}{SUBJECT_SUFFIX}"


def recipient_for(i: int) -> str:
    return f"user{i}@{RECIPIENT_DOMAIN}"


def request_for(i: int) -> dict[str, Any]:
    """The ``i``-th benchmark request (camelCase, as the API takes it)."""
    return {
        "from": SENDER,
        "to": [{"email": recipient_for(i)}],
        "subject": subject_for(i),
        "content": {"text": TEXT, "html": HTML},
        "type": "transactional",
    }


def content_fields() -> dict[str, Any]:
    """The message's fields for the peers (Nodemailer, django-post_office)."""
    return {
        "from": SENDER,
        "subjectPrefix": SUBJECT_PREFIX,
        "subjectSuffix": SUBJECT_SUFFIX,
        "recipientPrefix": "user",
        "recipientDomain": RECIPIENT_DOMAIN,
        "text": TEXT,
        "html": HTML,
    }


# -- databases ------------------------------------------------------------------------


def server_urls(given: Iterable[str] | None) -> list[str]:
    """PostgreSQL server URLs to benchmark: the given ones, else POSTROOM_TEST_DATABASE_URL."""
    urls = list(given or ())
    if not urls and os.environ.get(PG_ENV):
        urls.append(os.environ[PG_ENV])
    return urls


class FreshDatabase:
    """A new, empty, migrated database and a data directory, removed by :meth:`drop`."""

    def __init__(self, server_url: str | None = None, *, prefix: str = "postroom-bench-") -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.data_dir = self.root / "data"
        self.data_dir.mkdir()
        self.server_url = server_url
        self.name: str | None = None
        self._admin_url: str | None = None
        if server_url is None:
            self.kind = "sqlite"
            self.url = f"sqlite+aiosqlite:///{self.data_dir / 'postroom.db'}"
        else:
            base = make_url(Settings(database_url=server_url).effective_database_url)
            if not base.drivername.startswith("postgresql"):
                raise SystemExit(f"not a PostgreSQL URL: {server_url}")
            self.kind = "postgresql"
            self.name = f"postroom_bench_{uuid.uuid4().hex[:10]}"
            self._admin_url = base.render_as_string(hide_password=False)
            self.url = base.set(database=self.name).render_as_string(hide_password=False)

    @property
    def label(self) -> str:
        return self.kind

    def settings(self, **overrides: Any) -> Settings:
        return Settings(database_url=self.url, data_dir=self.data_dir, **overrides)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a ``postroom`` subprocess on this database."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
        env.update(
            POSTROOM_DATABASE_URL=self.url,
            POSTROOM_DATA_DIR=str(self.data_dir),
            POSTROOM_LOG_LEVEL="WARNING",
        )
        env.update(extra)
        return env

    async def _admin(self, sql: str) -> None:
        assert self._admin_url is not None
        engine = create_async_engine(self._admin_url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(sql))
        finally:
            await engine.dispose()

    async def create(self, smtp_config: dict[str, Any] | None = None) -> None:
        """Create (PostgreSQL), migrate, and route mail to ``smtp_config``'s server."""
        if self.name is not None:
            await self._admin(f'CREATE DATABASE "{self.name}"')
        pr = Postroom(self.settings())
        try:
            await pr.start(migrate_schema=True)
            if smtp_config is not None:
                await use_smtp_provider(pr.engine, smtp_config)
        finally:
            await pr.aclose()

    async def drop(self) -> None:
        try:
            if self.name is not None:
                await self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def poll_engine(self) -> AsyncEngine:
        """A plain engine for reading progress (no immediate transactions on SQLite)."""
        return create_async_engine(self.url, pool_size=1, max_overflow=0)


def smtp_config(port: int, *, max_connections: int, max_messages: int) -> dict[str, Any]:
    """The SMTP provider's config for the local sink (no TLS: smtp-sink offers none)."""
    return {
        "host": "127.0.0.1",
        "port": port,
        "secure": False,
        "requireTLS": False,
        "ignoreTLS": True,
        "maxConnections": max_connections,
        "maxMessages": max_messages,
    }


async def use_smtp_provider(engine: AsyncEngine, config: dict[str, Any]) -> None:
    """Disable the development file provider and add an SMTP provider row."""
    await use_provider(engine, type="smtp", config=config)


async def use_provider(
    engine: AsyncEngine,
    *,
    type: str,
    config: dict[str, Any],
    authentication: dict[str, Any] | None = None,
) -> None:
    """Disable the development file provider and add a provider row (``authentication``
    as stored: encrypted with the instance's key where it holds secrets)."""
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            update(providers_t).where(providers_t.c.type == "file").values(enabled=False)
        )
        await conn.execute(
            insert(providers_t).values(
                id=uuid.uuid4(),
                name=f"bench {type}",
                type=type,
                enabled=True,
                priority=100,
                config=config,
                authentication=authentication or {},
                limits={},
                encryption={},
                monitoring={},
                created_at=now,
                updated_at=now,
            )
        )


async def job_counts(engine: AsyncEngine) -> Counter[str]:
    async with engine.connect() as conn:
        rows = (
            await conn.execute(select(jobs_t.c.status, func.count()).group_by(jobs_t.c.status))
        ).all()
    return Counter({str(status): int(n) for status, n in rows})


async def until(count: Callable[[], int], n: int, what: str, *, stalled_s: float = 60.0) -> None:
    """Wait until ``count()`` reaches ``n``; fail when it stops moving for ``stalled_s``."""
    last, since = -1, time.monotonic()
    while (done := count()) < n:
        if done != last:
            last, since = done, time.monotonic()
        elif time.monotonic() - since > stalled_s:
            raise RuntimeError(f"{what} stalled at {done:,} of {n:,}")
        await asyncio.sleep(0.01)


async def until_recorded(worker: Worker, n: int) -> None:
    """Wait until ``worker`` has an outcome for ``n`` jobs (its counters, not the
    database: polling that would add to what is measured)."""
    await until(lambda: sum(worker.stats[o] for o in get_args(Outcome)), n, "the worker's jobs")


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[None]:
    """``worker.run()``, the loop of ``postroom worker``, for the duration of the block;
    at its end the worker stops gracefully (last results written back)."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def measure_delivery(
    pr: Postroom, n: int, *, then: Callable[[], Awaitable[None]] | None = None
) -> dict[str, Any]:
    """A worker of ``pr`` running the loop of ``postroom worker`` until it has an outcome
    for ``n`` queued jobs, then ``then()`` (the worker still running); closes ``pr``.

    Returns ``rate`` (delivered/s, first claim to last completion, from the job rows),
    ``mail_s`` and ``all_s`` (from the start to the outcomes, and to the end of
    ``then``) and the CPU a message of this process (``cpu_us``, SQLite's work
    included) and of PostgreSQL's backends (``db_cpu_us``), to the end of ``then``.
    """
    worker = pr.worker()
    quiet_collector()  # as `postroom worker` does once started
    pg_before = await backend_cpu(pr)
    cpu0, t0 = time.process_time(), time.perf_counter()
    async with running(worker):
        await until_recorded(worker, n)
        mail_s = time.perf_counter() - t0
        if then is not None:
            await then()
        all_s = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    spent = db_cpu(pg_before, await backend_cpu(pr))
    counts = await job_counts(pr.engine)
    first, last = await delivery_window(pr.engine)
    await pr.aclose()
    assert counts["completed"] == n, counts
    assert first is not None and last is not None
    return {
        "rate": n / max(last - first, 1e-9),
        "mail_s": mail_s,
        "all_s": all_s,
        "cpu_us": cpu / n * 1e6,
        "db_cpu_us": spent / n * 1e6,
    }


def short_messages(n: int) -> dict[str, Any]:
    """A ``POST /bulk`` of ``n`` recipients of one short transactional text message."""
    return {
        "from": {"email": "app@example.com", "name": "Example App"},
        "type": "transactional",
        "subject": "Your sign-in code",
        "content": {"text": "Your code is 123456. It expires in ten minutes."},
        "recipients": [{"email": f"user{i}@example.net"} for i in range(n)],
    }


def add_database_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", default=None, help=f"PostgreSQL (default: ${PG_ENV})")
    parser.add_argument("--no-sqlite", action="store_true")


def databases(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str | None]:
    """The servers to run on: None for SQLite, then the PostgreSQL URL if any."""
    pg = args.database_url or os.environ.get(PG_ENV)
    servers: list[str | None] = ([] if args.no_sqlite else [None]) + ([pg] if pg else [])
    if not servers:
        parser.error("--no-sqlite needs --database-url")
    return servers


async def delivery_window(engine: AsyncEngine) -> tuple[float | None, float | None]:
    """(first claim, last completion) as Unix timestamps, from the job rows."""
    async with engine.connect() as conn:
        first, last = (
            await conn.execute(
                select(func.min(jobs_t.c.processed_at), func.max(jobs_t.c.completed_at))
            )
        ).one()
    return _timestamp(first), _timestamp(last)


def _timestamp(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite aggregates bypass the column type
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


async def error_sample(engine: AsyncEngine, limit: int = 3) -> list[str]:
    """A few error codes and messages of failed or retried jobs, for diagnosis."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(jobs_t.c.status, jobs_t.c.last_error_code, jobs_t.c.error)
                .where(jobs_t.c.last_error_code.is_not(None))
                .limit(limit)
            )
        ).all()
    return [f"{r.status}: {r.last_error_code}: {(r.error or {}).get('message')}" for r in rows]


async def enqueue_facade(
    pr: Postroom,
    indexes: range,
    *,
    concurrency: int,
    on_sent: Callable[[str], None] | None = None,
) -> float:
    """Send ``request_for(i)`` for every index through the facade; returns seconds."""
    it = iter(indexes)
    ticker = Ticker()
    done = 0

    async def lane() -> None:
        nonlocal done
        for i in it:
            result = await pr.send(request_for(i))
            if on_sent is not None:
                on_sent(result.id)
            done += 1
            if ticker.due():
                log(f"  facade: {done}/{len(indexes)} enqueued")

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return time.perf_counter() - start


# -- processes ------------------------------------------------------------------------


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of the live processes ``pids`` (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def cpu_idle() -> tuple[int, int]:
    """Idle and all CPU ticks of the whole machine so far, every CPU (/proc/stat)."""
    line = Path("/proc/stat").read_text().split("\n", 1)[0]
    ticks = [int(x) for x in line.split()[1:9]]  # user .. steal (guest is inside user)
    return ticks[3] + ticks[4], sum(ticks)  # idle + iowait


def idle_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of the machine's CPU time that was idle between two ``cpu_idle()``."""
    return (after[0] - before[0]) / max(after[1] - before[1], 1)


def run_queue_seconds(pid: int) -> float | None:
    """How long ``pid``'s main thread has waited, runnable, for a CPU so far
    (/proc/<pid>/schedstat; None where the kernel does not keep it)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


async def backend_cpu(pr: Postroom) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving this database (none on
    SQLite, which runs in this process and is counted in its CPU time)."""
    if pr.engine.dialect.name != "postgresql":
        return {}
    async with pr.engine.connect() as conn:
        pids = (
            await conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            )
        ).scalars()
        return {pid: cpu_seconds([pid]) for pid in pids}


def db_cpu(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds the backends spent between two ``backend_cpu`` readings."""
    return sum(v - before.get(pid, 0.0) for pid, v in after.items())


def pids_named(name: str) -> list[int]:
    """Processes whose command name is ``name`` (e.g. every ``postgres`` backend)."""
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                pids.append(int(comm.parent.name))
        except OSError:
            continue
    return pids


def postroom_command() -> list[str]:
    """The ``postroom`` CLI of the running interpreter's environment."""
    script = Path(sys.executable).with_name("postroom")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from postroom.cli import main; main()"]


def stop_process(
    proc: subprocess.Popen[bytes], *, timeout_s: float = 30.0, signalled: bool = False
) -> int:
    """SIGTERM (unless ``signalled``), wait up to ``timeout_s``, then SIGKILL; returns the
    exit status. One SIGTERM only: a second one could hit the process after its handler
    is gone and kill it mid-shutdown."""
    if proc.poll() is None:
        if not signalled:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)
    return int(proc.returncode)


class WorkerPool:
    """``postroom worker`` processes on one database, each logging to a file."""

    READY = "running; stop with"

    def __init__(self, db: FreshDatabase, env: dict[str, str], *, extra_args: list[str]) -> None:
        self.db = db
        self.env = env
        self.extra_args = extra_args
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.started: list[float] = []
        self.spawned = 0

    def _spawn(self) -> tuple[subprocess.Popen[bytes], Path]:
        self.spawned += 1
        path = self.db.root / f"worker-{self.spawned}.log"
        with open(path, "wb") as out:
            proc = subprocess.Popen(
                [*postroom_command(), "worker", *self.extra_args],
                env=self.env,
                cwd=self.db.root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return proc, path

    def start(self, count: int) -> None:
        for _ in range(count):
            proc, path = self._spawn()
            self.procs.append(proc)
            self.logs.append(path)
            self.started.append(time.monotonic())

    def is_ready(self, index: int) -> bool:
        try:
            return self.READY in self.logs[index].read_text(errors="replace")
        except OSError:
            return False

    def wait_ready(self, *, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {proc.returncode}: {self.tail(i)}")
            if all(self.is_ready(i) for i in range(len(self.procs))):
                return
            time.sleep(0.05)
        raise TimeoutError(f"workers not ready within {timeout_s:g}s")

    def kill(self, index: int) -> None:
        """SIGKILL worker ``index`` and start a new one in its place."""
        proc = self.procs[index]
        proc.kill()
        proc.wait(timeout=30)
        new, path = self._spawn()
        self.procs[index] = new
        self.logs[index] = path
        self.started[index] = time.monotonic()

    def dead(self) -> list[int]:
        return [i for i, p in enumerate(self.procs) if p.poll() is not None]

    def tail(self, index: int, chars: int = 2000) -> str:
        try:
            return self.logs[index].read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, *, timeout_s: float = 30.0) -> list[int]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        return [stop_process(p, timeout_s=timeout_s, signalled=True) for p in self.procs]

    def log_text(self) -> str:
        parts = []
        for path in sorted(self.db.root.glob("worker-*.log")):
            parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)
