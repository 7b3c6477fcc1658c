"""``postroom serve`` as a real process: the operator's path, crash included."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.support.payloads import email
from tests.support.processes import env_for, run_cli, serving

SEND = "/api/system/email/send"


@pytest.fixture
def env(tmp_path: Path, database_url: str, postroom: object) -> dict[str, str]:
    # the ``postroom`` fixture has migrated and emptied the database for us
    return env_for(tmp_path / "var", database_url)


def create_key(env: dict[str, str]) -> str:
    result = run_cli(["keys", "create", "--scopes", "admin"], env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def wait_for(path: Path, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def test_send_over_http_lands_in_the_outbox(env: dict[str, str], tmp_path: Path) -> None:
    key = create_key(env)
    headers = {"Authorization": f"Bearer {key}"}
    with serving(env) as (base, _):
        response = httpx.post(base + SEND, json=email(), headers=headers)
        assert response.status_code == 202, response.text
        email_id = response.json()["id"]
        wait_for(tmp_path / "var" / "outbox" / f"{email_id}.eml", timeout=5)
        for _ in range(100):
            status = httpx.get(f"{base}/api/system/email/status/{email_id}", headers=headers)
            if status.json()["status"] == "sent":
                break
            time.sleep(0.02)
        assert status.json()["status"] == "sent"
        assert httpx.post(base + SEND, json=email()).status_code == 401


def test_kill_9_after_202_still_delivers_after_restart(env: dict[str, str], tmp_path: Path) -> None:
    key = create_key(env)
    headers = {"Authorization": f"Bearer {key}"}
    with serving(env, "--no-workers") as (base, proc):
        response = httpx.post(base + SEND, json=email(), headers=headers)
        assert response.status_code == 202
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    email_id = response.json()["id"]
    eml = tmp_path / "var" / "outbox" / f"{email_id}.eml"
    assert not eml.exists()
    with serving(env):
        wait_for(eml)


def test_cli_send_and_burst_worker(env: dict[str, str], tmp_path: Path) -> None:
    sent = run_cli(
        ["send", "--to", "Ann <ann@example.com>", "--from", "app@example.com",
         "--subject", "Hi", "--text", "Hello"],
        env,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    email_id = sent.stdout.split()[1]
    worked = run_cli(["worker", "--burst"], env)
    assert worked.returncode == 0, worked.stderr
    assert "Processed 1 jobs" in worked.stdout
    assert (tmp_path / "var" / "outbox" / f"{email_id}.eml").exists()
    shown = run_cli(["status", email_id], env)
    assert shown.returncode == 0, shown.stderr
    assert f"{email_id}  sent  'Hi'" in shown.stdout
    assert "ann@example.com  to    sent" in shown.stdout


def test_cli_errors_are_one_line_and_nonzero(env: dict[str, str]) -> None:
    bad = run_cli(["send", "--to", "nope", "--from", "app@example.com", "--subject", "x"], env)
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr
    assert "to.0.email" in bad.stderr and "content" in bad.stderr
    revoke = run_cli(["keys", "revoke", "pr_missing"], env)
    assert revoke.returncode != 0 and "no API key" in revoke.stderr
    broken = run_cli(["keys", "list"], {**env, "POSTROOM_PORT": "not-a-port"})
    assert broken.returncode == 2 and "invalid configuration" in broken.stderr


def test_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    env = env_for(tmp_path / "var", "postgresql://postroom@127.0.0.1:1/none")
    result = run_cli(["keys", "list"], env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "cannot reach the database" in result.stderr


def test_broken_database_file_is_one_clear_line(tmp_path: Path) -> None:
    data = tmp_path / "var"
    data.mkdir()
    (data / "postroom.db").write_bytes(b"this is not a database" * 100)
    env = env_for(data, f"sqlite:///{data / 'postroom.db'}")
    result = run_cli(["keys", "list"], env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "database error: file is not a database" in result.stderr


def test_busy_port_is_one_line_before_anything_starts(env: dict[str, str], tmp_path: Path) -> None:
    queued = run_cli(
        ["send", "--to", "ann@example.com", "--from", "app@example.com", "--subject", "Hi",
         "--text", "Hello", "--quiet"],
        env,
    )  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    email_id = queued.stdout.strip()
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli(["serve", "--port", str(port)], env, timeout=30)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "--port" in line and "POSTROOM_PORT" in line
    assert result.stdout == ""  # no banner for a server that never ran
    # no worker started: the queued message is still waiting
    assert not (tmp_path / "var" / "outbox" / f"{email_id}.eml").exists()
    shown = run_cli(["status", email_id, "--json"], env)
    assert json.loads(shown.stdout)["status"] == "queued"
