"""Run ``postroom`` as real subprocesses: the way operators run it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

POSTROOM = [sys.executable, "-m", "postroom"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env_for(data_dir: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTROOM_")}
    env.update(
        POSTROOM_DATA_DIR=str(data_dir),
        POSTROOM_DATABASE_URL=database_url,
        POSTROOM_WORKER__POLL_INTERVAL_S="0.05",
        POSTROOM_LOG_LEVEL="WARNING",
        **extra,
    )
    return env


def run_cli(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*POSTROOM, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@contextmanager
def serving(
    env: dict[str, str], *args: str, output: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``postroom serve`` on a free port; yields its base URL and the process.

    With ``output``, everything it prints (stdout and stderr) goes to that file, to be
    read once the process has stopped.
    """
    port = free_port()
    sink = output.open("w") if output else None
    proc = subprocess.Popen(
        [*POSTROOM, "serve", "--port", str(port), *args],
        env=env,
        stdout=sink or subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else output.read_text() if output else ""
                raise AssertionError(f"postroom serve exited early:\n{out}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("postroom serve did not become healthy in 30 s")
            time.sleep(0.05)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if sink:
            sink.close()
