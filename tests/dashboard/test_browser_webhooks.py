"""The webhooks page in a real browser."""

from __future__ import annotations

import uuid
from typing import Any

from tests.dashboard.conftest import Server, sign_in


def test_an_endpoint_added_through_the_form_is_listed_and_deleted(
    page: Any, server: Server
) -> None:
    # loopback, with its network allowed; disabled, so the running worker posts nothing
    url = f"http://127.0.0.1:9/hooks/{uuid.uuid4().hex[:8]}"
    sign_in(page)
    page.click("nav[aria-label=Main] a:has-text('Webhooks')")
    page.fill("#wh-url", url)
    page.fill("#wh-description", "from the browser")
    page.uncheck("input[name=enabled]")
    with page.expect_navigation():
        page.click("button:has-text('Add endpoint')")
    error = page.locator("[data-error-for='eventTypes']")
    assert "tick at least one event type" in error.inner_text()
    assert page.input_value("#wh-url") == url  # the form comes back as it was
    page.check("input[name='type_email.bounced']")
    page.check("input[name='type_email.complained']")
    with page.expect_navigation():
        page.click("button:has-text('Add endpoint')")
    assert "loopback" in page.locator("[data-error-for='url']").inner_text()
    page.fill("#wh-networks", "127.0.0.0/8")
    with page.expect_navigation():
        page.click("button:has-text('Add endpoint')")
    secret = page.locator("[data-field='new-secret']").inner_text()
    assert secret.startswith("whsec_")
    [made] = [
        e
        for e in server.api("GET", "/webhooks/endpoints", params={"limit": 500}).json()["endpoints"]
        if e["url"] == url
    ]
    assert made["eventTypes"] == ["email.bounced", "email.complained"] and not made["enabled"]
    row = page.locator(f"[data-endpoint='{made['id']}']")
    assert row.locator("[data-field='state']").inner_text() == "disabled"
    assert "email.bounced, email.complained" in row.inner_text()
    row.locator("a").click()
    page.wait_for_url(f"**/webhooks/{made['id']}")
    assert page.locator("[data-field='url']").inner_text() == url
    assert secret not in page.content()
    page.click("summary:has-text('Delete')")
    with page.expect_navigation():
        page.click("button:has-text('Delete this endpoint')")
    assert "was deleted" in page.locator(".notice").inner_text()
    assert page.locator(f"[data-endpoint='{made['id']}']").count() == 0
    assert server.api("GET", f"/webhooks/endpoints/{made['id']}").status_code == 404
