"""The dashboard in a real browser: sign-in, figures, actions, the outbox viewer, XSS, CSRF."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.dashboard.conftest import ADMIN, VIEWER, Dialogs, Server, sign_in


def figure(page: Any, name: str) -> Any:
    return page.locator(f"[data-figure='{name}']")


def test_sign_in_and_out(page: Any) -> None:
    page.goto("/")
    assert "/login" in page.url  # signed out: the overview asks for a sign-in
    page.fill("#name", ADMIN[0])
    page.fill("#password", "wrong password")
    page.click("form[action='/login'] button[type=submit]")
    assert "wrong" in page.locator(".error").inner_text()
    sign_in(page)
    assert page.locator(".who").inner_text().startswith("ann")
    cookie = next(c for c in page.context.cookies() if c["name"] == "postroom_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.click(".who button")
    page.wait_for_url("**/login")
    page.goto("/queues")
    assert "/login" in page.url  # the session is gone


def test_overview_shows_what_was_sent_and_refreshes_itself(page: Any, server: Server) -> None:
    sign_in(page)
    before = int(figure(page, "sent-today").inner_text().replace(",", ""))
    ids = [server.send(subject=f"Figure {n}") for n in range(3)]
    for email_id in ids:
        server.wait_sent(email_id)
    # no reload: htmx polls the figures
    figure_text = figure(page, "sent-today")
    figure_text.wait_for(state="attached")
    page.wait_for_function(
        "n => document.querySelector(\"[data-figure='sent-today']\").textContent.trim() == n",
        arg=str(before + 3),
        timeout=15_000,
    )
    assert figure(page, "status").inner_text() == "OPERATIONAL"
    assert figure(page, "backlog").inner_text() == "0"
    assert figure(page, "delivery-rate").inner_text() == "100.0 %"
    assert figure(page, "active-providers").inner_text() == "1"
    assert "Development outbox" in page.locator(".health").inner_text()


def test_pause_and_resume_a_queue_with_its_buttons(page: Any, server: Server) -> None:
    sign_in(page)
    page.goto("/queues")
    page.click("button:has-text('Pause bulk')")
    assert page.locator(".notice").inner_text() == "Queue bulk paused."
    assert server.api("GET", "/queues/bulk").json()["paused"] is True
    assert page.locator("[data-queue='bulk'] [data-field='state']").inner_text() == "paused"
    page.click("button:has-text('Resume bulk')")
    assert server.api("GET", "/queues/bulk").json()["paused"] is False


def test_testing_a_provider_shows_the_result(page: Any) -> None:
    sign_in(page)
    page.goto("/providers")
    card = page.locator("[data-provider='Development outbox']")
    card.locator("button:has-text('Test connection')").click()
    result = card.locator("[data-result]")
    result.wait_for()
    assert result.get_attribute("data-result") == "ok"
    assert "Connection works" in result.inner_text()
    assert page.url.endswith("/providers")  # shown in place, by htmx


def test_outbox_viewer_renders_html_in_a_sandbox_without_running_scripts(
    page: Any, server: Server, dialogs: Dialogs
) -> None:
    html = (
        "<h1 id='greeting'>Hello from the outbox</h1>"
        "<script>document.body.insertAdjacentHTML('beforeend', '<p>SCRIPT RAN</p>');"
        "alert('script')</script>"
        "<img src='x' onerror=\"document.body.append('HANDLER RAN')\">"
        "<img src='https://images.example.com/pixel.png' alt='remote'>"
    )
    email_id = server.send(subject="Outbox HTML", content={"text": "plain part", "html": html})
    server.wait_sent(email_id)
    sign_in(page)
    page.goto("/outbox")
    page.click("a:has-text('Outbox HTML')")
    iframe = page.locator("iframe.mail")
    assert iframe.get_attribute("sandbox") is not None
    assert "allow-scripts" not in iframe.get_attribute("sandbox")
    mail = page.frame_locator("iframe.mail")
    assert mail.locator("#greeting").inner_text() == "Hello from the outbox"
    body = mail.locator("body").inner_text()
    assert "SCRIPT RAN" not in body and "HANDLER RAN" not in body
    assert dialogs.messages == []
    frame = page.request.get(f"/messages/{email_id}/frame")
    assert "sandbox" in frame.headers["content-security-policy"]
    assert "img-src data:;" in frame.headers["content-security-policy"]  # remote images blocked
    page.click("a:has-text('Mobile')")
    assert "mobile" in (page.locator("iframe.mail").get_attribute("class") or "")
    page.click("a:has-text('show them')")  # remote images, on request
    assert (page.locator("iframe.mail").get_attribute("src") or "").endswith("?images=1")
    shown = page.request.get(f"/messages/{email_id}/frame?images=1")
    assert "img-src data: https: http:;" in shown.headers["content-security-policy"]
    assert "sandbox" in shown.headers["content-security-policy"]
    page.click("a:has-text('Text')")
    assert page.locator("pre.body").inner_text().strip() == "plain part"
    page.click("a:has-text('Headers')")
    assert "Outbox HTML" in page.locator(".headers").inner_text()
    eml = page.request.get(f"/messages/{email_id}/eml")
    assert eml.headers["content-disposition"].startswith("attachment")
    assert b"Subject: Outbox HTML" in eml.body()


def test_an_xss_subject_is_shown_as_text(page: Any, server: Server, dialogs: Dialogs) -> None:
    subject = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    email_id = server.send(subject=subject, to=[{"email": "x@example.com", "name": "<b>Bold</b>"}])
    server.wait_sent(email_id)
    sign_in(page)
    page.goto("/messages?subject=script")
    assert page.locator(f"a[href='/messages/{email_id}']").inner_text() == subject
    page.goto(f"/messages/{email_id}")
    assert page.locator("[data-field='subject']").inner_text() == subject
    page.click("a:has-text('Headers')")
    assert dialogs.messages == []


def test_a_form_without_the_csrf_token_is_refused(page: Any, server: Server) -> None:
    sign_in(page)
    no_token = page.request.post("/queues/bulk/pause", form={"x": "1"})
    assert no_token.status == 403
    wrong = page.request.post("/queues/bulk/pause", form={"csrf_token": "guess"})
    assert wrong.status == 403
    assert server.api("GET", "/queues/bulk").json()["paused"] is False
    assert re.search("did not come from this dashboard", no_token.text())


def test_a_viewer_sees_but_cannot_change(page: Any, server: Server) -> None:
    sign_in(page, VIEWER)
    page.goto("/queues")
    assert page.locator("button:has-text('Pause')").count() == 0
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    refused = page.request.post("/queues/bulk/pause", form={"csrf_token": token})
    assert refused.status == 403
    assert server.api("GET", "/queues/bulk").json()["paused"] is False


def test_add_and_edit_a_provider_without_ever_showing_its_secret(page: Any, server: Server) -> None:
    sign_in(page)
    page.goto("/providers")
    page.click("a:has-text('Add a provider')")
    page.fill("#name", "Relay")
    page.select_option("#type", "smtp")
    page.uncheck("input[name=enabled]")
    page.fill("#config", '{"host": "relay.example.com", "port": 587')  # broken JSON
    page.fill("#authentication", '{"user": "app", "password": "s3cret-pass"}')
    page.click("button:has-text('Add provider')")
    assert "config: not valid JSON" in page.locator(".error").inner_text()
    assert page.locator("#authentication").input_value() == ""  # never sent back
    page.fill("#config", '{"host": "relay.example.com", "port": 587}')
    page.fill("#authentication", '{"user": "app", "password": "s3cret-pass"}')
    page.click("button:has-text('Add provider')")
    card = page.locator("[data-provider='Relay']")
    assert "relay.example.com" in card.text_content()
    assert "s3cret-pass" not in page.content()
    card.locator("a:has-text('Edit')").click()
    assert "s3cret-pass" not in page.content()
    page.fill("#priority", "250")
    page.click("button:has-text('Save')")
    assert page.locator(".notice").inner_text() == "Provider Relay saved."
    stored = server.api("GET", "/providers/Relay").json()
    assert (stored["priority"], stored["enabled"]) == (250, False)
    assert stored["authentication"]["user"] == "app"  # kept while the field was left empty
    assert stored["authentication"]["password"] != "s3cret-pass"  # masked


def test_sending_a_test_message_shows_the_answer_in_place(page: Any, server: Server) -> None:
    sign_in(page)
    page.goto("/providers")
    card = page.locator("[data-provider='Development outbox']")
    card.locator("input[name=to]").fill("ops@example.com")
    card.locator("button:has-text('Send test')").click()
    result = card.locator("[data-result]")
    result.wait_for()
    # no sender: POSTROOM_DEFAULT_FROM is not set on this server, and the form had none
    assert result.get_attribute("data-result") == "failed"
    assert "POSTROOM_DEFAULT_FROM" in result.inner_text()
    card.locator("input[name=from]").fill("app@example.com")
    card.locator("button:has-text('Send test')").click()
    page.wait_for_selector("[data-provider='Development outbox'] [data-result='ok']")
    assert "Test message sent to ops@example.com" in card.locator("[data-result]").inner_text()


def test_create_and_revoke_an_api_key(page: Any, server: Server) -> None:
    sign_in(page)
    page.goto("/keys")
    page.fill("#key-name", "cms")
    page.check("input[name=scope_read]")
    page.click("button:has-text('Create key')")
    key = page.locator("[data-field='new-key']").inner_text()
    queues = httpx.get(
        f"{server.base}/api/system/email/queues", headers={"Authorization": f"Bearer {key}"}
    )
    assert queues.status_code == 200  # the key works, with the read scope
    prefix = key[: len("pr_") + 8]  # pr_ and 8 hex digits
    page.goto("/keys")
    assert key not in page.content()  # shown once
    page.locator(f"[data-key='{prefix}'] button:has-text('Revoke')").click()
    assert page.locator(".notice").inner_text().startswith(f"Key {prefix} revoked")
    assert "revoked" in page.locator(f"[data-key='{prefix}']").inner_text()
