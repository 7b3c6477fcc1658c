"""``postroom worker`` as a process: SIGTERM stops it gracefully."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

from postroom.app import Postroom
from tests.support.payloads import email
from tests.support.processes import POSTROOM, env_for
from tests.support.providers import add_provider, disable_all


async def test_sigterm_releases_a_stuck_send_and_exits_cleanly(
    postroom: Postroom, database_url: str, tmp_path: Path
) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="stuck", type="fake", config={"script": ["hang"]})
    result = await postroom.send(email())
    env = env_for(tmp_path / "var", database_url, POSTROOM_WORKER__SHUTDOWN_GRACE_S="0.5")
    proc = subprocess.Popen(
        [*POSTROOM, "worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        for _ in range(300):  # until the worker has claimed it and is stuck sending
            if (await postroom.status(result.id)).job_status == "processing":
                break
            await asyncio.sleep(0.05)
        assert (await postroom.status(result.id)).job_status == "processing"
        proc.send_signal(signal.SIGTERM)
        returncode = await asyncio.to_thread(proc.wait, 15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _, err = proc.communicate()
    assert returncode == 0, err.decode()[-2000:]
    assert b"Traceback" not in err
    status = await postroom.status(result.id)
    assert status.job_status == "pending"  # given back for another worker, not stuck
    assert status.attempt_log[-1].error_code == "shutdown"
