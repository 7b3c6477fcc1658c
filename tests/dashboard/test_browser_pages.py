"""Analytics, templates, suppressions and settings in a real browser."""

from __future__ import annotations

import uuid
from typing import Any

from tests.dashboard.conftest import VIEWER, Dialogs, Server, sign_in


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def _bulk(server: Server) -> Any:
    """The bulk queue's runtime settings, as GET /config shows them."""
    return server.api("GET", "/config").json()["queueConfig"]["queues"]["bulk"]


def test_analytics_shows_what_was_sent_with_a_chart(page: Any, server: Server) -> None:
    tag = f"spring-{uuid.uuid4().hex[:8]}"
    ids = [server.send(subject=f"Campaign {n}", tags=[tag]) for n in range(2)]
    for email_id in ids:
        server.wait_sent(email_id)
    api = server.api("GET", "/analytics").json()["summary"]  # the last 30 days
    sign_in(page)
    console: list[str] = []

    def log(message: Any) -> None:
        console.append(message.text)

    page.on("console", log)
    page.click("nav[aria-label=Main] a:has-text('Analytics')")
    assert _number(page.locator("[data-figure='total-sent']").inner_text()) == api["totalSent"]
    assert (
        _number(page.locator("[data-figure='total-delivered']").inner_text())
        == api["totalDelivered"]
    )
    campaign = page.locator(f"[data-campaign='{tag}']")
    assert campaign.locator("[data-figure='sent']").inner_text() == "2"
    outbox = page.locator("table.by-provider [data-provider='Development outbox']")
    assert _number(outbox.locator("[data-figure='sent']").inner_text()) >= 2
    page.locator(".chart .uplot canvas").first.wait_for()  # uPlot drew, under the page's CSP
    assert "sent" in page.locator(".chart .u-legend").inner_text()
    page.remove_listener("console", log)
    assert not [m for m in console if "Content Security Policy" in m], console
    page.click("a:has-text('Last 24 hours')")
    assert page.url.endswith("?period=24h")
    page.click("summary:has-text('As a table')")
    rows = page.locator("table.trend tbody tr")
    assert rows.count() in (24, 25)  # one per hour
    sent_by_hour = sum(_number(t) for t in rows.locator("td:nth-child(2)").all_inner_texts())
    assert sent_by_hour == _number(page.locator("[data-figure='total-sent']").inner_text()) >= 2
    page.set_viewport_size({"width": 375, "height": 800})  # a phone: nothing wider than it
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})


def test_a_template_previews_live_shows_compile_errors_and_keeps_versions(
    page: Any, server: Server, dialogs: Dialogs
) -> None:
    name = f"welcome-{uuid.uuid4().hex[:8]}"
    sign_in(page)
    page.goto("/templates")
    page.click("a:has-text('New template')")
    page.fill("#name", name)
    page.fill("#variables", '[{"name": "name", "example": "Ann"}]')
    page.fill("#subject", "Welcome, {{ name }}")
    page.fill("#html", "<h1 id='hi'>Hello {{ name }}</h1><script>alert('preview')</script>")
    subject = page.locator("[data-field='preview-subject']")
    subject.wait_for()
    page.wait_for_function(
        "() => document.querySelector(\"[data-field='preview-subject']\")"
        ".textContent == 'Welcome, Ann'"
    )
    frame = page.locator("iframe.preview-frame")
    assert "allow-scripts" not in (frame.get_attribute("sandbox") or "x")
    assert page.frame_locator("iframe.preview-frame").locator("#hi").inner_text() == "Hello Ann"
    assert "Hello Ann" in page.locator("[data-field='preview-text']").text_content()
    page.fill("#html", "<h1>Hello {{ name }}</h1>\n<p>{% if %}</p>")
    error = page.locator("[data-preview='error'] li")
    error.wait_for()
    assert error.get_attribute("data-line") == "2"
    assert "Line 2 of html" in error.inner_text()
    page.click("button:has-text('Create template')")  # refused: it does not compile
    assert "html line 2" in page.locator("[role=alert]").first.inner_text()
    page.fill("#html", "<h1 id='hi'>Hello {{ name }}</h1>")
    page.click("button:has-text('Create template')")
    page.wait_for_url("**/templates/*?done=created")
    assert page.locator("[data-field='version']").inner_text() == "1"
    assert page.frame_locator("iframe.preview-frame").locator("#hi").inner_text() == "Hello Ann"
    page.click("a:has-text('Edit')")
    page.fill("#subject", "Welcome back, {{ name }}")
    page.wait_for_function(
        "() => (document.querySelector(\"[data-field='preview-subject']\") || {}).textContent"
        " == 'Welcome back, Ann'"
    )
    page.click("button:has-text('Save')")
    page.wait_for_url("**?done=saved")
    assert page.locator("[data-field='version']").inner_text() == "2"
    assert page.locator("table.versions tbody tr").count() == 2
    stored = server.api("GET", f"/templates/{name}").json()
    assert (stored["version"], stored["subject"]) == (2, "Welcome back, {{ name }}")
    page.click("[data-version='1'] a")
    assert "Welcome, Ann" in page.locator("[data-field='preview-subject']").inner_text()
    assert dialogs.messages == []  # the template's script never ran
    page.click("summary:has-text('Delete')")
    page.click(f"button:has-text('Delete {name}')")
    assert page.locator(".notice").inner_text() == f"Template {name} deleted."
    assert page.locator(f"[data-template='{name}']").count() == 0
    assert server.api("GET", f"/templates/{name}").status_code == 404  # archived


