"""The OpenAPI document describes what the server enforces: Schemathesis finds nothing.

Every operation is fuzzed (a bounded number of examples, positive and negative)
against a real ``postroom serve`` with every check that compares answers with the
document: schema-valid requests accepted, invalid ones refused, only documented
status codes, headers and bodies, 405s with a true ``Allow``. Deterministic
generation keeps the run the same on every machine; ``schemathesis.toml`` beside
this file holds the run's settings.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.databases import production_backend
from tests.support.processes import env_for, run_cli, serving

#: examples per operation and phase; enough to find a looser schema, quick enough for CI
MAX_EXAMPLES = 50
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path, database_url: str, postroom: object) -> dict[str, str]:
    return env_for(tmp_path / "var", database_url)


# one database: the document and the checks are the same on both, the run takes minutes
@pytest.mark.parametrize("backend", production_backend())
def test_schemathesis_finds_nothing(env: dict[str, str], tmp_path: Path) -> None:
    created = run_cli(["keys", "create", "--scopes", "admin"], env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    with serving(env, "--no-workers") as (base, _):
        stored = httpx.post(
            f"{base}/api/system/email/templates",
            headers={"Authorization": f"Bearer {key}"},
            json={"name": "contract", "subject": "Hello", "content": {"text": "Hello"}},
        )
        assert stored.status_code == 201, stored.text
        result = subprocess.run(
            [
                os.path.join(os.path.dirname(sys.executable), "schemathesis"),
                "--config-file",
                str(ROOT / "tests" / "api" / "schemathesis.toml"),
                "run",
                f"{base}/openapi.json",
                "--header",
                f"Authorization: Bearer {key}",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--generation-deterministic",
                "--no-color",
            ],
            env={**env, "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-2000:]


async def test_405_lists_every_method_of_the_path(client: httpx.AsyncClient) -> None:
    response = await client.patch("/api/system/email/providers/anything")
    assert response.status_code == 405
    assert response.headers["allow"] == "DELETE, GET, PUT"
    assert (await client.delete("/api/system/email/providers")).headers["allow"] == "GET, POST"


async def test_the_document_states_public_health_415_and_required_from(
    client: httpx.AsyncClient,
) -> None:
    doc = (await client.get("/openapi.json")).json()
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    for path, method in [("/send", "post"), ("/providers", "post"), ("/test", "post")]:
        responses = doc["paths"]["/api/system/email" + path][method]["responses"]
        assert {"415", "422"} <= set(responses), path
    schemas = doc["components"]["schemas"]
    assert "from" in schemas["EmailRequest"]["required"]  # no POSTROOM_DEFAULT_FROM here
    assert "smtp" in schemas["ProviderCreate"]["properties"]["type"]["enum"]
