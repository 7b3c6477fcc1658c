"""What an operator sees of a running server: access and delivery logs, offline docs."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.payloads import email
from tests.support.processes import env_for, run_cli, serving

SEND = "/api/system/email/send"


@pytest.fixture
def env(tmp_path: Path, database_url: str, postroom: object) -> dict[str, str]:
    return {**env_for(tmp_path / "var", database_url), "POSTROOM_LOG_LEVEL": "INFO"}


def records(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_json_logs_have_a_line_per_request_and_per_delivery(
    env: dict[str, str], tmp_path: Path
) -> None:
    created = run_cli(["keys", "create", "--scopes", "admin"], env)
    key = created.stdout.strip()
    prefix = "_".join(key.split("_")[:2])
    log = tmp_path / "serve.log"
    with serving(env, "--log-format", "json", output=log) as (base, _):
        headers = {"Authorization": f"Bearer {key}"}
        response = httpx.post(base + SEND, json=email(), headers=headers)
        assert response.status_code == 202, response.text
        email_id = response.json()["id"]
        for _ in range(200):
            status = httpx.get(f"{base}/api/system/email/status/{email_id}", headers=headers)
            if status.json()["status"] == "sent":
                break
            time.sleep(0.02)
        assert httpx.get(f"{base}/api/system/email/status/nope").status_code == 401
    logged = records(log)
    assert key not in log.read_text()

    access = [r for r in logged if r["logger"] == "postroom.access"]
    [sent] = [r for r in access if r["method"] == "POST" and r["path"] == SEND]
    assert sent["status"] == 202 and sent["key"] == prefix and sent["level"] == "INFO"
    assert isinstance(sent["duration_ms"], float)
    assert any(r["status"] == 401 and r["key"] == "-" for r in access)

    [delivery] = [r for r in logged if r.get("email_id") == email_id]
    assert delivery["result"] == "sent"
    assert delivery["provider"] == "Development outbox"
    assert delivery["level"] == "INFO" and delivery["duration_ms"] >= 0


def test_text_logs_by_default(env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with serving(env, output=log) as (base, _):
        assert httpx.get(f"{base}/healthz").status_code == 200
    text = log.read_text()
    assert re.search(r" INFO postroom\.access: GET /healthz 200 [\d.]+ ms key=-\n", text), text


async def test_docs_work_offline(client: httpx.AsyncClient) -> None:
    for page in ("/docs", "/redoc"):
        response = await client.get(page)
        assert response.status_code == 200
        refs = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", response.text)
        assert refs, response.text
        for ref in refs:
            assert not urlsplit(ref).netloc, f"{page} loads {ref} from another host"
            asset = await client.get(ref)
            assert asset.status_code == 200, ref
        scripts = [r for r in refs if r.endswith(".js")]
        assert scripts, f"{page} loads no script"
    assert "http://" not in (await client.get("/docs")).text.replace("http://postroom.test", "")
