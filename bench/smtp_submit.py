"""SMTP submissions per second: Postfix's ``smtp-source`` against ``postroom smtpd``.

Each accepted message is durable: the relay answers ``250`` only after the job
is committed, and the run checks afterwards that the database holds exactly as
many raw jobs as ``smtp-source`` sent. The same client against ``smtp-sink``
(which stores nothing) gives the ceiling of client and loopback.

``smtp-source`` speaks neither AUTH nor STARTTLS, so the relay trusts 127.0.0.1
(``POSTROOM_SMTP__TRUSTED_NETWORKS``) for the run; AUTH over TLS adds a
handshake per connection, not per message, since sessions send many messages.

::

    python bench/smtp_submit.py --database-url postgresql://postgres@127.0.0.1/postgres
    python bench/smtp_submit.py --messages 2000 --sessions 20   # SQLite
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, func, select

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import FreshDatabase, cpu_seconds, postroom_command, stop_process
from sink import Sink, free_port, wait_for_smtp

from postroom.db.models import EmailJob

SMTP_SOURCE = "/usr/sbin/smtp-source"
jobs_t = cast(Table, EmailJob.__table__)


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


def source_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "messages": args.messages,
        "sessions": args.sessions,
        "size": args.size,
        "recipients": args.recipients,
        "reconnect": args.reconnect,
    }


async def run_relay(args: argparse.Namespace) -> tuple[float, float, int]:
    db = FreshDatabase(args.database_url)
    await db.create()
    port = free_port()
    env = db.env(
        POSTROOM_SMTP__TRUSTED_NETWORKS='["127.0.0.1/32"]',
        POSTROOM_SMTP__RATE_LIMIT_PER_MINUTE="0",
        POSTROOM_SMTP__MAX_RECIPIENTS=str(max(args.recipients, 1)),
    )
    proc = subprocess.Popen(
        [*postroom_command(), "smtpd", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_smtp("127.0.0.1", port, timeout_s=30)
        smtp_source(  # warm up: imports, connection pool, caches
            port, messages=50, sessions=5, size=args.size, recipients=1, reconnect=False
        )
        before = await stored(db)
        cpu_before = cpu_seconds([proc.pid])
        elapsed = smtp_source(port, **source_options(args))
        cpu = cpu_seconds([proc.pid]) - cpu_before
        count = await stored(db) - before
    finally:
        stop_process(proc)  # type: ignore[arg-type]
        await db.drop()
    return elapsed, cpu, count


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
    args = parser.parse_args()

    elapsed, cpu, count = asyncio.run(run_relay(args))
    ceiling = run_sink(args)
    kind = "postgresql" if args.database_url else "sqlite"
    rows = [
        ("target", "messages", "seconds", "msg/s", "stored", "relay CPU s", "msg/relay-CPU-s"),
        (f"postroom smtpd ({kind})", str(args.messages), f"{elapsed:.2f}",
         f"{args.messages / elapsed:.0f}", str(count), f"{cpu:.2f}",
         f"{args.messages / cpu:.0f}" if cpu else "-"),
        ("smtp-sink (ceiling)", str(args.messages), f"{ceiling:.2f}",
         f"{args.messages / ceiling:.0f}", "-", "-", "-"),
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(
        f"(connections {'per message' if args.reconnect else 'reused'}; {args.sessions} "
        f"sessions; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    if count != args.messages:
        print(f"MISMATCH: {args.messages} sent, {count} stored", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