def test_add_search_and_remove_a_suppression(page: Any, server: Server) -> None:
    address = f"blocked-{uuid.uuid4().hex[:8]}@example.com"
    server.api("POST", "/suppressions", json={"email": "other@example.com"})
    sign_in(page)
    page.goto("/suppressions")
    page.fill("#add-email", address)
    page.select_option("#add-scope", "marketing")
    page.fill("#add-expires", "2099-01-31T12:00")
    page.click("button:has-text('Suppress')")
    assert page.locator(".notice").inner_text() == f"{address} suppressed."
    listed = server.api("GET", "/suppressions", params={"search": address}).json()
    assert [(s["scope"], s["reason"], s["expiresAt"][:16]) for s in listed["suppressions"]] == [
        ("marketing", "manual", "2099-01-31T12:00")
    ]
    page.fill("#search", address[:15])
    page.click("form[role=search] button")
    rows = page.locator("table.suppressions tbody tr")
    assert rows.count() == 1 and address in rows.inner_text()
    page.goto(f"/suppressions?search={address}")
    page.click(f"[data-suppression='{address}'] button:has-text('Remove')")
    assert page.locator(".notice").inner_text() == f"The suppression of {address} was lifted."
    assert server.api("GET", "/suppressions", params={"search": address}).json() == {
        "suppressions": [],
        "nextCursor": None,
    }
    assert page.locator(f"[data-suppression='{address}']").count() == 0


def test_settings_round_trip_and_a_bad_value_is_named(page: Any, server: Server) -> None:
    sign_in(page)
    page.goto("/settings")
    bulk = page.locator("[data-queue='bulk']")
    bulk.locator("input[name='q.bulk.concurrency']").fill("3")
    bulk.locator("input[name='q.bulk.retry.maxAttempts']").fill("7")
    page.click("button:has-text('Save settings')")
    assert page.locator(".notice").inner_text().startswith("Settings saved")
    queue = _bulk(server)
    assert (queue["concurrency"], queue["retry"]["maxAttempts"]) == (3, 7)
    assert bulk.locator("input[name='q.bulk.concurrency']").input_value() == "3"
    bulk.locator("input[name='q.bulk.concurrency']").fill("5000")
    page.fill("#fallbackProviders", "nope")
    page.click("button:has-text('Save settings')")
    assert "Nothing was saved" in page.locator("#problems").inner_text()
    error = page.locator("[data-error-for='q.bulk.concurrency']")
    assert error.inner_text() == "must be 1..1000 or null"
    assert bulk.locator("input[name='q.bulk.concurrency']").get_attribute("aria-invalid") == "true"
    assert "no provider 'nope'" in page.locator("[data-error-for='fallbackProviders']").inner_text()
    assert _bulk(server)["concurrency"] == 3
    page.goto("/settings")  # back to the defaults
    bulk.locator("input[name='q.bulk.concurrency']").fill("")
    page.click("button:has-text('Save settings')")
    assert _bulk(server)["concurrency"] is None


def test_a_viewer_reads_but_cannot_change_the_new_pages(page: Any, server: Server) -> None:
    sign_in(page, VIEWER)
    page.goto("/templates")
    assert page.locator("a:has-text('New template')").count() == 0
    assert page.request.get("/templates/new").status == 403
    page.goto("/suppressions")
    assert page.locator("#add-email").count() == 0
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    refused = page.request.post(
        "/suppressions", form={"csrf_token": token, "email": "viewer@example.com"}
    )
    assert refused.status == 403
    assert (
        server.api("GET", "/suppressions", params={"search": "viewer@"}).json()["suppressions"]
        == []
    )
    page.goto("/settings")
    assert page.locator("button:has-text('Save settings')").count() == 0
    assert page.locator("input[name='q.bulk.concurrency']").is_disabled()
    refused = page.request.post("/settings", form={"csrf_token": token, "q.bulk.concurrency": "9"})
    assert refused.status == 403
    assert _bulk(server)["concurrency"] != 9
    create = page.request.post(
        "/templates/new",
        form={"csrf_token": token, "name": "x", "subject": "x", "text": "x"},
    )
    assert create.status == 403
    page.goto("/analytics")
    assert page.locator("h1").inner_text() == "Analytics"


def test_the_new_pages_fit_a_phone_and_work_from_the_keyboard(page: Any) -> None:
    sign_in(page)
    page.set_viewport_size({"width": 375, "height": 800})
    try:
        for path in ("/templates/new", "/suppressions", "/settings", "/templates"):
            page.goto(path)
            assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})
    page.goto("/suppressions")
    page.keyboard.press("Tab")  # the first stop skips to the content
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.focus("#add-email")
    page.keyboard.type("keys@example.com")
    with page.expect_navigation():  # the answer is a new page: read its notice, not ours
        page.keyboard.press("Enter")  # submits the form: no pointer needed
    assert page.locator(".notice").inner_text() == "keys@example.com suppressed."
    page.focus("[data-suppression='keys@example.com'] button")
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert page.locator(".notice").inner_text().startswith("The suppression of keys@")
