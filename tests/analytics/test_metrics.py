"""``GET /metrics``: parsed with the Prometheus text parser; figures from the database,
so jobs handled by separate workers (separate Postroom instances here) all count."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.config import Settings
from tests.analytics.seed import jobs_t
from tests.support.payloads import email as email_body
from tests.support.providers import add_provider, disable_all

SEND = "/api/system/email/send"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_count_what_every_worker_did(
    client: httpx.AsyncClient, postroom: Postroom, settings: Settings, clock: ManualClock
) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="steady", type="fake", config={"script": ["rejected"]})
    for _ in range(3):
        assert (await client.post(SEND, json=email_body())).status_code == 202
    # another process's worker: its own Postroom on the same database
    other = Postroom(settings, clock=clock)
    await other.start(migrate_schema=False)
    try:
        worker = other.worker()
        await worker.router.refresh(force=True)
        await worker.drain()
        await worker.aclose()
    finally:
        await other.aclose()
    # two more: one waiting since 90 s, one held by a worker
    for _ in range(2):
        assert (await client.post(SEND, json=email_body())).status_code == 202
    clock.advance(90)
    async with postroom.engine.begin() as conn:
        await conn.execute(
            update(jobs_t)
            .where(
                jobs_t.c.id
                == jobs_t.select()
                .with_only_columns(jobs_t.c.id)
                .where(jobs_t.c.status == "pending")
                .limit(1)
                .scalar_subquery()
            )
            .values(status="processing", locked_by="w-elsewhere")
        )

    response = await client.get("/metrics")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    q = (("queue", "transactional"),)
    assert got[("postroom_queue_depth", q)] == 1
    assert got[("postroom_worker_in_flight", q)] == 1
    assert got[("postroom_queue_oldest_pending_age_seconds", q)] == 90
    assert got[("postroom_queue_paused", q)] == 0
    assert got[("postroom_sends_total", (("outcome", "sent"), ("provider", "steady")))] >= 1
    sent = sum(
        v
        for (n, labels), v in got.items()
        if n == "postroom_sends_total" and ("outcome", "sent") in labels
    )
    assert sent == 2
    assert got[("postroom_sends_total", (("outcome", "failed"), ("provider", "steady")))] == 1
    count = got[("postroom_send_duration_seconds_count", (("provider", "steady"),))]
    inf = got[("postroom_send_duration_seconds_bucket", (("le", "+Inf"), ("provider", "steady")))]
    assert count == inf >= 1


async def test_metrics_need_a_read_key(client: httpx.AsyncClient, postroom: Postroom) -> None:
    assert (await client.get("/metrics", headers={"Authorization": ""})).status_code == 401
    key, _ = await postroom.keys.create("scraper", ["read"])
    assert (
        await client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
    ).status_code == 200
    sender, _ = await postroom.keys.create("sender", ["send"])
    assert (
        await client.get("/metrics", headers={"Authorization": f"Bearer {sender}"})
    ).status_code == 403


async def test_metrics_listener_answers_without_a_key_on_its_own_socket(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    import socket

    from postroom.analytics.metrics_server import MetricsServer

    assert (await client.post(SEND, json=email_body())).status_code == 202
    server = await MetricsServer(postroom, socket.create_server(("127.0.0.1", 0))).start()
    host, port = server.address
    try:
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as scraper:
            response = await scraper.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
            got = samples(response.text)
            assert got[("postroom_queue_depth", (("queue", "transactional"),))] == 1
            assert (await scraper.get("/api/system/email/analytics")).status_code == 404
            assert (await scraper.post("/metrics")).status_code == 405
    finally:
        await server.aclose()
    # the API's own /metrics still wants a key with the read scope
    assert (await client.get("/metrics", headers={"Authorization": ""})).status_code == 401


def test_serve_opens_the_metrics_port(tmp_path: Path) -> None:
    """``postroom serve --metrics-port``: a real process, scraped over a real socket."""
    import os
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        api_port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    env.update(POSTROOM_DATA_DIR=str(tmp_path), POSTROOM_METRICS__HOST="127.0.0.1")
    args = ["serve", "--no-workers", "--port", str(api_port), "--metrics-port", "0"]
    with subprocess.Popen(
        [sys.executable, "-m", "postroom", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stderr is not None
            deadline = time.monotonic() + 60
            url = None
            while url is None and time.monotonic() < deadline:
                line = proc.stderr.readline()
                if not line:
                    break
                if line.startswith("Metrics: "):
                    url = line.split()[1]
            assert url is not None, "serve printed no metrics address"
            response = httpx.get(url, timeout=30)
            assert response.status_code == 200
            names = {f.name for f in text_string_to_metric_families(response.text)}
            assert {"postroom_queue_depth", "postroom_sends"} <= names
            api = httpx.get(f"http://127.0.0.1:{api_port}/metrics", timeout=30)
            assert api.status_code == 401
        finally:
            proc.terminate()
            proc.communicate(timeout=30)
