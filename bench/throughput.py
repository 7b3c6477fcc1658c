"""Enqueue and delivery throughput into a local smtp-sink, with a raw-SMTP baseline.

::

    python bench/throughput.py                      # SQLite (+ PostgreSQL if
                                                    # POSTROOM_TEST_DATABASE_URL is set)
    python bench/throughput.py --messages 10000 \\
        --database-url postgresql://postgres@127.0.0.1:5432/test --peers

For each database (SQLite always, one worker; PostgreSQL for each ``--workers``
count) on a FRESH database:

1. enqueue N messages through the Python facade (``Postroom.send``), then
2. N more through the HTTP API (``postroom serve --no-workers``, an API key from
   ``postroom keys create``, ``--http-concurrency`` requests in flight), then
3. start the ``postroom worker`` processes and time them until every job is
   completed: delivered/s = jobs / (last completion - first claim). Process
   start-up (about a second of imports) is printed but not counted.

The baseline is a raw aiosmtplib client sending the same pre-rendered message
bytes over ``--baseline-connections`` connections: the ceiling for one Python
process on this sink. ``--peers`` adds Nodemailer's pooled transport and
django-post_office (``send_queued_mail --processes 2``, BATCH_SIZE 1000, SQLite)
on the same sink and message. ``--profile DIR`` attaches py-spy to the workers
and prints where their time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
from harness import (
    BENCH_DIR,
    FINAL_STATES,
    SENDER,
    FreshDatabase,
    Ticker,
    WorkerPool,
    content_fields,
    cpu_seconds,
    delivery_window,
    enqueue_facade,
    error_sample,
    job_counts,
    log,
    pids_named,
    postroom_command,
    recipient_for,
    request_for,
    server_urls,
    smtp_config,
    stop_process,
)
from httpload import KeepAliveClient
from sink import Sink, free_port
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.app import Postroom
from postroom.compose.message import compose


@dataclass
class Row:
    name: str
    workers: str = ""
    enqueue_facade: float | None = None
    enqueue_http: float | None = None
    delivered: float | None = None
    #: CPU milliseconds per delivered message: the sending processes, and PostgreSQL
    cpu_ms: float | None = None
    db_cpu_ms: float | None = None
    #: the same for only this database's PostgreSQL backends (see ``backend_pids``)
    backends_cpu_ms: float | None = None
    #: CPU milliseconds per HTTP request: the API processes, this database's backends
    api_cpu_ms: float | None = None
    api_backends_cpu_ms: float | None = None
    note: str = ""


def rate(count: int, seconds: float | None) -> float | None:
    if not seconds or seconds <= 0:
        return None
    return count / seconds


# -- baseline --------------------------------------------------------------------------


async def baseline(port: int, messages: int, connections: int) -> Row:
    """Raw aiosmtplib: one pre-rendered message, sent ``messages`` times."""
    request = request_for(0)
    stored = {**request, "to": [{"email": recipient_for(0), "type": "to"}]}
    mime = compose(
        str(uuid.uuid4()), stored, now=datetime.now(UTC), message_id_domain="postroom.localhost"
    ).mime
    todo = iter(range(messages))
    sent = 0

    async def lane() -> None:
        nonlocal sent
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=30)
        await smtp.connect()
        try:
            for _ in todo:
                await smtp.sendmail(SENDER["email"], [recipient_for(0)], mime)
                sent += 1
        finally:
            await smtp.quit()

    start, cpu_start = time.perf_counter(), time.process_time()
    await asyncio.gather(*(lane() for _ in range(connections)))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    log(f"baseline: {sent} messages in {seconds:.1f}s over {connections} connections")
    return Row(
        name="baseline (raw aiosmtplib)",
        workers=f"{connections} conns",
        delivered=sent / seconds,
        cpu_ms=1000 * cpu / sent,
        note="pre-rendered bytes",
    )


# -- HTTP enqueue ----------------------------------------------------------------------


def create_key(db: FreshDatabase) -> str:
    out = subprocess.run(
        [*postroom_command(), "keys", "create", "--scopes", "admin", "--name", "bench"],
        env=db.env(),
        cwd=db.root,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


async def wait_healthy(client: httpx.AsyncClient, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"postroom serve exited with {proc.returncode}")
        try:
            response = await client.get("/healthz")
            if response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise TimeoutError("postroom serve did not become healthy within 60s")


async def enqueue_http(
    db: FreshDatabase, indexes: range, concurrency: int, processes: int = 1, client: str = "wrk"
) -> tuple[float, int, Counter[str], tuple[float, float]]:
    """POST every request to a ``postroom serve --no-workers --processes N``; returns
    (seconds, 202s, failures, CPU ms per request of the API processes and of the backends).

    ``client``: ``wrk`` (``wrk_post.lua``: the same body every time) or ``python``
    (``httpload.py``, in this process: each request its own body). A failed request
    is counted, not retried: without an Idempotency-Key a retry could enqueue the
    message twice. Afterwards the jobs in the database must number the 202s.
    """
    key = create_key(db)
    port = free_port()
    log_path = db.root / "serve.log"
    command = [*postroom_command(), "serve", "--no-workers", "--host", "127.0.0.1"]
    if processes > 1:  # (so that --api-processes 1 also measures versions without it)
        command += ["--processes", str(processes)]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [*command, "--port", str(port)],
            env=db.env(),
            cwd=db.root,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    failures: Counter[str] = Counter()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as probe:
            await wait_healthy(probe, proc)
        serving = [proc.pid, *children_of(proc.pid)]
        engine = db.poll_engine()
        try:
            stored_before = sum((await job_counts(engine)).values())
            backends = await backend_pids(engine) or []
            cpu_before = (
                cpu_seconds(serving),
                cpu_seconds(pids_named("postgres")),
                cpu_seconds(backends),
            )
            if client == "wrk":
                body = db.root / "body.json"
                body.write_bytes(json.dumps(request_for(indexes[0])).encode())
                drive = drive_wrk(port, key, body, len(indexes), concurrency, failures)
            else:
                drive = drive_python(port, key, indexes, concurrency, failures, proc)
            seconds, client_cpu, accepted = await drive
            api_cpu = cpu_seconds(serving) - cpu_before[0]
            pg_cpu = cpu_seconds(pids_named("postgres")) - cpu_before[1]
            backends = sorted({*backends, *(await backend_pids(engine) or [])})
            own_cpu = cpu_seconds(backends) - cpu_before[2]
            stored = sum((await job_counts(engine)).values()) - stored_before
        finally:
            await engine.dispose()
        n = max(len(indexes), 1)
        log(
            f"  HTTP CPU: API processes {1000 * api_cpu / n:.2f} ms/request, "
            f"postgres {1000 * pg_cpu / n:.2f} ms/request (its backends "
            f"{1000 * own_cpu / n:.2f}; {processes} API processes); load generator "
            f"({client}) {1000 * client_cpu / n:.2f} ms/request"
        )
        log(f"  HTTP: {accepted} answered 202, {stored} jobs stored")
        if stored != accepted:
            failures[f"{stored} jobs stored for {accepted} 202s"] += 1
    finally:
        status = stop_process(proc)
        if failures:
            log(f"  serve exited {status}; its log ends with:\n{log_path.read_text()[-3000:]}")
    return seconds, accepted, failures, (1000 * api_cpu / n, 1000 * own_cpu / n)


async def drive_wrk(
    port: int, key: str, body: Path, total: int, concurrency: int, failures: Counter[str]
) -> tuple[float, float, int]:
    """``total`` POSTs of ``body`` by ``wrk -t1``; (seconds, wrk's CPU seconds, 202s).

    Timed from starting wrk to its "done" line (the last response; wrk's start-up of a
    few milliseconds included); wrk's CPU from the children's resource usage."""
    budget = 60 + total / 100  # seconds: stops a run that lost requests to socket errors
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    wrk = await asyncio.create_subprocess_exec(
        "wrk", "-t1", f"-c{concurrency}", f"-d{int(budget)}s",
        "-s", str(BENCH_DIR / "wrk_post.lua"), f"http://127.0.0.1:{port}/api/system/email/send",
        "--", str(body), key, str(total),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert wrk.stdout is not None
    seconds: float | None = None
    lines: list[str] = []
    async for raw in wrk.stdout:
        line = raw.decode(errors="replace").strip()
        lines.append(line)
        if line.startswith("done ") and seconds is None:
            seconds = time.perf_counter() - start
            wrk.send_signal(signal.SIGINT)
    await wrk.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    if seconds is None:
        seconds = time.perf_counter() - start
        log(f"  wrk did not see every response: {' | '.join(lines)[-1500:]}")
    codes: Counter[str] = Counter()
    for line in lines:
        kind, _, rest = line.partition(" ")
        pairs = [p.partition("=") for p in rest.split()]
        if kind == "codes":
            codes = Counter({name: int(n) for name, _, n in pairs})
        elif kind == "errors":
            failures.update({f"socket {name}": int(n) for name, _, n in pairs if int(n)})
    for code, n in codes.items():
        if code != "202":
            failures[f"HTTP {code}"] += n
    if unanswered := total - sum(codes.values()):
        failures["unanswered"] += unanswered
    return seconds, cpu, codes["202"]


async def drive_python(
    port: int,
    key: str,
    indexes: range,
    concurrency: int,
    failures: Counter[str],
    proc: subprocess.Popen[bytes],
) -> tuple[float, float, int]:
    """Every request of ``indexes`` over ``httpload.py`` connections in this process;
    (seconds, this process's CPU seconds, 202s)."""
    bodies = iter([json.dumps(request_for(i)).encode() for i in indexes])
    done = accepted = 0
    ticker = Ticker()

    def failed(kind: str, detail: str) -> None:
        failures[kind] += 1
        if sum(failures.values()) <= 3:
            state = "running" if proc.poll() is None else f"exited {proc.returncode}"
            log(f"  HTTP request failed ({kind}, server {state}): {detail[:300]}")

    async def lane() -> None:
        nonlocal done, accepted
        conn = KeepAliveClient("127.0.0.1", port, {"Authorization": f"Bearer {key}"})
        try:
            for body in bodies:
                try:
                    status, payload = await conn.post("/api/system/email/send", body)
                except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
                    failed(type(exc).__name__, repr(exc))
                    await conn.aclose()
                else:
                    if status == 202:
                        accepted += 1
                    else:
                        failed(f"HTTP {status}", payload.decode(errors="replace"))
                done += 1
                if ticker.due():
                    log(f"  HTTP: {done}/{len(indexes)} enqueued")
        finally:
            await conn.aclose()

    start, cpu_start = time.perf_counter(), time.process_time()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return time.perf_counter() - start, time.process_time() - cpu_start, accepted


def children_of(pid: int) -> list[int]:
    """``serve --processes N`` forks its API processes: CPU is counted over all of them."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


# -- delivery --------------------------------------------------------------------------


async def deliver(
    db: FreshDatabase, workers: int, total: int, args: argparse.Namespace, sink: Sink, row: Row
) -> str:
    """Run ``workers`` worker processes until ``total`` jobs are final; fills in ``row``."""
    env = db.env(
        POSTROOM_WORKER__CONCURRENCY=str(args.concurrency),
        POSTROOM_WORKER__BATCH_SIZE=str(args.batch_size),
    )
    pool = WorkerPool(db, env, extra_args=[])
    engine = db.poll_engine()
    received_before = sink.received()
    spawned = time.time()
    pool.start(workers)
    profilers = attach_profilers(pool, args.profile, db.label, workers) if args.profile else []
    note = ""
    try:
        pool.wait_ready()
        log(f"  {workers} worker(s) ready after {time.time() - spawned:.1f}s")
        cpu = CpuMeter(pool, sink, await backend_pids(engine))
        pg_before = await pg_activity(engine)
        ticker = Ticker()
        deadline = time.monotonic() + args.timeout
        counts: Counter[str] = Counter()
        polled = 0.0
        while time.monotonic() < deadline:
            # counting the jobs by status scans the table: it would add PostgreSQL CPU
            # to every message, so the database is asked every 2 s, or once the sink
            # has every message and only the write-backs are left
            if sink.received() - received_before >= total or time.monotonic() - polled >= 2:
                counts, polled = await job_counts(engine), time.monotonic()
                if sum(counts[s] for s in FINAL_STATES) >= total:
                    break
            if dead := pool.dead():
                raise RuntimeError(f"worker {dead[0]} exited: {pool.tail(dead[0])}")
            if ticker.due():
                log(f"  jobs: {dict(sorted(counts.items()))}")
            await asyncio.sleep(0.25)
        else:
            note = f"timeout after {args.timeout:g}s"
        cpu.stop(await backend_pids(engine))
        await asyncio.sleep(1.0)  # PostgreSQL publishes its statistics within a second
        pg_after = await pg_activity(engine)
        first_claim, last_done = await delivery_window(engine)
        if counts["failed"]:
            note = f"{counts['failed']} failed"
        for line in await error_sample(engine):
            log(f"  note: {line}")
    finally:
        statuses = pool.stop()
        await engine.dispose()
        for proc in profilers:
            stop_process(proc, timeout_s=60)
    completed = counts["completed"]
    received = sink.received() - received_before
    log(f"  workers stopped {statuses}; sink received {received} for {completed} completed jobs")
    if args.profile:
        report_profiles(args.profile, f"{db.label}-{workers}w")
    if first_claim is None or last_done is None:
        return note or "nothing delivered"
    seconds = last_done - first_claim
    log(
        f"  delivered {completed} in {seconds:.1f}s from the first claim "
        f"({last_done - spawned:.1f}s from spawning the workers)"
    )
    log(f"  {cpu.summary(completed)}")
    if pg_before and pg_after and completed:
        per = {k: (pg_after[k] - pg_before[k]) / completed for k in pg_before}
        log("  PostgreSQL per message: " + ", ".join(f"{k} {v:.2f}" for k, v in per.items()))
    row.delivered = rate(completed, seconds)
    row.cpu_ms = cpu.ms_per_message("workers", completed)
    if db.kind == "postgresql":
        row.db_cpu_ms = cpu.ms_per_message("postgres", completed)
        row.backends_cpu_ms = cpu.ms_per_message("its backends", completed)
    return note


async def backend_pids(engine: AsyncEngine) -> list[int] | None:
    """PostgreSQL's server processes for this database (but the asking one), whose CPU is
    this run's alone: ``postgres`` CPU also counts other databases' work on a shared
    server (though not the shared WAL writer and checkpointer, which this does not)."""
    if engine.dialect.name != "postgresql":
        return None
    async with engine.connect() as conn:
        query = text(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [int(pid) for pid in (await conn.execute(query)).scalars()]


async def pg_activity(engine: AsyncEngine) -> dict[str, int] | None:
    """This database's transaction and row counters (PostgreSQL only)."""
    if engine.dialect.name != "postgresql":
        return None
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_fetched "
                    "FROM pg_stat_database WHERE datname = current_database()"
                )
            )
        ).one()
    names = ("commits", "rollbacks", "rows inserted", "rows updated", "rows fetched")
    return {name: int(value) for name, value in zip(names, row, strict=True)}


