"""Logging in and out in a real browser; the session cookie; CSRF; the admin-only pages."""

from __future__ import annotations

import re
from typing import Any

from tests.browser.conftest import ADMIN, AGENT, WebStack, log_in


def test_login_logout_and_the_session_cookie(page: Any, stack: WebStack) -> None:
    page.goto("/admin/queues")
    assert re.search(r"/login\?next=%2Fadmin%2Fqueues$", page.url)

    page.get_by_label("Login").fill(ADMIN[0])
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    alert = page.get_by_role("alert")
    assert alert.inner_text() == "The login or the password is not right."
    page.get_by_label("Login").fill("nobody")
    page.get_by_label("Password").fill(ADMIN[1])
    page.get_by_role("button", name="Log in").click()
    assert alert.inner_text() == "The login or the password is not right."  # the same words

    page.get_by_label("Login").fill(ADMIN[0])
    page.get_by_label("Password").fill(ADMIN[1])
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url("**/admin/queues")
    assert page.get_by_role("heading", name="Chat queues").is_visible()
    [cookie] = page.context.cookies()
    assert cookie["name"] == "convodesk_session"
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert page.evaluate("document.cookie") == ""  # out of the scripts' reach

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/login?out=1")
    assert page.get_by_role("status").inner_text() == "You are logged out."
    # the old cookie is dead on the server, not only gone from the browser
    page.context.add_cookies([{**cookie}])
    page.goto("/")
    assert "/login?next=" in page.url


def test_unsafe_requests_need_the_csrf_token_of_the_page(page: Any, stack: WebStack) -> None:
    log_in(page, *ADMIN, target="/admin/queues")
    page.wait_for_url("**/admin/queues")
    script = """async ([token]) => {
        const headers = {"Content-Type": "application/json"};
        if (token !== null) headers["X-CSRF-Token"] = token;
        const r = await fetch("/api/v1/chat-settings", {
            method: "PUT", headers, body: JSON.stringify({queue_max_size: 42})});
        return [r.status, await r.text()];
    }"""
    status, body = page.evaluate(script, [None])
    assert status == 403
    assert "CSRF" in body
    status, _ = page.evaluate(script, ["forged-token"])
    assert status == 403
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    status, body = page.evaluate(script, [token])
    assert status == 200, body
    assert '"queue_max_size":42' in body
    # reads need no token
    status = page.evaluate("async () => (await fetch('/api/v1/chat-settings')).status")
    assert status == 200


def test_agents_get_a_403_page_on_admin_pages(page: Any, stack: WebStack) -> None:
    log_in(page, *AGENT, target="/admin/services")
    page.wait_for_url("**/admin/services")
    assert page.get_by_role("heading", name="Not allowed").is_visible()
    assert page.get_by_role("link", name="Queues").count() == 0  # no admin links for agents
    answer = page.request.get("/admin/services")
    assert answer.status == 403
