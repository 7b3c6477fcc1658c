"""Browser fixtures: one ``postroom serve`` per session, one headless Chromium per module.

The browser lives only as long as its module: Playwright's sync API keeps an event
loop running in the thread, which the async tests of other modules must not meet.

The browser is Debian's ``chromium`` (CI installs it), driven by Playwright and
launched with that executable: no browser is downloaded. Without Chromium the
browser tests are skipped, except under ``CI``, where they fail. A failed test
leaves a screenshot in ``test-screenshots/`` (or ``$POSTROOM_SCREENSHOT_DIR``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from postroom.api.app import create_app
from postroom.app import Postroom
from tests.support.processes import env_for, run_cli, serving

#: the admin every HTTP-level dashboard test signs in as
PASSWORD = "a long password"


@pytest.fixture
async def web(postroom: Postroom) -> AsyncIterator[httpx.AsyncClient]:
    """The app over ASGI, with the admin ``ann`` (``PASSWORD``) created."""
    await postroom.users.create("ann", PASSWORD, "admin")
    transport = httpx.ASGITransport(app=create_app(postroom, workers=0))
    async with httpx.AsyncClient(transport=transport, base_url="https://dash.test") as client:
        yield client


ADMIN = ("ann", "correct horse battery")
VIEWER = ("vic", "viewer password 1")
SCREENSHOTS = Path(os.environ.get("POSTROOM_SCREENSHOT_DIR", "test-screenshots"))


@dataclass
class Server:
    base: str
    key: str
    env: dict[str, str]

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.base}/api/system/email{path}",
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=10,
            **kwargs,
        )

    def send(self, **fields: Any) -> str:
        body = {
            "to": [{"email": "reader@example.com", "name": "Reader"}],
            "from": {"email": "app@example.com", "name": "App"},
            "subject": "Hello",
            "content": {"text": "Hello there", "html": "<p>Hello there</p>"},
            **fields,
        }
        answer = self.api("POST", "/send", json=body)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])

    def wait_sent(self, email_id: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while (status := self.api("GET", f"/status/{email_id}").json()["status"]) != "sent":
            assert status in ("queued", "sending"), status
            assert time.monotonic() < deadline, f"{email_id} still {status}"
            time.sleep(0.05)


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required under CI: apt-get install -y chromium")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("dashboard") / "var"
    env = env_for(data, f"sqlite:///{data}/postroom.db")
    assert run_cli(["migrate"], env).returncode == 0
    for (name, password), role in ((ADMIN, "admin"), (VIEWER, "viewer")):
        made = run_cli_input(
            ["users", "create", name, "--role", role, "--password-stdin"], env, password
        )
        assert made.returncode == 0, made.stderr
    created = run_cli(["keys", "create", "--scopes", "admin"], env)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    with serving(env) as (base, _proc):
        yield Server(base=base, key=key, env=env)


def run_cli_input(args: list[str], env: dict[str, str], stdin: str) -> Any:
    import subprocess

    from tests.support.processes import POSTROOM

    return subprocess.run(
        [*POSTROOM, *args], env=env, input=stdin + "\n", capture_output=True, text=True, check=False
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        # as root (CI) Chromium needs --no-sandbox; containers often have a tiny /dev/shm
        chromium = pw.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@dataclass
class Dialogs:
    """Every alert/confirm a page opened: a script from mail must never open one."""

    messages: list[str]


@pytest.fixture(scope="module")
def _context(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(base_url=server.base, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture(scope="module")
def _page_and_dialogs(_context: Any) -> tuple[Any, Dialogs]:
    page = _context.new_page()
    dialogs = Dialogs([])

    def on_dialog(dialog: Any) -> None:
        dialogs.messages.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return page, dialogs


@pytest.fixture
def dialogs(_page_and_dialogs: tuple[Any, Dialogs]) -> Dialogs:
    return _page_and_dialogs[1]


@pytest.fixture
def page(request: pytest.FixtureRequest, _page_and_dialogs: tuple[Any, Dialogs]) -> Iterator[Any]:
    """The session's page, signed out at the start of each test."""
    pg, dialogs = _page_and_dialogs
    pg.context.clear_cookies()
    dialogs.messages.clear()
    yield pg
    if request.node.stash.get(_FAILED, False):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=True)


def sign_in(page: Any, credentials: tuple[str, str] = ADMIN) -> None:
    page.goto("/login")
    page.fill("#name", credentials[0])
    page.fill("#password", credentials[1])
    page.click("form[action='/login'] button[type=submit]")
    page.wait_for_url("**/")
