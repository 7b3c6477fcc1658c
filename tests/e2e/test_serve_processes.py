"""``postroom serve --processes N``: N API processes on one port, stopped as one service."""

from __future__ import annotations

import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support.payloads import email
from tests.support.processes import env_for, run_cli, serving

SEND = "/api/system/email/send"


@pytest.fixture
def env(tmp_path: Path, database_url: str, postroom: object) -> dict[str, str]:
    return env_for(tmp_path / "var", database_url)


def children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in tasks.read_text().split()] if tasks.exists() else []


def test_several_api_processes_share_the_port_and_stop_together(env: dict[str, str]) -> None:
    made = run_cli(["keys", "create", "--scopes", "admin"], env)
    assert made.returncode == 0, made.stderr
    headers = {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}
    with serving(env, "--no-workers", "--processes", "3") as (base, proc):
        pids = children(proc.pid)
        assert len(pids) == 3

        def post(_: int) -> int:
            with httpx.Client(base_url=base, headers=headers) as client:
                return client.post(SEND, json=email()).status_code

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(post, range(30)))
        assert statuses == [202] * 30
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        for pid in pids:  # every API process has gone with the parent
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
    queued = run_cli(["queues", "show", "transactional", "--json"], env)
    assert queued.returncode == 0, queued.stderr
    assert '"pending": 30' in queued.stdout.replace('"pending":30', '"pending": 30')


def test_one_api_process_dying_stops_the_service(env: dict[str, str]) -> None:
    with serving(env, "--no-workers", "--processes", "2") as (_, proc):
        first, second = children(proc.pid)
        os.kill(first, signal.SIGKILL)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("the parent kept serving with one process gone")
        assert code != 0
        assert not Path(f"/proc/{second}").exists() or _zombie(second)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True
