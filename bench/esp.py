"""Delivery through an HTTP provider: messages/s and CPU a message of one worker.

::

    .venv/bin/python bench/esp.py --messages 3000 --rounds 3 \\
        --database-url postgresql://postgres@127.0.0.1:5432/test

One worker in this process runs the loop of ``postroom worker`` (``Worker.run``) on a
fresh database each round, delivering N queued short text messages through a
``custom`` HTTP provider (a signed JSON POST per message, ``maxConnections`` 10 by
default) to a local receiver that answers 204 (``receiver.py``). The HTTP path every
ESP adapter shares (httpx, the SSRF guard, error translation) is what is measured;
the ESPs' own payloads differ only in their JSON. Columns: delivered/s (first claim
to last completion, from the job rows) and the CPU a message of this process and of
PostgreSQL's backends. The table gives every round and the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    FreshDatabase,
    add_database_args,
    databases,
    log,
    measure_delivery,
    short_messages,
    use_provider,
)
from receiver import Receiver

from postroom.app import Postroom
from postroom.providers import credentials

LOOPBACK = ["127.0.0.0/8"]


async def delivered(
    server_url: str | None, n: int, receiver: Receiver, connections: int
) -> dict[str, Any]:
    db = FreshDatabase(server_url)
    await db.create()
    try:
        pr = Postroom(db.settings())
        await pr.start(migrate_schema=False)
        await use_provider(
            pr.engine,
            type="custom",
            config={"url": receiver.url, "allowNetworks": LOOPBACK, "maxConnections": connections},
            authentication=credentials.encrypt(pr.fernet, {"secret": "bench-secret"}),
        )
        await pr.send_bulk(short_messages(n))
        receiver.reset()
        measured = await measure_delivery(pr, n)
        assert receiver.count == n, receiver.count
        return {"db": db.kind, **measured}
    finally:
        await db.drop()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=10, help="maxConnections")
    add_database_args(parser)
    args = parser.parse_args()
    if min(args.rounds, args.messages, args.connections) < 1:
        parser.error("--rounds, --messages and --connections must be at least 1")
    servers = databases(parser, args)
    rows: list[dict[str, Any]] = []
    with Receiver() as receiver:
        for server in servers:
            for round_ in range(args.rounds):
                where = "postgresql" if server else "sqlite"
                log(f"round {round_ + 1}: {args.messages} messages on {where}")
                r = await delivered(server, args.messages, receiver, args.connections)
                log(f"  {r['rate']:,.0f} delivered/s ({r['cpu_us']:,.0f} µs CPU a message here,"
                    f" {r['db_cpu_us']:,.0f} µs in PostgreSQL)")  # fmt: skip
                rows.append({**r, "round": str(round_ + 1)})
    print("\n| database | round | delivered /s | CPU µs a message (process + PostgreSQL) |")
    print("| --- | --- | ---: | ---: |")
    for db in dict.fromkeys(r["db"] for r in rows):
        mine = [r for r in rows if r["db"] == db]
        if len(mine) > 1:
            keys = ("rate", "cpu_us", "db_cpu_us")
            mine.append(
                {"round": "median", **{k: statistics.median(r[k] for r in mine) for k in keys}}
            )
        for r in mine:
            pg_cpu = f" + {r['db_cpu_us']:,.0f}" if r["db_cpu_us"] else ""
            print(f"| {db} | {r['round']} | {r['rate']:,.0f} | {r['cpu_us']:,.0f}{pg_cpu} |")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
