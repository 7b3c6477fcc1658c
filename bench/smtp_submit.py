"""SMTP submissions per second: Postfix's ``smtp-source`` against ``postroom smtpd``.

Each accepted message is durable: the relay answers ``250`` only after the job
is committed, and the run checks afterwards that the database holds exactly as
many raw jobs as ``smtp-source`` sent. The same client against ``smtp-sink``
(which stores nothing) gives the ceiling of client and loopback, measured in the
same run, since the machine may be shared.

Besides messages per second it reports CPU milliseconds per message of the relay
process and of the PostgreSQL backends serving the benchmark's database (other
databases' work on the same server is not counted); these hold up better than
wall-clock rates on a busy machine.

``smtp-source`` speaks neither AUTH nor STARTTLS, so the relay trusts 127.0.0.1
(``POSTROOM_SMTP__TRUSTED_NETWORKS``) for the run; AUTH over TLS adds a
handshake per connection, not per message, since sessions send many messages.

::

    python bench/smtp_submit.py --database-url postgresql://postgres@127.0.0.1/postgres
    python bench/smtp_submit.py --messages 2000 --sessions 20   # SQLite
    python bench/smtp_submit.py --runs 2 --profile relay.txt --database-url ...
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import FreshDatabase, cpu_seconds, postroom_command, stop_process
from sink import Sink, free_port, wait_for_smtp

from postroom.db.models import EmailJob

SMTP_SOURCE = "/usr/sbin/smtp-source"
jobs_t = cast(Table, EmailJob.__table__)


@dataclass
class Result:
    seconds: float
    relay_cpu: float
    #: CPU seconds of the benchmark database's backends (None: SQLite)
    db_cpu: float | None
    stored: int
    #: transactions committed during the run (None: SQLite)
    transactions: int | None


def smtp_source(
    port: int, *, messages: int, sessions: int, size: int, recipients: int, reconnect: bool
) -> float:
    """Run smtp-source to completion; seconds it took."""
    cmd = [
        SMTP_SOURCE,
        *([] if reconnect else ["-d"]),
        "-s", str(sessions),
        "-m", str(messages),
        "-l", str(size),
        "-r", str(recipients),
        "-f", "bench@example.com",
        "-t", "rcpt@example.com",
        "-M", "bench.example.com",
        f"127.0.0.1:{port}",
    ]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"smtp-source failed ({done.returncode}): {done.stderr[-500:]}")
    return elapsed


async def stored(db: FreshDatabase) -> int:
    engine = db.poll_engine()
    try:
        async with engine.connect() as conn:
            stmt = select(func.count()).select_from(jobs_t)
            return int((await conn.execute(stmt)).scalar_one())
    finally:
        await engine.dispose()


async def commits(db: FreshDatabase) -> int:
    """Transactions committed in the benchmark's database (PostgreSQL's statistics,
    flushed by each backend within a second or so of its work)."""
    engine = db.poll_engine()
    try:
        async with engine.connect() as conn:
            stmt = text(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
            )
            return int((await conn.execute(stmt)).scalar_one())
    finally:
        await engine.dispose()


async def backend_pids(db: FreshDatabase) -> list[int]:
    """The PostgreSQL backends connected to the benchmark's database (not this query's)."""
    engine = db.poll_engine()
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
            return [int(r[0]) for r in rows]
    finally:
        await engine.dispose()


def source_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "messages": args.messages,
        "sessions": args.sessions,
        "size": args.size,
        "recipients": args.recipients,
        "reconnect": args.reconnect,
    }


def attach_profiler(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """``py-spy record`` (raw collapsed stacks, on-CPU samples only) on the relay."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    cmd = [str(spy), "record", "--pid", str(pid), "--format", "raw", "--nonblocking"]
    cmd += ["--rate", "250", "--output", str(output)]
    return subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


