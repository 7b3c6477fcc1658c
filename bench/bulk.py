"""Bulk sending: POST /bulk enqueue rate, and the cost of rendering + DKIM on delivery.

::

    .venv/bin/python bench/bulk.py --recipients 100000 --delivered 5000 \\
        --database-url postgresql://postgres@127.0.0.1:5432/test --peers

1. **recipients/s (POST /bulk)**: one ``POST /bulk`` of N recipients, each with their
   own ``templateData`` (5 variables), through the ASGI app in this process (JSON
   parsing, validation, variable checks and the transaction included; no network),
   timed from the request to the 202, on a fresh SQLite and a fresh PostgreSQL.
2. **delivered/s into smtp-sink**, one worker in this process running the loop of
   ``postroom worker`` (``Worker.run``) until every job has an outcome, on a fresh
   database each:
   *plain* (the same message pre-rendered, no DKIM key, of the template's type, so
   the same queue, tracking and List-Unsubscribe) against *template* (a ~3 KB HTML
   template with a ``<style>`` block and 5 variables, CSS inlined, text part
   derived; the sender's domain has no key) and *template + DKIM* (the same, signed
   with RSA-2048). The cost is ``1 - row/plain``. ``--rounds`` rounds of every row,
   in alternating order, each on a fresh database; the table gives every round and
   the median, and the run starts with what one RSA-2048 signature costs here.
3. **peer** (``--peers``): django-post_office's ``mail.send_many`` of N mails (its bulk
   enqueue) in ``bench/.venv`` (see README), on SQLite with the same settings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BENCH_DIR,
    PG_ENV,
    FreshDatabase,
    backend_cpu,
    cpu_idle,
    cpu_seconds,
    db_cpu,
    delivery_window,
    idle_share,
    job_counts,
    log,
    run_queue_seconds,
    running,
    smtp_config,
    until_recorded,
)
from sink import Sink

from postroom.api.app import create_app
from postroom.app import Postroom
from postroom.gcpause import quiet_collector
from postroom.schemas.templates import TemplateCreate

_ROWS = "".join(
    f"<tr><td class='item'>{{{{ item }}}} #{i}</td><td class='qty'>1</td>"
    f"<td class='price'>{{{{ amount }}}} EUR</td></tr>"
    for i in range(12)
)
HTML = (
    "<html><head><style>"
    "body { font-family: Helvetica, Arial, sans-serif; color: #222; }"
    "h1 { font-size: 20px; color: #0a4; } table { border-collapse: collapse; width: 100%; }"
    "td { padding: 4px 8px; border-bottom: 1px solid #eee; } td.price { text-align: right; }"
    ".footer { color: #888; font-size: 12px; }"
    "</style></head><body>"
    "<h1>Hello {{ name }}, your order {{ order }} has shipped</h1>"
    "<p>It left our warehouse today and should reach you within three working days. "
    "You can follow it with tracking code <b>{{ code }}</b>.</p>"
    f"<table>{_ROWS}</table>"
    "<p class='footer'>Example Shop, 1 Market Street. You get this mail because you "
    "ordered from us. Questions? Just reply.</p></body></html>"
)
TEMPLATE = {
    "name": "shipped",
    "type": "marketing",
    "subject": "Order {{ order }} has shipped, {{ name }}",
    "content": {"html": HTML},
    "variables": [
        {"name": "name"},
        {"name": "order", "type": "integer"},
        {"name": "code"},
        {"name": "item"},
        {"name": "amount", "type": "number"},
    ],
}
SENDER = {"email": "orders@shop.example.com", "name": "Example Shop"}


def recipient(i: int) -> dict[str, Any]:
    return {
        "email": f"customer{i}@example.net",
        "name": f"Customer {i}",
        "templateData": {
            "name": f"Customer {i}",
            "order": 100000 + i,
            "code": f"TRK{i:08d}",
            "item": f"Water bottle {i % 7}",
            "amount": round(10 + i % 90 + 0.9, 2),
        },
    }


async def bulk_enqueue(server_url: str | None, n: int) -> dict[str, Any]:
    db = FreshDatabase(server_url)
    await db.create()
    try:
        pr = Postroom(db.settings())
        await pr.start(migrate_schema=False)
        await pr.sender.templates.create(TemplateCreate.model_validate(TEMPLATE))
        key, _ = await pr.keys.create("bench", ["admin"])
        body = json.dumps(
            {
                "from": SENDER,
                "templateId": "shipped",
                "recipients": [recipient(i) for i in range(n)],
            }
        ).encode()
        app = create_app(pr, workers=0)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://bench",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=600,
        ) as client:
            pg_before = await backend_cpu(pr)
            cpu0 = time.process_time()
            t0 = time.perf_counter()
            response = await client.post("/api/system/email/bulk", content=body)
            seconds = time.perf_counter() - t0
            cpu = time.process_time() - cpu0
            pg_after = await backend_cpu(pr)
        assert response.status_code == 202, response.text[:500]
        counts = await job_counts(pr.engine)
        assert counts["pending"] == n, counts
        await pr.aclose()
        pg_cpu = db_cpu(pg_before, pg_after)
        return {"db": db.kind, "n": n, "seconds": seconds, "rate": n / seconds,
                "body_mb": len(body) / 1e6, "cpu": cpu, "db_cpu": pg_cpu}  # fmt: skip
    finally:
        await db.drop()


#: the delivery rows: a pre-rendered message, the template, the template signed
KINDS = ("plain", "template", "template + DKIM")
#: ``--rsa-only``: the template signed by a helper that does only the RSA operation
RSA_ONLY = "template + RSA only"


@contextlib.contextmanager
def rsa_only_signer() -> Iterator[None]:
    """Workers started meanwhile get ``rsa_only_signer.py`` as their DKIM signer."""
    real = asyncio.create_subprocess_exec

    async def spawn(program: Any, *args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        if args == ("-m", "postroom.compose.signer"):
            args = (str(BENCH_DIR / "rsa_only_signer.py"),)
        return await real(program, *args, **kwargs)

    asyncio.create_subprocess_exec = spawn  # type: ignore[assignment]
    try:
        yield
    finally:
        asyncio.create_subprocess_exec = real  # type: ignore[assignment]


async def delivered(server_url: str | None, n: int, sink: Sink, kind: str) -> dict[str, Any]:
    db = FreshDatabase(server_url)
    await db.create(smtp_config(sink.port, max_connections=20, max_messages=100))
    try:
        pr = Postroom(db.settings())
        await pr.start(migrate_schema=False)
        people = [recipient(i) for i in range(n)]
        if kind != "plain":
            await pr.sender.templates.create(TemplateCreate.model_validate(TEMPLATE))
            if kind in ("template + DKIM", RSA_ONLY):
                await pr.domains.add("shop.example.com")
            request: dict[str, Any] = {"templateId": "shipped", "recipients": people}
        else:
            # the same message, rendered once: what a caller that renders itself sends,
            # of the template's type (so the same queue, tracking and List-Unsubscribe:
            # the two rows differ only by the template and the signature)
            await pr.sender.templates.create(TemplateCreate.model_validate(TEMPLATE))
            version, _ = await pr.sender.templates.pin("shipped")
            out = version.render(people[0]["templateData"])
            request = {
                "type": TEMPLATE["type"],
                "subject": out.subject,
                "content": {"html": out.html, "text": out.text},
                "recipients": [{"email": p["email"], "name": p["name"]} for p in people],
            }
        await pr.send_bulk({"from": SENDER, **request})
        worker = pr.worker()
        with rsa_only_signer() if kind == RSA_ONLY else contextlib.nullcontext():
            await worker.signer.start()  # its start-up is not the messages' cost
        quiet_collector()  # as `postroom worker` does once started
        signers = worker.signer.pids
        pg_before = await backend_cpu(pr)
        signer0 = cpu_seconds(signers)
        idle0, waited0 = cpu_idle(), run_queue_seconds(os.getpid())
        cpu0, t0 = time.process_time(), time.perf_counter()
        async with running(worker):  # the loop of `postroom worker`
            await until_recorded(worker, n)
            signer_cpu = cpu_seconds(signers) - signer0
            idle, waited = idle_share(idle0, cpu_idle()), run_queue_seconds(os.getpid())
            wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        pg_after = await backend_cpu(pr)
        spent = db_cpu(pg_before, pg_after)
        counts = await job_counts(pr.engine)
        first, last = await delivery_window(pr.engine)
        await pr.aclose()
        assert counts["completed"] == n, counts
        assert first is not None and last is not None
        return {"db": db.kind, "kind": kind, "rate": n / max(last - first, 1e-9),
                "cpu_us": cpu / n * 1e6, "db_cpu_us": spent / n * 1e6,
                "signer_cpu_us": signer_cpu / n * 1e6, "signers": len(signers), "idle": idle,
                "worker_waited": None if waited is None or waited0 is None
                else (waited - waited0) / wall}  # fmt: skip
    finally:
        await db.drop()


def post_office_send_many(n: int, port: int) -> dict[str, Any] | None:
    python = BENCH_DIR / ".venv" / "bin" / "python"
    if not python.exists():
        log("peer skipped: bench/.venv is missing (see bench/README.md)")
        return None
    run = BENCH_DIR / "post_office_project" / "run.py"
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "po.db"
        base = [str(python), str(run), "--db", str(db), "--port", str(port)]
        subprocess.run([*base, "migrate"], check=True)
        out = subprocess.run(
            [*base, "send-many", "--messages", str(n)], check=True, capture_output=True, text=True
        )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def rsa_sign_us(rounds: int = 200) -> float:
    """CPU µs of one RSA-2048 PKCS#1 v1.5 signature on this machine (the median of
    ``rounds``), the part of DKIM no code of Postroom's can make cheaper."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    digest = bytes(32)
    times = []
    for _ in range(rounds):
        t0 = time.process_time()
        key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        times.append(time.process_time() - t0)
    return statistics.median(times) * 1e6


