"""Kill workers mid-send and check that no message is lost and none is stuck.

::

    python bench/crash_test.py --messages 2000 --workers 2 --kills 4
    python bench/crash_test.py --messages 2000 --workers 2 --kills 4 \\
        --database-url postgresql://postgres@127.0.0.1:5432/test

On a fresh database (SQLite by default; with ``--database-url``, a new PostgreSQL
database beside the one named), N messages are enqueued through the facade and
``--workers`` ``postroom worker`` processes deliver them to ``smtp-sink``, which
writes every message it accepts to a file. ``--kills`` times, spread over the run,
a random worker gets SIGKILL and is started again. Workers use a short lease
(``--lease-s``), so the jobs a killed worker held come back quickly.

When every job is completed or failed (or ``--timeout`` passes) the workers get
SIGTERM, and each dumped message's ``X-Postroom-Id`` is compared with the ids
enqueued:

- ``lost``: enqueued ids never received,
- ``duplicates``: receipts beyond one per id (at-least-once delivery allows them),
- ``stuck``: jobs not completed or failed at the end,
- ``delivered``: distinct ids received.

The last line is exactly ``lost=<n> duplicates=<n> stuck=<n> delivered=<n>``; the
exit status is 0 only when nothing was lost and nothing is stuck.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.errors import CloseBoundaryNotFoundDefect, StartBoundaryNotFoundDefect
from pathlib import Path

from harness import (
    FINAL_STATES,
    SENDER,
    FreshDatabase,
    Ticker,
    WorkerPool,
    enqueue_facade,
    error_sample,
    job_counts,
    log,
    smtp_config,
)
from sink import Sink

from postroom.app import Postroom


@dataclass
class Receipts:
    """What the sink received, read from its dump files."""

    ids: Counter[str] = field(default_factory=Counter)
    #: dumps cut short (the sender died mid-DATA): not a delivery
    partial: int = 0
    #: dumps without an X-Postroom-Id header
    unknown: int = 0
    #: ids whose Message-ID was not ``<id@sender domain>``
    bad_message_id: int = 0


def read_dumps(directory: Path) -> Receipts:
    """Parse every message smtp-sink dumped into ``directory``."""
    receipts = Receipts()
    domain = SENDER["email"].rpartition("@")[2]
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        msg = message_from_bytes(path.read_bytes(), policy=policy.compat32)
        defects = [d for part in msg.walk() for d in part.defects]
        if not msg.is_multipart() or any(
            isinstance(d, CloseBoundaryNotFoundDefect | StartBoundaryNotFoundDefect)
            for d in defects
        ):
            receipts.partial += 1
            continue
        email_id = (msg.get("X-Postroom-Id") or "").strip()
        if not email_id:
            receipts.unknown += 1
            continue
        if (msg.get("Message-ID") or "").strip() != f"<{email_id}@{domain}>":
            receipts.bad_message_id += 1
        receipts.ids[email_id] += 1
    return receipts


async def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    dump_dir = Path(tempfile.mkdtemp(prefix="postroom-crash-dumps-"))
    sink = Sink(dump_dir=dump_dir)
    sink.start()
    log(f"smtp-sink on 127.0.0.1:{sink.port}, dumping to {dump_dir}")
    db = FreshDatabase(args.database_url, prefix="postroom-crash-")
    pool: WorkerPool | None = None
    try:
        config = smtp_config(sink.port, max_connections=args.smtp_connections, max_messages=100)
        await db.create(config)
        log(f"fresh {db.label} database {db.name or db.url}")

        enqueued: list[str] = []
        pr = Postroom(db.settings())
        await pr.start(migrate_schema=False)
        try:
            seconds = await enqueue_facade(
                pr, range(args.messages), concurrency=32, on_sent=enqueued.append
            )
        finally:
            await pr.aclose()
        log(f"enqueued {len(enqueued)} messages in {seconds:.1f}s")

        env = db.env(
            POSTROOM_WORKER__LEASE_S=str(args.lease_s),
            POSTROOM_WORKER__SHUTDOWN_GRACE_S="5",
            POSTROOM_WORKER__CONCURRENCY=str(args.concurrency),
        )
        pool = WorkerPool(db, env, extra_args=[])
        pool.start(args.workers)
        engine = db.poll_engine()
        kills = 0
        thresholds = [(k + 1) / (args.kills + 1) for k in range(args.kills)]
        ticker = Ticker()
        deadline = time.monotonic() + args.timeout
        counts: Counter[str] = Counter()
        try:
            while time.monotonic() < deadline:
                counts = await job_counts(engine)
                final = sum(counts[s] for s in FINAL_STATES)
                if final >= len(enqueued):
                    break
                if kills < len(thresholds) and final >= thresholds[kills] * len(enqueued):
                    ready = [i for i in range(args.workers) if pool.is_ready(i)]
                    if ready:
                        victim = rng.choice(ready)
                        pool.kill(victim)
                        kills += 1
                        log(
                            f"kill {kills}/{args.kills}: SIGKILL worker {victim} at "
                            f"{final}/{len(enqueued)} done; restarted it"
                        )
                for i in pool.dead():
                    log(f"worker {i} exited unexpectedly; restarting it:\n{pool.tail(i)}")
                    pool.kill(i)
                if ticker.due():
                    log(f"jobs: {dict(sorted(counts.items()))}; sink received {sink.received()}")
                await asyncio.sleep(0.1)
            else:
                log(f"timeout after {args.timeout:g}s: {dict(counts)}")
            statuses = pool.stop(timeout_s=30)
            pool = None
            log(f"workers stopped (exit statuses {statuses}); {kills} kills")
            counts = await job_counts(engine)
            errors = await error_sample(engine)
        finally:
            await engine.dispose()
    finally:
        if pool is not None:
            pool.stop(timeout_s=10)
        sink.close()
        try:
            if args.keep:
                log(f"kept {db.root} and {dump_dir}")
            else:
                await db.drop()
        except Exception as exc:  # the summary matters more than the clean-up
            log(f"dropping the database failed: {exc}")

    receipts = read_dumps(dump_dir)
    if not args.keep:
        shutil.rmtree(dump_dir, ignore_errors=True)
    wanted = set(enqueued)
    received = set(receipts.ids)
    lost = len(wanted - received)
    duplicates = sum(n - 1 for n in receipts.ids.values() if n > 1)
    stuck = sum(n for status, n in counts.items() if status not in FINAL_STATES)
    delivered = len(received & wanted)
    print()
    print(f"database        {db.label}")
    print(f"messages        {len(enqueued)}")
    print(f"workers         {args.workers} (lease {args.lease_s:g}s), kills {kills}")
    print(f"jobs            {dict(sorted(counts.items()))}")
    print(f"dumped          {sum(receipts.ids.values())} complete, {receipts.partial} partial")
    print(f"unknown ids     {len(received - wanted) + receipts.unknown}")
    print(f"bad Message-ID  {receipts.bad_message_id}")
    for line in errors:
        print(f"error sample    {line}")
    print(f"lost={lost} duplicates={duplicates} stuck={stuck} delivered={delivered}")
    return 0 if lost == 0 and stuck == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Kill workers mid-send; count lost, duplicated and stuck messages."
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument(
        "--database-url", help="PostgreSQL server URL; a fresh database is created beside it"
    )
    parser.add_argument("--lease-s", type=float, default=3.0, help="the workers' job lease")
    parser.add_argument("--concurrency", type=int, default=32, help="sends per worker")
    parser.add_argument("--smtp-connections", type=int, default=20, help="per worker")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after (s)")
    parser.add_argument("--seed", type=int, default=None, help="which workers get killed")
    parser.add_argument("--keep", action="store_true", help="keep the database and dumps")
    args = parser.parse_args()
    if args.messages < 1 or args.workers < 1 or args.kills < 0:
        parser.error("--messages and --workers must be positive, --kills not negative")
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