#: where a sample counts: the innermost frame in one of these
PARTS = (
    ("postroom/relay/", "relay (commands, DATA reading)"),
    ("postroom/compose/", "compose (header checks)"),
    ("postroom/services/", "services (job building, group commit)"),
    ("postroom/", "postroom, other"),
    ("aiosmtpd/", "aiosmtpd (command loop, replies)"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("asyncpg/", "asyncpg"),
    ("aiosqlite/", "aiosqlite"),
    ("asyncio/", "asyncio streams and tasks"),
)


def report_profile(path: Path, top: int = 25) -> None:
    """Where the relay's event loop spent its CPU: by part, then functions by own time."""
    own: Counter[str] = Counter()
    parts: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit() or "threading.py" in stack:
            continue
        frames = [f for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        n = int(count)
        total += n
        name, _, where = frames[-1].partition(" (")
        file = where.rstrip(")").rsplit(":", 1)[0]
        own[f"{name} ({'/'.join(Path(file).parts[-2:])})"] += n
        parts[_part(frames)] += n
    if not total:
        print(f"profile: no samples in {path} (py-spy needs ptrace permission)")
        return
    print(f"\nprofile: {total} on-CPU samples of the relay's event loop")
    for name, n in parts.most_common():
        print(f"  {name:<60} {100 * n / total:5.1f}%")
    print("  functions by own time:")
    for frame, n in own.most_common(top):
        print(f"  {frame[:72]:<72} {100 * n / total:5.1f}%")


def _part(frames: list[str]) -> str:
    for frame in reversed(frames):
        for marker, name in PARTS:
            if marker in frame:
                return name
    return "event loop (uvloop) and other"


async def run_relay(args: argparse.Namespace, profile: Path | None) -> Result:
    db = FreshDatabase(args.database_url)
    await db.create()
    port = free_port()
    env = db.env(
        POSTROOM_SMTP__TRUSTED_NETWORKS='["127.0.0.1/32"]',
        POSTROOM_SMTP__RATE_LIMIT_PER_MINUTE="0",
        POSTROOM_SMTP__MAX_RECIPIENTS=str(max(args.recipients, 1)),
    )
    proc = subprocess.Popen(
        [*postroom_command(), "smtpd", "--port", str(port), "--processes", str(args.processes)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    spy = None
    try:
        wait_for_smtp("127.0.0.1", port, timeout_s=120)
        smtp_source(  # warm up: imports, connection pool, caches
            port, messages=200, sessions=args.sessions, size=args.size, recipients=1,
            reconnect=False,
        )  # fmt: skip
        before = await stored(db)
        pg = db.kind == "postgresql"
        pids = await backend_pids(db) if pg else []
        commits_before = await commits(db) if pg else 0
        db_before = cpu_seconds(pids)
        # with --processes the parent only supervises; its children relay
        relay = [proc.pid, *children(proc.pid)]
        cpu_before = cpu_seconds(relay)
        if profile is not None:
            spy = attach_profiler(relay[-1], profile)
            time.sleep(1.0)
        elapsed = smtp_source(port, **source_options(args))
        cpu = cpu_seconds(relay) - cpu_before
        db_cpu = transactions = None
        if pg:
            # a backend started during the run counts from zero
            late = [p for p in await backend_pids(db) if p not in pids]
            db_cpu = cpu_seconds(pids) - db_before + cpu_seconds(late)
        count = await stored(db) - before
        if pg:
            time.sleep(1.5)  # let the backends report their statistics
            # less this script's own transactions since the first reading (about 4)
            transactions = await commits(db) - commits_before - 4
    finally:
        if spy is not None:  # py-spy writes its output on SIGINT
            spy.send_signal(signal.SIGINT)
            stop_process(spy, signalled=True)  # type: ignore[arg-type]
        stop_process(proc)  # type: ignore[arg-type]
        await db.drop()
    return Result(
        seconds=elapsed, relay_cpu=cpu, db_cpu=db_cpu, stored=count, transactions=transactions
    )


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (Linux)."""
    listing = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in listing.read_text().split()] if listing.exists() else []


def run_sink(args: argparse.Namespace) -> float:
    with Sink() as sink:
        return smtp_source(sink.port, **source_options(args))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL server URL (default: SQLite)")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--sessions", type=int, default=20, help="parallel SMTP sessions")
    parser.add_argument("--size", type=int, default=2048, help="message body bytes")
    parser.add_argument("--recipients", type=int, default=1, help="recipients per message")
    parser.add_argument(
        "--reconnect", action="store_true", help="one connection per message (default: reuse)"
    )
    parser.add_argument("--runs", type=int, default=1, help="relay + sink pairs to measure")
    parser.add_argument(
        "--processes", type=int, default=1, help="relay processes (smtpd --processes)"
    )
    parser.add_argument("--profile", type=Path, help="py-spy the relay (last run) into this file")
    args = parser.parse_args()

    kind = "postgresql" if args.database_url else "sqlite"
    n = args.messages
    header = ("run", "target", "seconds", "msg/s", "stored", "relay CPU ms/msg")
    rows = [(*header, "DB CPU ms/msg", "msg/commit")]
    failed = False
    for run in range(1, args.runs + 1):
        profile = args.profile if run == args.runs else None
        result = asyncio.run(run_relay(args, profile))
        ceiling = run_sink(args)
        db_ms = "-" if result.db_cpu is None else f"{result.db_cpu * 1000 / n:.3f}"
        rows.append(
            (str(run), f"postroom smtpd ({kind}, {args.processes} proc.)", f"{result.seconds:.2f}",
             f"{n / result.seconds:.0f}", str(result.stored),
             f"{result.relay_cpu * 1000 / n:.3f}", db_ms,
             f"{n / result.transactions:.1f}" if result.transactions else "-")
        )  # fmt: skip
        rows.append(
            (str(run), "smtp-sink (ceiling)", f"{ceiling:.2f}", f"{n / ceiling:.0f}",
             "-", "-", "-", "-")
        )  # fmt: skip
        failed = failed or result.stored != n
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(
        f"({n} messages of {args.size} body bytes; connections "
        f"{'per message' if args.reconnect else 'reused'}; {args.sessions} sessions; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    if args.profile is not None:
        report_profile(args.profile)
    if failed:
        print(f"MISMATCH: {n} sent per run, not all stored", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
