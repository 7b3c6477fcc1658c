"""Open-pixel, click and webhook intake rates, each event durably recorded.

By default Postroom's app runs as a real server (``postroom serve --no-workers``,
uvicorn on uvloop with httptools, ``--processes N``) and ``wrk`` loads it over
TCP, cycling through many distinct valid tokens (a Lua script reads the paths
this run signs); the ceiling is a bare Starlette handler returning the same GIF,
served the same way (same uvicorn, loop, parser and N) and loaded by the same
script. Each answered pixel or click has its event committed before the answer
(concurrent ones share a commit); after each row the server is stopped and the
stored events are counted against wrk's 2xx/3xx answers. CPU us/op is the
server processes' CPU time (from /proc) per answered request, DB us/op that of
the PostgreSQL backends serving the benchmark's database.

``--in-process`` runs the old measurement instead: everything in this process
over ASGI with httpx's in-process client (which then dominates the cost). The
webhook rows always run in-process (signed batches of 100 through the ASGI app).

    .venv/bin/python bench/tracking.py --seconds 10 \\
        --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from harness import (
    FreshDatabase,
    backend_cpu,
    cpu_seconds,
    db_cpu,
    log,
    postroom_command,
    stop_process,
)
from sink import free_port
from sqlalchemy import Table, func, insert, select, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from postroom.api.app import create_app
from postroom.api.routes.links import _NO_STORE
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
    return Response(PIXEL, media_type="image/gif", headers=_NO_STORE)


async def _healthz(_: Request) -> Response:
    return Response(b"ok")


def bare_app() -> Starlette:
    """The ceiling: the pixel's answer with nothing recorded."""
    return Starlette(routes=[Route("/t/o/{token}", _bare), Route("/healthz", _healthz)])


def serve_bare(port: int, processes: int) -> None:
    """Serve :func:`bare_app` as ``postroom serve`` serves Postroom: the same listening
    socket, uvicorn settings, uvloop loop, httptools parser and ``--processes`` fork."""
    import uvicorn

    from postroom.cli import multiprocess
    from postroom.cli.common import run_loop
    from postroom.cli.serving import listen

    sock = listen("127.0.0.1", port)

    def one(_index: int) -> None:
        config = uvicorn.Config(
            bare_app(), log_level="warning", log_config=None, access_log=False, http="auto"
        )
        run_loop(uvicorn.Server(config).serve(sockets=[sock]))

    if processes == 1:
        one(0)
    else:
        multiprocess.supervise(processes, one)


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


#: wrk's requests: each thread cycles through the paths file (one signed path a
#: line) from its own offset, as a browser user agent; ``done`` prints the counts
WRK_SCRIPT = """
local paths, n, i = {}, 0, 0
local threads = 0
local headers = {["User-Agent"] = "@UA@"}

function setup(thread)
  thread:set("offset", threads * 7919)
  threads = threads + 1
end

function init(args)
  for line in io.lines(args[1]) do
    n = n + 1
    paths[n] = line
  end
  i = offset % n
end

function request()
  i = i % n + 1
  return wrk.format("GET", paths[i], headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK {\\"requests\\": %d, \\"us\\": %d, \\"status\\": %d, \\"connect\\": %d, " ..
    "\\"read\\": %d, \\"write\\": %d, \\"timeout\\": %d, \\"p50_us\\": %d, " ..
    "\\"p99_us\\": %d}\\n",
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
""".replace("@UA@", BROWSER)