class CpuMeter:
    """CPU seconds used by the workers, PostgreSQL and smtp-sink between start and stop."""

    def __init__(self, pool: WorkerPool, sink: Sink, backends: list[int] | None) -> None:
        self.pool = pool
        self.sink_pids = [sink.pid] if sink.pid else []
        self.backends = backends
        self.started = time.monotonic()
        self.before = self._sample()
        self.after = self.before
        self.wall = 0.0

    def _sample(self) -> dict[str, float]:
        sample = {
            "workers": cpu_seconds(p.pid for p in self.pool.procs),
            "postgres": cpu_seconds(pids_named("postgres")),
            "smtp-sink": cpu_seconds(self.sink_pids),
        }
        if self.backends is not None:  # PostgreSQL
            sample["its backends"] = cpu_seconds(self.backends)
        return sample

    def stop(self, backends: list[int] | None) -> None:
        """``backends``: this database's backends now (ones opened meanwhile count too)."""
        if self.backends is not None and backends is not None:
            self.backends = sorted({*self.backends, *backends})
        self.after = self._sample()
        self.wall = time.monotonic() - self.started

    def ms_per_message(self, what: str, messages: int) -> float:
        return 1000 * (self.after[what] - self.before[what]) / max(messages, 1)

    def summary(self, messages: int) -> str:
        used = {k: self.after[k] - self.before[k] for k in self.before}
        parts = ", ".join(
            f"{k} {v:.1f}s ({1000 * v / max(messages, 1):.2f} ms/msg)" for k, v in used.items()
        )
        cores = os.cpu_count() or 1
        return f"CPU while delivering: {parts}; available {cores} x {self.wall:.1f}s"


