"""Memory soak: many messages through worker processes, their RSS sampled as they go.

::

    python bench/soak.py --messages 200000 --workers 2 \\
        --database-url postgresql://postgres@127.0.0.1:5432/test

On a fresh database, ``--workers`` ``postroom worker`` processes deliver into a local
smtp-sink while this process enqueues ``--messages`` messages through the Python
facade (so the queue never holds them all at once, as in production). Every
``--every`` seconds it prints each worker's resident set size (``VmRSS``) and the
number of completed jobs. The run passes when every sample stays under ``--max-rss-mb``
and each worker's last sample is within ``--flat`` (10 %) of its first sample taken
after ``--warm`` (20,000) completed jobs; the exit status says so.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from harness import (
    FINAL_STATES,
    FreshDatabase,
    WorkerPool,
    enqueue_facade,
    job_counts,
    log,
    smtp_config,
)
from sink import Sink

from postroom.app import Postroom


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def soak(args: argparse.Namespace) -> int:
    db = FreshDatabase(args.database_url)
    samples: list[tuple[float, int, list[float | None]]] = []
    with Sink() as sink:
        try:
            await db.create(smtp_config(sink.port, max_connections=20, max_messages=100))
            env = db.env(POSTROOM_WORKER__CONCURRENCY="100", POSTROOM_WORKER__BATCH_SIZE="100")
            pool = WorkerPool(db, env, extra_args=[])
            pool.start(args.workers)
            pool.wait_ready()
            engine = db.poll_engine()
            pr = Postroom(db.settings())
            await pr.start(migrate_schema=False)
            started = time.monotonic()

            async def enqueue() -> None:
                for first in range(0, args.messages, args.chunk):
                    last = min(first + args.chunk, args.messages)
                    await enqueue_facade(pr, range(first, last), concurrency=32)

            feeding = asyncio.create_task(enqueue())
            try:
                done = 0
                while done < args.messages:
                    await asyncio.sleep(args.every)
                    if dead := pool.dead():
                        raise RuntimeError(f"worker {dead[0]} exited: {pool.tail(dead[0])}")
                    counts = await job_counts(engine)
                    done = sum(counts[s] for s in FINAL_STATES)
                    rss = [rss_mb(p.pid) for p in pool.procs]
                    elapsed = time.monotonic() - started
                    samples.append((elapsed, done, rss))
                    shown = "  ".join(f"{r:6.1f} MB" if r else "   -   " for r in rss)
                    pending = counts["pending"]
                    log(f"  {elapsed:6.0f}s  done {done:>7}  pending {pending:>6}  {shown}")
                    if elapsed > args.timeout:
                        log("  timeout")
                        break
            finally:
                await feeding
                await pr.aclose()
                await engine.dispose()
                pool.stop()
        finally:
            await db.drop()
    return verdict(samples, args)


def verdict(samples: list[tuple[float, int, list[float | None]]], args: argparse.Namespace) -> int:
    if not samples:
        print("no samples")
        return 1
    ok = True
    workers = len(samples[0][2])
    for w in range(workers):
        series = [(done, rss[w]) for _, done, rss in samples if rss[w] is not None]
        peak = max(r for _, r in series if r is not None)
        warm = next((r for done, r in series if done >= args.warm), None)
        last = series[-1][1]
        flat = warm is not None and last is not None and abs(last - warm) <= args.flat * warm
        under = peak < args.max_rss_mb
        ok = ok and flat and under
        print(
            f"worker {w + 1}: peak {peak:.1f} MB (limit {args.max_rss_mb:g}), "
            f"at {args.warm} done {warm or 0:.1f} MB, last {last or 0:.1f} MB: "
            f"{'flat' if flat else 'NOT flat'}, {'under' if under else 'OVER'} the limit"
        )
    print(f"soak {'passed' if ok else 'FAILED'}: {samples[-1][1]} messages delivered")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="PostgreSQL server URL (default: SQLite)")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--chunk", type=int, default=5_000, help="messages per enqueue burst")
    parser.add_argument("--warm", type=int, default=20_000, help="the reference sample")
    parser.add_argument("--flat", type=float, default=0.10, help="allowed growth after --warm")
    parser.add_argument("--max-rss-mb", type=float, default=150.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds")
    return asyncio.run(soak(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
