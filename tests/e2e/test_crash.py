"""The crash test, small: SIGKILLed workers lose nothing and leave nothing stuck.

It runs ``bench/crash_test.py`` against Postfix's smtp-sink. Locally the test is
skipped when smtp-sink is not installed; in CI (``CI`` set) that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import databases

ROOT = Path(__file__).resolve().parents[2]


def _sink_installed() -> bool:
    return bool(shutil.which("smtp-sink") or Path("/usr/sbin/smtp-sink").exists())


@pytest.mark.parametrize("database", databases.backends())
def test_killed_workers_lose_nothing(database: str) -> None:
    if not _sink_installed():
        if os.environ.get("CI"):
            pytest.fail("smtp-sink is not installed; .ci/run installs Debian's postfix package")
        pytest.skip("smtp-sink is not installed (bench/sink.py install)")
    args = [
        sys.executable, str(ROOT / "bench" / "crash_test.py"),
        "--messages", "300", "--workers", "2", "--kills", "3", "--timeout", "120",
    ]  # fmt: skip
    if database == "postgres":
        args += ["--database-url", os.environ[databases.PG_ENV]]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert last.startswith("lost=0 "), done.stdout[-2000:] + done.stderr[-2000:]
    counts = dict(item.split("=") for item in last.split())
    assert counts["stuck"] == "0" and counts["delivered"] == "300"
    assert done.returncode == 0
