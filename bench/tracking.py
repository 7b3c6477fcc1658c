"""Open-pixel, click and webhook intake rates, each event durably recorded.

Everything runs in this process over ASGI (httpx's ASGITransport, no sockets), so
the figures are the application's and the database's cost, not a web server's:
a bare Starlette handler returning the same GIF is measured the same way as the
ceiling. Each answered pixel or click request has its event committed before the
answer (concurrent ones share a commit); the run checks the event count against
the answers. CPU us/op is this process's CPU time (the in-process client's too)
per request or event, DB us/op the CPU time of the PostgreSQL backends serving
the benchmark's database.

    .venv/bin/python bench/tracking.py --seconds 10 \\
        --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from harness import FreshDatabase, backend_cpu, db_cpu, log
from sqlalchemy import Table, func, insert, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from postroom.api.app import create_app
from postroom.app import Postroom
from postroom.db.models import EmailJob, EmailProvider, EmailRecord, EmailTrackingEvent
from postroom.providers import credentials
from postroom.tracking.context import TrackingContext
from postroom.tracking.links import PIXEL

records_t = cast(Table, EmailRecord.__table__)
jobs_t = cast(Table, EmailJob.__table__)
events_t = cast(Table, EmailTrackingEvent.__table__)
providers_t = cast(Table, EmailProvider.__table__)
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Thunderbird/133.0"


async def _bare(_: Request) -> Response:
    return Response(PIXEL, media_type="image/gif")


async def load(
    app: Any, paths: list[str], *, seconds: float, concurrency: int, method: str = "GET"
) -> tuple[int, float]:
    """Requests answered 2xx/3xx within ``seconds``, ``concurrency`` at a time."""
    transport = httpx.ASGITransport(app=app)
    done = 0
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        deadline = time.perf_counter() + seconds
        start = time.perf_counter()

        async def one(worker: int) -> None:
            nonlocal done
            i = worker
            while time.perf_counter() < deadline:
                r = await client.request(
                    method, paths[i % len(paths)], headers={"user-agent": BROWSER}
                )
                if r.status_code >= 400:
                    raise SystemExit(f"{paths[i % len(paths)]}: {r.status_code} {r.text[:200]}")
                done += 1
                i += concurrency

        await asyncio.gather(*(one(w) for w in range(concurrency)))
        return done, time.perf_counter() - start


async def seed(pr: Postroom, recipients: int) -> list[tuple[str, str, str]]:
    """``recipients`` sent emails of one recipient each, as tracked mail is (a token
    names its email and that email's primary recipient); (email id, address, message
    id) each."""
    now = pr.clock.now()
    queue_id = (await pr.queues.for_request("marketing", None, scheduled_at=None, now=now)).queue.id
    jobs = [
        {
            "id": uuid.uuid4(),
            "queue_id": queue_id,
            "type": "marketing",
            "status": "completed",
            "data": {"request": {}},
            "created_at": now,
            "scheduled_at": now,
        }
        for _ in range(recipients)
    ]
    rows = [
        {
            "id": uuid.uuid4(),
            "job_id": job["id"],
            "recipient_email": f"r{i}@example.com",
            "sender_email": "app@example.com",
            "subject": "Bench",
            "type": "marketing",
            "status": "sent",
            "message_id": f"<benchmsg{i}>",  # SendGrid-like: no dots
            "sent_at": now - timedelta(hours=1),
            "created_at": now,
        }
        for i, job in enumerate(jobs)
    ]
    async with pr.engine.begin() as conn:
        await conn.execute(insert(jobs_t), jobs)
        await conn.execute(insert(records_t), rows)
    return [(str(r["job_id"]), r["recipient_email"], r["message_id"]) for r in rows]


async def event_count(pr: Postroom, kind: str) -> int:
    async with pr.engine.connect() as conn:
        stmt = select(func.count()).select_from(events_t).where(events_t.c.type == kind)
        return int((await conn.execute(stmt)).scalar_one())


async def webhook_rate(
    pr: Postroom,
    app: Any,
    targets: list[tuple[str, str, str]],
    batches: int,
    *,
    offset: int = 0,
    concurrency: int = 1,
) -> tuple[int, float]:
    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(
        key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    now = pr.clock.now()
    async with pr.engine.begin() as conn:
        await conn.execute(
            insert(providers_t).values(
                id=uuid.uuid4(),
                name=f"sg{offset}",
                type="sendgrid",
                enabled=False,
                priority=1,
                config={},
                authentication=credentials.encrypt(
                    pr.fernet, {"apiKey": "k", "webhookPublicKey": public}
                ),
                limits={},
                monitoring={},
                created_at=now,
                updated_at=now,
            )
        )
    bodies = []
    stamp = str(int(time.time()))
    for b in range(batches):
        events = [  # distinct event ids across runs: none is a duplicate
            {
                "email": targets[(b * 100 + i) % len(targets)][1],
                "event": "delivered",
                "timestamp": int(time.time()),
                "sg_event_id": f"ev-{offset + b}-{i}",
                "sg_message_id": targets[(b * 100 + i) % len(targets)][2].strip("<>"),
            }
            for i in range(100)
        ]
        body = json.dumps(events).encode()
        sig = base64.b64encode(key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
        bodies.append((body, sig))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        start = time.perf_counter()
        recorded = 0

        async def post(mine: list[tuple[bytes, str]]) -> None:
            nonlocal recorded
            for body, sig in mine:
                r = await client.post(
                    f"/api/system/email/webhook/sg{offset}",
                    content=body,
                    headers={
                        "X-Twilio-Email-Event-Webhook-Signature": sig,
                        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
                    },
                )
                if r.status_code != 200:
                    raise SystemExit(f"webhook: {r.status_code} {r.text[:200]}")
                recorded += r.json()["recorded"]

        # an ESP posts several batches at once; each sender posts its share in turn
        await asyncio.gather(*(post(bodies[i::concurrency]) for i in range(concurrency)))
        return recorded, time.perf_counter() - start


async def main(args: argparse.Namespace) -> None:
    db = FreshDatabase(args.database_url)
    await db.create()
    pr = Postroom(db.settings())
    try:
        await pr.start()
        targets = await seed(pr, args.recipients)
        ctx = TrackingContext.from_settings(pr.settings)
        soon = datetime.now(UTC)
        pixels = [
            "/t/o/"
            + ctx.signer.sign("o", {"e": j, "r": r}, expires=soon + timedelta(days=1))
            + ".gif"
            for j, r, _ in targets
        ]
        clicks = [
            "/t/c/"
            + ctx.signer.sign(
                "c",
                {"e": j, "r": r, "u": "https://example.com/p"},
                expires=soon + timedelta(days=1),
            )
            for j, r, _ in targets
        ]
        bare = Starlette(routes=[Route("/t/o/{token}", _bare)])
        app = create_app(pr, workers=0)
        rows: list[tuple[str, int, float, float, float, str]] = []
        for name, target, paths, kind in (
            ("bare Starlette GIF", bare, pixels, None),
            ("open pixel (recorded)", app, pixels, "opened"),
            ("click redirect (recorded)", app, clicks, "clicked"),
        ):
            if kind and args.only not in (None, kind):
                continue
            log(f"{name}: {args.seconds} s at concurrency {args.concurrency}")
            batches, cpu, pg = pr.link_events.batches, time.process_time(), await backend_cpu(pr)
            answered, elapsed = await load(
                target, paths, seconds=args.seconds, concurrency=args.concurrency
            )
            cpu = time.process_time() - cpu
            pg_s = db_cpu(pg, await backend_cpu(pr))
            note = ""
            if kind:
                stored = await event_count(pr, kind)
                note = f"{stored} events stored" + ("" if stored == answered else " (MISMATCH)")
                note += f", {pr.link_events.batches - batches} commits"
            rows.append((name, answered, elapsed, cpu, pg_s, note))
        for n, senders in enumerate(sorted({1, args.webhook_concurrency})):
            if args.only not in (None, "webhook"):
                break
            log(f"SendGrid webhook: {args.webhook_batches} batches of 100, {senders} at a time")
            cpu, pg = time.process_time(), await backend_cpu(pr)
            recorded, elapsed = await webhook_rate(
                pr,
                app,
                targets,
                args.webhook_batches,
                offset=n * args.webhook_batches,
                concurrency=senders,
            )
            cpu = time.process_time() - cpu
            pg_s = db_cpu(pg, await backend_cpu(pr))
            name = f"SendGrid webhook, 100/batch, {senders} at once"
            rows.append((name, recorded, elapsed, cpu, pg_s, "events/s"))
    finally:
        await pr.aclose()
        await db.drop()
    ceiling = rows[0][1] / rows[0][2]
    print(f"\n{db.label}, concurrency {args.concurrency}, {args.recipients} recipients")
    print(
        f"{'what':36} {'count':>8} {'per s':>10} {'x bare':>7} {'CPU us/op':>10} "
        f"{'DB us/op':>9}  note"
    )
    for name, count, elapsed, cpu, pg_s, note in rows:
        rate = count / elapsed
        per_op, db_op = 1e6 * cpu / max(count, 1), 1e6 * pg_s / max(count, 1)
        print(
            f"{name:36} {count:8d} {rate:10.0f} {rate / ceiling:7.2f} {per_op:10.0f} "
            f"{db_op:9.0f}  {note}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--database-url", default=None, help="PostgreSQL server URL (default: SQLite)"
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--webhook-batches", type=int, default=20)
    parser.add_argument(
        "--webhook-concurrency",
        type=int,
        default=4,
        help="also post this many webhook batches at a time (beside one at a time)",
    )
    parser.add_argument(
        "--only",
        choices=("opened", "clicked", "webhook"),
        help="beside the bare handler, time only this (e.g. under a profiler)",
    )
    asyncio.run(main(parser.parse_args()))