# -- profiling -------------------------------------------------------------------------


def attach_profilers(
    pool: WorkerPool, directory: Path, label: str, workers: int
) -> list[subprocess.Popen[bytes]]:
    """Attach ``py-spy record`` (raw collapsed stacks, idle included) to each worker."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    directory.mkdir(parents=True, exist_ok=True)
    procs = []
    for i, proc in enumerate(pool.procs):
        out = directory / f"{label}-{workers}w-worker{i}.txt"
        procs.append(
            subprocess.Popen(
                [
                    str(spy),
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--format",
                    "raw",
                    "--idle",
                    "--nonblocking",
                    "--rate",
                    "200",
                    "--output",
                    str(out),
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return procs


def _frame(raw: str) -> str:
    """``func (path/to/module.py:123)`` -> ``func (module.py)``."""
    name, _, where = raw.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(Path(file).parts[-2:])})"


#: where a sample of the worker's event loop is counted: the first category that matches
CATEGORIES = (
    ("start-up (imports)", ("<frozen importlib",)),
    ("compose (MIME)", ("postroom/compose/",)),
    ("SMTP (aiosmtplib, socket writes)", ("aiosmtplib/", "postroom/providers/smtp.py")),
    ("database (SQLAlchemy, driver)", ("sqlalchemy/", "asyncpg/", "aiosqlite/")),
    ("worker and routing", ("postroom/queue/", "postroom/providers/")),
)


def _category(stack: str, leaf: str) -> str:
    if leaf.startswith("EpollSelector.select"):
        return "idle (waiting in epoll)"
    for name, markers in CATEGORIES:
        if any(m in stack for m in markers):
            return name
    return "asyncio and other"


def report_profiles(directory: Path, prefix: str, top: int = 20) -> None:
    """Print where the workers' event loops spent their time, from py-spy's raw stacks."""
    own: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    total = 0
    for path in directory.glob(f"{prefix}-worker*.txt"):
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            if "threading.py" in stack:  # thread-pool threads; only the event loop counts
                continue
            frames = [_frame(f) for f in stack.split(";") if " (" in f]
            if not frames:
                continue
            n = int(count)
            total += n
            own[frames[-1]] += n
            categories[_category(stack, frames[-1])] += n
    if not total:
        log(f"  profile {prefix}: no samples (py-spy needs ptrace permission)")
        return
    print(f"\nprofile {prefix}: {total} samples of the workers' event-loop threads")
    for name, n in categories.most_common():
        print(f"  {name:<64} {100 * n / total:5.1f}%")
    print("  functions by own time:")
    for frame, n in own.most_common(top):
        print(f"  {frame[:64]:<64} {100 * n / total:5.1f}%")
    print()


# -- one row ---------------------------------------------------------------------------


async def run_row(
    server_url: str | None, workers: int, args: argparse.Namespace, sink: Sink
) -> Row:
    db = FreshDatabase(server_url)
    row = Row(name=db.label, workers=str(workers))
    log(f"{db.label}, {workers} worker(s): fresh database {db.name or db.url}")
    try:
        config = smtp_config(
            sink.port, max_connections=args.smtp_connections, max_messages=args.smtp_max_messages
        )
        await db.create(config)
        n = args.messages
        pr = Postroom(db.settings())
        await pr.start(migrate_schema=False)
        try:
            seconds = await enqueue_facade(pr, range(n), concurrency=args.enqueue_concurrency)
        finally:
            await pr.aclose()
        row.enqueue_facade = rate(n, seconds)
        log(f"  facade: {n} enqueued in {seconds:.1f}s ({row.enqueue_facade:.0f}/s)")
        notes = []
        if not args.no_http:
            seconds, accepted, failures, cpu = await enqueue_http(
                db, range(n, 2 * n), args.http_concurrency, args.api_processes, args.http_client
            )
            row.api_cpu_ms, row.api_backends_cpu_ms = cpu
            row.enqueue_http = rate(accepted, seconds)
            log(f"  HTTP: {accepted} enqueued in {seconds:.1f}s ({row.enqueue_http:.0f}/s)")
            if failures:
                notes.append("HTTP failures: " + ", ".join(f"{k} {v}" for k, v in failures.items()))
        engine = db.poll_engine()
        try:
            total = sum((await job_counts(engine)).values())
        finally:
            await engine.dispose()
        note = "" if args.no_delivery else await deliver(db, workers, total, args, sink, row)
        row.note = "; ".join([*notes, note] if note else notes)
    finally:
        await db.drop()
    return row


# -- peers -----------------------------------------------------------------------------


def _json_line(out: str) -> dict[str, Any]:
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise RuntimeError(f"no JSON result in: {out[-500:]}")


def nodemailer_peer(sink: Sink, args: argparse.Namespace, content: Path) -> Row:
    if not (BENCH_DIR / "node_modules" / "nodemailer").is_dir():
        log("installing nodemailer into bench/node_modules")
        subprocess.run(
            ["npm", "install", "--prefix", str(BENCH_DIR), "--no-audit", "--no-fund"],
            check=True,
            timeout=300,
        )
    before = sink.received()
    log(f"nodemailer: pool of {args.smtp_connections} connections, {args.messages} messages")
    out = subprocess.run(
        [
            "node",
            str(BENCH_DIR / "nodemailer_bench.js"),
            "--port",
            str(sink.port),
            "--messages",
            str(args.messages),
            "--connections",
            str(args.smtp_connections),
            "--max-messages",
            str(args.smtp_max_messages),
            "--content",
            str(content),
            "--timeout",
            str(int(args.timeout)),
        ],
        capture_output=True,
        text=True,
        timeout=args.timeout + 30,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"nodemailer_bench.js failed: {out.stderr[-1000:]}")
    result = _json_line(out.stdout)
    log(f"  nodemailer: {result}; sink received {sink.received() - before}")
    note = f"{result['errors']} errors" if result["errors"] else ""
    return Row(
        name="nodemailer",
        workers=f"pool {args.smtp_connections}",
        delivered=rate(int(result["sent"]), float(result["seconds"])),
        cpu_ms=1000 * float(result["cpuSeconds"]) / max(int(result["sent"]), 1),
        note=note,
    )


def post_office_python() -> Path:
    venv = BENCH_DIR / ".venv"
    python = venv / "bin" / "python"
    probe = [
        str(python),
        "-c",
        "import django, importlib.util as u; assert u.find_spec('post_office')",
    ]
    if python.exists() and subprocess.run(probe, capture_output=True, timeout=60).returncode == 0:
        return python
    log("creating bench/.venv with Django and django-post_office")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "Django", "django-post_office"],
        check=True,
        timeout=600,
    )
    return python


def post_office_peer(sink: Sink, args: argparse.Namespace, content: Path) -> Row:
    python = post_office_python()
    work = Path(tempfile.mkdtemp(prefix="postroom-bench-post-office-"))
    try:
        base = [
            str(python),
            str(BENCH_DIR / "post_office_project" / "run.py"),
            "--db",
            str(work / "post_office.sqlite3"),
            "--port",
            str(sink.port),
        ]

        def step(*extra: str) -> dict[str, Any]:
            out = subprocess.run(
                [*base, *extra],
                capture_output=True,
                text=True,
                timeout=args.timeout + 30,
                check=False,
            )
            if out.returncode != 0:
                raise RuntimeError(f"post_office {extra[0]} failed: {out.stderr[-1500:]}")
            return _json_line(out.stdout)

        log(f"post_office: enqueue {args.messages} with mail.send(priority='medium')")
        step("migrate")
        enq = step("enqueue", "--messages", str(args.messages), "--content", str(content))
        before = sink.received()
        log("post_office: send_queued_mail --processes 2 (BATCH_SIZE 1000)")
        sent = step("send", "--processes", "2", "--lockfile", str(work / "send"))
        log(f"  post_office: {sent}; sink received {sink.received() - before}")
        note = (
            f"{sent['failed']} failed, {sent['queued']} queued"
            if sent["sent"] < args.messages
            else ""
        )
        return Row(
            name="django-post_office",
            workers="2 processes",
            enqueue_facade=rate(args.messages, float(enq["seconds"])),
            delivered=rate(int(sent["sent"]), float(sent["seconds"])),
            cpu_ms=1000 * float(sent["cpu_seconds"]) / max(int(sent["sent"]), 1),
            note=note,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- report ----------------------------------------------------------------------------


def table(rows: list[Row], baseline_rate: float, api_processes: int) -> str:
    def fmt(value: float | None, digits: int = 0) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    lines = [
        (
            "database / peer",
            "workers",
            "enqueue/s (facade)",
            f"enqueue/s (HTTP, {api_processes} API)",
            "API CPU ms/req",
            "its backends ms/req",
            "delivered/s",
            "vs baseline",
            "CPU ms/msg",
            "PG CPU ms/msg",
            "its backends ms/msg",
            "note",
        ),
    ]
    for r in rows:
        ratio = "-" if r.delivered is None else f"{r.delivered / baseline_rate:.2f}"
        lines.append(
            (
                r.name,
                r.workers,
                fmt(r.enqueue_facade),
                fmt(r.enqueue_http),
                fmt(r.api_cpu_ms, 2),
                fmt(r.api_backends_cpu_ms, 2),
                fmt(r.delivered),
                ratio,
                fmt(r.cpu_ms, 2),
                fmt(r.db_cpu_ms, 2),
                fmt(r.backends_cpu_ms, 2),
                r.note,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def parse_counts(value: str) -> list[int]:
    counts = [int(v) for v in value.split(",") if v.strip()]
    if not counts or any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return counts


async def run(args: argparse.Namespace) -> int:
    urls = server_urls(args.database_url)
    with Sink() as sink:
        log(f"smtp-sink on 127.0.0.1:{sink.port}; {args.messages} messages per run")
        base = await baseline(sink.port, args.messages, args.baseline_connections)
        assert base.delivered is not None
        baseline_rate = base.delivered
        rows = [base]
        plan: list[tuple[str | None, int]] = []
        if not args.no_sqlite:
            plan += [(None, w) for w in args.sqlite_workers]
        plan += [(url, w) for url in urls for w in args.workers]
        for server_url, workers in plan:
            rows.append(await run_row(server_url, workers, args, sink))
        if args.peers:
            content = Path(tempfile.mkdtemp(prefix="postroom-bench-peers-")) / "fields.json"
            content.write_text(json.dumps(content_fields()))
            try:
                rows.append(nodemailer_peer(sink, args, content))
                rows.append(post_office_peer(sink, args, content))
            finally:
                shutil.rmtree(content.parent, ignore_errors=True)
    print()
    print(
        f"{args.messages} messages of ~2 KB per enqueue column; delivered/s counts every job "
        f"enqueued in the row; {os.cpu_count()} CPUs"
    )
    print(
        f"workers: concurrency {args.concurrency}, batch {args.batch_size}; SMTP pool "
        f"{args.smtp_connections} connections x {args.smtp_max_messages} messages per process"
    )
    print(
        "CPU ms/msg: CPU time of the sending processes (Postroom: the workers, with SQLite "
        "inside them) per delivered message; PG CPU ms/msg: the PostgreSQL server's; its "
        "backends: only the server processes of the run's database"
    )
    print(table(rows, baseline_rate, args.api_processes))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Postroom enqueue and delivery throughput into a local smtp-sink."
    )
    parser.add_argument("--messages", type=int, default=10_000, help="per enqueue path")
    parser.add_argument(
        "--database-url",
        action="append",
        help="PostgreSQL server URL (repeatable); a fresh database is created beside it. "
        "Default: POSTROOM_TEST_DATABASE_URL when set",
    )
    parser.add_argument("--workers", type=parse_counts, default=[1, 2, 4], help="PostgreSQL")
    parser.add_argument("--sqlite-workers", type=parse_counts, default=[1])
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite row")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP enqueue")
    parser.add_argument("--no-delivery", action="store_true", help="only the enqueue columns")
    parser.add_argument("--peers", action="store_true", help="add Nodemailer, post_office")
    parser.add_argument("--concurrency", type=int, default=100, help="sends per worker")
    parser.add_argument("--batch-size", type=int, default=100, help="jobs per claim")
    parser.add_argument("--smtp-connections", type=int, default=20, help="pool per process")
    parser.add_argument("--smtp-max-messages", type=int, default=100, help="per connection")
    parser.add_argument("--enqueue-concurrency", type=int, default=32, help="facade sends")
    parser.add_argument("--http-concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument("--api-processes", type=int, default=2, help="serve --processes N")
    parser.add_argument(
        "--http-client",
        choices=["wrk", "python"],
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator of the HTTP column: wrk (default where installed) or httpload.py",
    )
    parser.add_argument("--baseline-connections", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=900.0, help="per delivery phase (s)")
    parser.add_argument("--profile", type=Path, help="py-spy the workers; profiles go here")
    args = parser.parse_args()
    if args.messages < 1:
        parser.error("--messages must be positive")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
