"""The relay as operators run it: ``postroom smtpd`` and ``postroom serve --smtp-port``."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.config import Settings
from tests.providers.smtp_server import SMTPServer
from tests.relay.conftest import drain
from tests.support.processes import POSTROOM, env_for, free_port, serving
from tests.support.providers import add_provider, disable_all
from tests.support.tls import Certs, make_certs

QUEUED = re.compile(r"queued as ([0-9a-f-]{36})")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("relay-tls"))


def message(n: int) -> bytes:
    return (
        f"From: app@example.com\r\nTo: ann@example.com\r\nSubject: crash {n}\r\n"
        f"Message-ID: <crash{n}@example.com>\r\nDate: Thu, 01 Jan 2026 12:00:00 +0000\r\n"
        f"\r\nbody {n}\r\n"
    ).encode()


def relay_env(settings: Settings, certs: Certs, port: int) -> dict[str, str]:
    return env_for(
        settings.data_dir,
        settings.effective_database_url,
        POSTROOM_SMTP__PORT=str(port),
        POSTROOM_SMTP__TLS_CERT=str(certs.cert),
        POSTROOM_SMTP__TLS_KEY=str(certs.key),
    )


def wait_for_port(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the relay exited: {proc.stderr.read() if proc.stderr else ''}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("the relay did not listen in 30 s")


@contextmanager
def smtpd(env: dict[str, str], port: int, *args: str) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [*POSTROOM, "smtpd", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


async def test_kill_9_right_after_250_still_delivered(
    postroom: Postroom, settings: Settings, certs: Certs, clock: ManualClock
) -> None:
    key, _ = await postroom.keys.create("smtp", ["send"])
    port = free_port()
    ids = []
    with smtpd(relay_env(settings, certs, port), port) as proc:
        smtp = aiosmtplib.SMTP(
            hostname="127.0.0.1", port=port, start_tls=True, tls_context=certs.client
        )
        await smtp.connect()
        await smtp.login("api", key)
        for n in range(5):
            _, reply = await smtp.sendmail("app@example.com", ["ann@example.com"], message(n))
            match = QUEUED.search(reply)
            assert match, reply
            ids.append(match.group(1))
        proc.send_signal(signal.SIGKILL)  # no QUIT, no shutdown: the process is gone
        proc.wait()
        smtp.close()

    async with SMTPServer() as upstream:
        await disable_all(postroom)
        config = {"host": "127.0.0.1", "port": upstream.port}
        await add_provider(postroom, name="upstream", type="smtp", config=config)
        clock.set(datetime.now(UTC) + timedelta(seconds=1))  # the relay ran on the real clock
        assert await drain(postroom) == 5
        assert sorted(r.data for r in upstream.received) == sorted(message(n) for n in range(5))
    for email_id in ids:
        assert (await postroom.status(email_id)).status == "sent"


async def test_smtpd_processes_share_the_port(
    postroom: Postroom, settings: Settings, certs: Certs
) -> None:
    key, _ = await postroom.keys.create("smtp", ["send"])
    port = free_port()
    ids = []
    with smtpd(relay_env(settings, certs, port), port, "--processes", "2") as proc:
        listing = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
        deadline = time.monotonic() + 30
        while len(listing.read_text().split()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the parent binds the port, migrates, then forks
        assert len(listing.read_text().split()) == 2
        for n in range(8):  # a connection each: the kernel hands them to either process
            _, reply = await aiosmtplib.send(
                message(n),
                sender="app@example.com",
                recipients=["ann@example.com"],
                hostname="127.0.0.1",
                port=port,
                start_tls=True,
                tls_context=certs.client,
                username="api",
                password=key,
            )
            match = QUEUED.search(reply)
            assert match, reply
            ids.append(match.group(1))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    for email_id in ids:
        assert (await postroom.status(email_id)).status == "queued"


async def test_serve_with_smtp_port_queues_delivers_and_reports_status(
    postroom: Postroom, settings: Settings, certs: Certs
) -> None:
    key, _ = await postroom.keys.create("smtp", ["send"])
    port = free_port()
    env = relay_env(settings, certs, port)
    del env["POSTROOM_SMTP__PORT"]
    with serving(env, "--smtp-port", str(port)) as (base, _proc):
        _, reply = await aiosmtplib.send(
            message(1),
            sender="app@example.com",
            recipients=["ann@example.com", "hidden@example.com"],
            hostname="127.0.0.1",
            port=port,
            start_tls=True,
            tls_context=certs.client,
            username="api",
            password=key,
        )
        match = QUEUED.search(reply)
        assert match, reply
        email_id = match.group(1)
        headers = {"Authorization": f"Bearer {key}"}
        deadline = time.monotonic() + 30
        async with httpx.AsyncClient(base_url=base, headers=headers) as http:
            while True:
                status = (await http.get(f"/api/system/email/status/{email_id}")).json()
                if status["status"] == "sent" or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
    assert status["status"] == "sent", status
    assert sorted(r["email"] for r in status["recipients"]) == [
        "ann@example.com",
        "hidden@example.com",
    ]
    assert (settings.outbox_dir / f"{email_id}.eml").read_bytes() == message(1)


def test_smtpd_bad_tls_settings_are_one_line(settings: Settings, tmp_path: Path) -> None:
    env = env_for(
        settings.data_dir,
        settings.effective_database_url,
        POSTROOM_SMTP__TLS_CERT=str(tmp_path / "missing.pem"),
        POSTROOM_SMTP__TLS_KEY=str(tmp_path / "missing.key"),
    )
    done = subprocess.run(
        [*POSTROOM, "smtpd", "--port", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.strip().startswith("Error: cannot load the SMTP certificate")
    assert "Traceback" not in done.stderr


def test_smtpd_port_in_use_is_one_line(settings: Settings) -> None:
    env = env_for(settings.data_dir, settings.effective_database_url)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [*POSTROOM, "smtpd", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert done.stderr.strip().startswith(f"Error: cannot listen for SMTP on 127.0.0.1:{port}")
