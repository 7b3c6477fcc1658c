"""Outgoing event webhooks: what an endpoint subscribed to ``sent`` costs delivery.

::

    .venv/bin/python bench/webhooks.py --messages 3000 --rounds 3 \\
        --database-url postgresql://postgres@127.0.0.1:5432/test

One worker in this process runs the loop of ``postroom worker`` (``Worker.run``,
which also runs the webhook dispatcher) on a fresh database each row, delivering N
queued messages (a short text message each) into smtp-sink:

- *no endpoint*: nothing subscribes, so no event is written.
- *endpoint (sent)*: one endpoint subscribed to ``sent`` on a local receiver (a
  process that answers every POST with 204 and counts them), so every message makes
  an outbox event, a delivery and a signed POST.

Columns: mail delivered/s (first claim to last completion, from the job rows), the
time until the receiver had all N POSTs (webhooks/s, from the worker's start), and
the CPU a message of this process (the worker, its dispatcher, and SQLite's work)
and of PostgreSQL's backends. ``--rounds`` rounds in alternating order, each on a
fresh database; the table gives every round and the medians.
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
    smtp_config,
    until,
)
from receiver import Receiver
from sink import Sink

from postroom.app import Postroom

KINDS = ("no endpoint", "endpoint (sent)")


# -- one row -----------------------------------------------------------------------


async def delivered(
    server_url: str | None, n: int, sink: Sink, receiver: Receiver, kind: str
) -> dict[str, Any]:
    db = FreshDatabase(server_url)
    await db.create(smtp_config(sink.port, max_connections=20, max_messages=100))
    try:
        pr = Postroom(db.settings())
        await pr.start(migrate_schema=False)
        hooks = kind != "no endpoint"
        if hooks:
            await pr.webhooks.create(
                url=receiver.url, event_types=["sent"], allow_networks=["127.0.0.0/8"]
            )
        await pr.send_bulk(short_messages(n))
        receiver.reset()

        async def posted() -> None:
            if hooks:
                await until(lambda: receiver.count, n, "the receiver's POSTs")

        measured = await measure_delivery(pr, n, then=posted)
        return {
            "db": db.kind,
            "kind": kind,
            **measured,
            "hook_rate": n / measured["all_s"] if hooks else None,
            "posts": receiver.count,
        }
    finally:
        await db.drop()


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        "\n| database | round | mail /s: no endpoint | mail /s: endpoint (sent) "
        "| webhooks /s | mail cost of the endpoint | CPU µs a message: no endpoint "
        "| CPU µs a message: endpoint (sent) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for db in dict.fromkeys(r["db"] for r in rows):
        mine = [r for r in rows if r["db"] == db]
        rounds = sorted({r["round"] for r in mine})
        lines: list[tuple[str, dict[str, dict[str, Any]]]] = [
            (str(n), {r["kind"]: r for r in mine if r["round"] == n}) for n in rounds
        ]
        if len(rounds) > 1:
            median = {
                kind: {
                    key: statistics.median(r[key] for r in mine if r["kind"] == kind)
                    for key in ("rate", "cpu_us", "db_cpu_us")
                }
                for kind in KINDS
            }
            median[KINDS[1]]["hook_rate"] = statistics.median(
                r["hook_rate"] for r in mine if r["kind"] == KINDS[1]
            )
            lines.append(("median", median))
        for label, by in lines:
            plain, hooked = by[KINDS[0]], by[KINDS[1]]
            cost = 1 - hooked["rate"] / plain["rate"]
            print(
                f"| {db} | {label} | {plain['rate']:,.0f} | {hooked['rate']:,.0f} "
                f"| {hooked['hook_rate']:,.0f} | {cost:.0%} | {_cpu(plain)} | {_cpu(hooked)} |"
            )


def _cpu(row: dict[str, Any]) -> str:
    here, db = row["cpu_us"], row["db_cpu_us"]
    return f"{here:,.0f}" + (f" + {db:,.0f}" if db else "")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    add_database_args(parser)
    args = parser.parse_args()
    if args.rounds < 1 or args.messages < 1:
        parser.error("--rounds and --messages must be at least 1")
    servers = databases(parser, args)
    rows: list[dict[str, Any]] = []
    with Sink() as sink, Receiver() as receiver:
        for server in servers:
            for round_ in range(args.rounds):
                for kind in KINDS if round_ % 2 == 0 else KINDS[::-1]:
                    where = "postgresql" if server else "sqlite"
                    log(f"round {round_ + 1}: {args.messages} messages ({kind}) on {where}")
                    r = await delivered(server, args.messages, sink, receiver, kind)
                    hooks = "" if r["hook_rate"] is None else (
                        f", all {r['posts']:,} POSTs received at {r['hook_rate']:,.0f}/s"
                    )  # fmt: skip
                    log(f"  {r['rate']:,.0f} delivered/s (mail done in {r['mail_s']:.1f} s"
                        f"{hooks}; {r['cpu_us']:,.0f} µs CPU a message here,"
                        f" {r['db_cpu_us']:,.0f} µs in PostgreSQL)")  # fmt: skip
                    rows.append({**r, "round": round_ + 1})
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