Row = tuple[str, int, float, float, float, str]


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``serve --processes N`` forks its API processes)."""
    out, i = [pid], 0
    while i < len(out):
        for task in Path(f"/proc/{out[i]}/task").glob("*"):
            try:
                out += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
        i += 1
    return out


def wrk(
    port: int, script: Path, paths: Path, *, seconds: float, args: argparse.Namespace
) -> tuple[dict[str, int], float]:
    """One wrk run: its counts (``done`` of :data:`WRK_SCRIPT`) and its own CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [
            "wrk",
            f"-t{args.threads}",
            f"-c{args.concurrency}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}",
            "--",
            str(paths),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRK "))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(line[4:]), cpu


async def wait_healthy(port: int, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"server exited {proc.returncode}: {log_path.read_text()[-2000:]}")
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("the server did not answer /healthz within 60 s")


async def served_row(
    db: FreshDatabase,
    pr: Postroom,
    name: str,
    kind: str | None,
    paths: list[str],
    args: argparse.Namespace,
) -> Row:
    """Serve (Postroom when ``kind`` is set, else the bare app), warm it with wrk for a
    second, then measure ``args.seconds`` of wrk; stop it and count the events."""
    port = free_port()
    label = kind or "bare"
    paths_file, script = db.root / f"{label}.paths", db.root / "wrk.lua"
    paths_file.write_text("\n".join(paths) + "\n")
    script.write_text(WRK_SCRIPT)
    if kind:
        command = [*postroom_command(), "serve", "--no-workers", "--host", "127.0.0.1"]
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "--serve-bare"]
    command += ["--port", str(port), "--processes", str(args.processes)]
    log_path = db.root / f"{label}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            command,
            env=db.env(),
            cwd=db.root,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    before = await event_count(pr, kind) if kind else 0
    profiler: subprocess.Popen[bytes] | None = None
    try:
        await wait_healthy(port, proc, log_path)
        warm, _ = wrk(port, script, paths_file, seconds=1, args=args)
        log(f"{name}: {args.seconds:g} s of wrk, {args.concurrency} connections")
        pids = process_tree(proc.pid)
        if args.profile and (kind or "bare") in (args.profile, "bare"):
            profiler = attach_profiler(pids[-1], db.root / f"{label}.txt", args.seconds)
        cpu, pg, commits = cpu_seconds(pids), await backend_cpu(pr), await xact_commits(pr)
        result, wrk_cpu = wrk(port, script, paths_file, seconds=args.seconds, args=args)
        cpu = cpu_seconds(pids) - cpu
        pg_s = db_cpu(pg, await backend_cpu(pr))
        commits = await xact_commits(pr) - commits
    finally:
        if profiler is not None:
            profiler.wait(timeout=args.seconds + 30)
            log(f"profile: {db.root / f'{label}.txt'} (kept with --keep)")
        status = stop_process(proc)
        if status not in (0, -signal.SIGTERM):  # uvicorn ends by raising SIGTERM again
            log(f"{name}: server exited {status}: {log_path.read_text()[-2000:]}")
    answered = result["requests"] - result["status"]
    errors = {k: result[k] for k in ("status", "connect", "read", "write", "timeout") if result[k]}
    wrk_us = 1e6 * wrk_cpu / max(answered, 1)
    note = f"wrk CPU {wrk_us:.0f} us/op, p99 {result['p99_us'] / 1000:.1f} ms"
    if errors:
        note += f", ERRORS {errors}"
    if kind:
        ok = answered + warm["requests"] - warm["status"]
        stored = await event_count(pr, kind) - before
        # requests in flight when wrk stops are answered (and stored) after it counted
        extra = stored - ok
        fine = 0 <= extra <= 2 * args.concurrency
        note += f", {stored} events for {ok} answers" + ("" if fine else " (MISMATCH)")
        if commits:
            note += f", {commits} transactions"
    return (name, answered, result["us"] / 1e6, cpu, pg_s, note)


async def xact_commits(pr: Postroom) -> int:
    """Transactions committed in the benchmark's database so far (PostgreSQL; 0 on
    SQLite): one per batch of pixels or clicks, and a few reads of this process's own."""
    if pr.engine.dialect.name != "postgresql":
        return 0
    async with pr.engine.connect() as conn:
        stmt = text("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        return int((await conn.execute(stmt)).scalar_one())


def attach_profiler(pid: int, output: Path, seconds: float) -> subprocess.Popen[bytes]:
    """``py-spy record`` on the (last forked) server process for ``seconds``: collapsed
    stacks (one line each, a count at the end), for a flame graph or ``sort``."""
    spy = Path(sys.executable).with_name("py-spy")
    cmd = [str(spy), "record", "--pid", str(pid), "--nonblocking", "--rate", "250"]
    cmd += ["--format", "raw", "--duration", str(max(1, int(seconds)))]
    return subprocess.Popen(
        [*cmd, "--output", str(output)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def in_process_row(
    pr: Postroom, name: str, target: Any, kind: str | None, paths: list[str], args: Any
) -> Row:
    log(f"{name}: {args.seconds} s at concurrency {args.concurrency}, in process")
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
    return (name, answered, elapsed, cpu, pg_s, note)


async def main(args: argparse.Namespace) -> None:
    db = FreshDatabase(args.database_url)
    await db.create()
    pr = Postroom(db.settings())
    rows: list[Row] = []
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
        app = create_app(pr, workers=0)
        for name, target, paths, kind in (
            ("bare Starlette GIF", bare_app(), pixels, None),
            ("open pixel (recorded)", app, pixels, "opened"),
            ("click redirect (recorded)", app, clicks, "clicked"),
        ):
            if kind and args.only not in (None, kind):
                continue
            if args.in_process:
                rows.append(await in_process_row(pr, name, target, kind, paths, args))
            else:
                rows.append(await served_row(db, pr, name, kind, paths, args))
        for n, senders in enumerate(sorted({1, args.webhook_concurrency})):
            if args.only not in (None, "webhook") or not args.webhook_batches:
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
            rows.append((name, recorded, elapsed, cpu, pg_s, "events/s, in process"))
    finally:
        await pr.aclose()
        if args.keep:
            log(f"kept {db.root} (the database too)")
        else:
            await db.drop()
    ceiling = rows[0][1] / rows[0][2]
    how = "in process" if args.in_process else f"served by {args.processes} process(es), wrk"
    print(
        f"\n{db.label}, {how}, {args.concurrency} connections, {args.recipients} recipients, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
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
    parser.add_argument(
        "--recipients", type=int, default=10000, help="sent emails, one token each per kind"
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="server processes (Postroom's and the bare app's)"
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--in-process", action="store_true", help="the old ASGI, in-process measurement"
    )
    parser.add_argument(
        "--profile",
        choices=("opened", "clicked"),
        help="py-spy collapsed stacks of that row's (last) server process and of the bare "
        "handler's, in the run's directory",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and directory")
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
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
    parsed = parser.parse_args()
    if parsed.serve_bare:
        serve_bare(parsed.port, parsed.processes)
    else:
        asyncio.run(main(parsed))