def all_cpu_us(d: dict[str, Any]) -> float:
    """CPU µs a message of every process: this one, the DKIM signers, PostgreSQL's."""
    return float(d["cpu_us"] + d["signer_cpu_us"] + d["db_cpu_us"])


def least_cost(plain: dict[str, Any], signed: dict[str, Any]) -> float:
    """The cost ``signed`` would have if nothing were lost to scheduling: its rate
    bounded by every CPU of the machine busy with its CPU a message (this process, the
    signers, PostgreSQL; smtp-sink's not counted, so this is a lower bound) and by
    its busiest process (the worker and each signer use one CPU at most)."""
    busiest = max(signed["cpu_us"], signed["signer_cpu_us"] / max(1, signed["signers"]))
    best = min((os.cpu_count() or 1) / all_cpu_us(signed), 1 / busiest) * 1e6
    return max(0.0, 1 - best / plain["rate"])


def print_deliveries(deliveries: list[dict[str, Any]], kinds: tuple[str, ...]) -> None:
    """A row per database and round, then the medians: each row's rate, its cost against
    plain (and the least it could be on this machine, :func:`least_cost`), the CPU a
    message of every process (this one, the DKIM signers, PostgreSQL) and of the
    signers alone."""
    signed = [k for k in kinds if k not in ("plain", "template")]
    print("\n| database | round | " + " | ".join(f"{k} /s" for k in kinds)
          + " | " + " | ".join(f"cost: {k}" for k in kinds[1:])
          + " | least possible cost: template + DKIM"
          + " | " + " | ".join(f"CPU µs: {k}" for k in kinds)
          + " | " + " | ".join(f"of which signer: {k}" for k in signed) + " |")  # fmt: skip
    print("| --- | --- |" + " ---: |" * (3 * len(kinds) + len(signed)))

    n = len(kinds)
    for db in dict.fromkeys(d["db"] for d in deliveries):
        rounds: list[list[float]] = []
        for round_ in sorted({d["round"] for d in deliveries if d["db"] == db}):
            by = {d["kind"]: d for d in deliveries if d["db"] == db and d["round"] == round_}
            rounds.append([
                *(by[k]["rate"] for k in kinds),
                *(1 - by[k]["rate"] / by["plain"]["rate"] for k in kinds[1:]),
                least_cost(by["plain"], by["template + DKIM"]),
                *(all_cpu_us(by[k]) for k in kinds),
                *(by[k]["signer_cpu_us"] for k in signed),
            ])  # fmt: skip
        median = [statistics.median(column) for column in zip(*rounds, strict=True)]
        for label, row in [*((str(i + 1), r) for i, r in enumerate(rounds)), ("median", median)]:
            cells = [f"{x:,.0f}" for x in row[:n]] + [f"{x:.0%}" for x in row[n : 2 * n]]
            cells += [f"{x:,.0f}" for x in row[2 * n :]]
            print(f"| {db} | {label} | " + " | ".join(cells) + " |")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--delivered", type=int, default=5000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--peers", action="store_true")
    parser.add_argument(
        "--dkim-signers",
        type=int,
        default=None,
        help="DKIM signer processes of the worker (POSTROOM_WORKER__DKIM_SIGNERS; 0: none)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="delivery rounds (each row once) per database"
    )
    parser.add_argument(
        "--rsa-only",
        action="store_true",
        help=f"a fourth delivery row, {RSA_ONLY!r}: what signing in a helper can reach here",
    )
    parser.add_argument("--no-enqueue", action="store_true", help="only the delivery rows")
    parser.add_argument("--no-delivery", action="store_true", help="only the enqueue rows")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.rsa_only and args.dkim_signers == 0:
        parser.error(
            "--rsa-only replaces the signer processes: it needs --dkim-signers of 1 or more"
        )

    if args.dkim_signers is not None:
        os.environ["POSTROOM_WORKER__DKIM_SIGNERS"] = str(args.dkim_signers)
    pg = args.database_url or os.environ.get(PG_ENV)
    servers: list[str | None] = ([] if args.no_sqlite else [None]) + ([pg] if pg else [])
    rows = []
    for server in [] if args.no_enqueue else servers:
        log(f"POST /bulk of {args.recipients} on {'postgresql' if server else 'sqlite'}")
        r = await bulk_enqueue(server, args.recipients)
        log(
            f"  {r['rate']:,.0f} recipients/s ({r['seconds']:.1f} s, body {r['body_mb']:.1f} MB;"
            f" CPU {r['cpu']:.1f} s here, {r['db_cpu']:.1f} s in PostgreSQL)"
        )
        rows.append(r)
    deliveries: list[dict[str, Any]] = []
    kinds = (*KINDS, RSA_ONLY) if args.rsa_only else KINDS
    if not args.no_delivery and servers:
        log(f"one RSA-2048 signature here: {rsa_sign_us():,.0f} µs CPU (median of 200)")
    with Sink() as sink:
        for server in [] if args.no_delivery else servers:
            for round_ in range(args.rounds):
                # alternating order, so a drift of the machine's speed favours no row
                for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
                    where = "postgresql" if server else "sqlite"
                    log(f"round {round_ + 1}: deliver {args.delivered} ({kind}) on {where}")
                    d = await delivered(server, args.delivered, sink, kind)
                    waited = d["worker_waited"]
                    log(f"  {d['rate']:,.0f} delivered/s ({d['cpu_us']:,.0f} µs CPU a message here,"
                        f" {d['signer_cpu_us']:,.0f} µs in {d['signers']} DKIM signer process(es),"
                        f" {d['db_cpu_us']:,.0f} µs in PostgreSQL; the machine idle {d['idle']:.0%}"
                        + ("" if waited is None else f", the worker waiting for a CPU {waited:.0%}")
                        + " of the time)")  # fmt: skip
                    deliveries.append({**d, "round": round_ + 1})
        peer = post_office_send_many(args.recipients, sink.port) if args.peers else None
    print("\n| database / peer | recipients | enqueue recipients/s | CPU µs/recipient"
          " (process) | CPU µs/recipient (PostgreSQL) |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        n = r["n"]
        pg_text = f"{r['db_cpu'] / n * 1e6:,.0f}" if r["db"] == "postgresql" else "-"
        print(f"| Postroom POST /bulk, {r['db']} | {n:,} | {r['rate']:,.0f} | "
              f"{r['cpu'] / n * 1e6:,.0f} | {pg_text} |")  # fmt: skip
    if peer:
        n = peer["enqueued"]
        cpu_us = peer["cpu_seconds"] / n * 1e6
        print(f"| django-post_office send_many, sqlite | {n:,} | "
              f"{n / peer['seconds']:,.0f} | {cpu_us:,.0f} | - |")  # fmt: skip
    if deliveries:
        print_deliveries(deliveries, kinds)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
