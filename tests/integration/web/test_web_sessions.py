"""Web sessions over HTTP, on SQLite and PostgreSQL: login and logout, the cookie, the CSRF
rule for cookie-authenticated API calls, expiry, the throttle, and the pages' access rules."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from convodesk.runtime import Runtime
from convodesk.services import configuration, web_sessions
from convodesk.storage.db import transaction
from convodesk.storage.tables import ApiTokenRow
from convodesk.web.app import create_app
from tests.support.apps import make_token, queue_body, service_body

PASSWORDS = {"ada": "ada-password-1", "bob": "bob-password-1"}


@pytest.fixture
def configured(runtime: Runtime) -> Runtime:
    configuration.apply_config(
        runtime,
        {
            "messaging_services": [service_body()],
            "queues": [queue_body()],
            "agents": [
                {
                    "login": "ada",
                    "display_name": "Ada",
                    "role": "admin",
                    "password": PASSWORDS["ada"],
                    "queues": ["support"],
                },
                {
                    "login": "bob",
                    "display_name": "Bob",
                    "password": PASSWORDS["bob"],
                    "queues": ["support"],
                },
                {"login": "carl", "display_name": "Carl (no password)"},
            ],
        },
    )
    return runtime


@pytest.fixture
def browser(configured: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(configured), follow_redirects=False) as client:
        yield client


def log_in(client: TestClient, login: str, password: str | None = None, **form: str) -> str:
    answer = client.post(
        "/login", data={"login": login, "password": password or PASSWORDS[login], **form}
    )
    assert answer.status_code == 303, answer.text
    return str(answer.headers["location"])


def csrf_of(client: TestClient) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', client.get("/").text)
    assert match is not None
    return match.group(1)


def session_rows(runtime: Runtime) -> int:
    with transaction(runtime.sessions) as session:
        query = select(func.count()).where(ApiTokenRow.description == "web session")
        return int(session.scalar(query) or 0)


def test_login_sets_a_session_cookie_and_goes_where_asked(browser: TestClient) -> None:
    first = browser.get("/admin/queues?x=1")
    assert first.status_code == 303
    assert first.headers["location"] == "/login?next=%2Fadmin%2Fqueues%3Fx%3D1"
    answer = browser.post(
        "/login", data={"login": "ada", "password": PASSWORDS["ada"], "next": "/admin/queues?x=1"}
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/queues?x=1"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("convodesk_session=cds_")
    for flag in ("HttpOnly", "Path=/", "SameSite=lax", "Max-Age=43200"):
        assert flag in cookie
    assert "Secure" not in cookie  # plain http, no https public URL
    page = browser.get("/admin/queues")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert browser.get("/login").headers["location"] == "/"  # logged in already


def test_cookie_is_secure_over_https_or_behind_an_https_public_url(configured: Runtime) -> None:
    form = {"login": "bob", "password": PASSWORDS["bob"]}
    with TestClient(
        create_app(configured), base_url="https://testserver", follow_redirects=False
    ) as client:
        assert "Secure" in client.post("/login", data=form).headers["set-cookie"]
    configured.config = dataclasses.replace(
        configured.config, public_base_url="https://cc.example.com"
    )
    with TestClient(create_app(configured), follow_redirects=False) as client:
        assert "Secure" in client.post("/login", data=form).headers["set-cookie"]


@pytest.mark.parametrize(
    ("login", "password"),
    [("ada", "wrong-password"), ("nobody", "whatever-pass"), ("carl", "any-password"), ("ada", "")],
)
def test_failed_logins_say_the_same_thing(browser: TestClient, login: str, password: str) -> None:
    answer = browser.post("/login", data={"login": login, "password": password})
    assert answer.status_code == 401
    assert "The login or the password is not right." in answer.text
    assert "set-cookie" not in answer.headers
    assert f'value="{login}"' in answer.text  # the login stays filled in, the password not


def test_redirect_after_login_stays_on_this_site(browser: TestClient) -> None:
    assert log_in(browser, "bob", next="https://evil.example/") == "/"
    assert log_in(browser, "bob", next="//evil.example/x") == "/"


def test_login_from_another_site_is_refused(browser: TestClient) -> None:
    answer = browser.post(
        "/login",
        data={"login": "ada", "password": PASSWORDS["ada"]},
        headers={"Origin": "https://evil.example"},
    )
    assert answer.status_code == 403
    assert "set-cookie" not in answer.headers
    same = browser.post(
        "/login",
        data={"login": "ada", "password": PASSWORDS["ada"]},
        headers={"Origin": "http://testserver"},
    )
    assert same.status_code == 303


def test_failed_logins_are_throttled_even_with_the_right_password(browser: TestClient) -> None:
    for _ in range(5):
        assert (
            browser.post("/login", data={"login": "bob", "password": "nope-nope"}).status_code
            == 401
        )
    blocked = browser.post("/login", data={"login": "bob", "password": PASSWORDS["bob"]})
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 800
    assert "Too many failed attempts" in blocked.text
    assert "set-cookie" not in blocked.headers
    assert log_in(browser, "ada") == "/"  # another login from the same address is fine


def test_api_calls_with_the_cookie_need_the_csrf_token_for_changes(
    browser: TestClient, configured: Runtime
) -> None:
    log_in(browser, "ada")
    assert browser.get("/api/v1/queues").status_code == 200
    body = queue_body("support", priority=3)
    refused = browser.put("/api/v1/queues/support", json=body)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert "CSRF" in refused.json()["error"]["message"]
    forged = browser.put("/api/v1/queues/support", json=body, headers={"X-CSRF-Token": "x"})
    assert forged.status_code == 403
    assert configuration.get_resource(configured, "queues", "support").get("priority") is None
    token = csrf_of(browser)
    done = browser.put("/api/v1/queues/support", json=body, headers={"X-CSRF-Token": token})
    assert done.status_code == 200
    assert done.json()["priority"] == 3
    # An Authorization header decides alone: a bad one is refused despite a good cookie.
    bad = browser.get("/api/v1/queues", headers={"Authorization": "Bearer cdk_nonsense"})
    assert bad.status_code == 401
    # A Bearer token needs no CSRF token.
    admin = make_token(configured)
    with TestClient(create_app(configured)) as api:
        answer = api.put(
            "/api/v1/queues/support", json=body, headers={"Authorization": f"Bearer {admin}"}
        )
        assert answer.status_code == 200


def test_a_session_token_is_not_a_bearer_token(browser: TestClient, configured: Runtime) -> None:
    log_in(browser, "ada")
    session_token = browser.cookies["convodesk_session"]
    with TestClient(create_app(configured)) as api:
        answer = api.get("/api/v1/queues", headers={"Authorization": f"Bearer {session_token}"})
    assert answer.status_code == 401


def test_logout_needs_the_csrf_token_and_ends_the_session_on_the_server(
    browser: TestClient,
) -> None:
    log_in(browser, "bob")
    session_token = browser.cookies["convodesk_session"]
    refused = browser.post("/logout", data={"csrf_token": "forged"})
    assert refused.status_code == 403
    assert browser.get("/").status_code == 200  # still logged in
    answer = browser.post("/logout", data={"csrf_token": csrf_of(browser)})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?out=1"
    assert 'convodesk_session=""' in answer.headers["set-cookie"]
    assert "convodesk_session" not in browser.cookies
    browser.cookies.set("convodesk_session", session_token)  # a copy kept by an attacker
    assert browser.get("/").status_code == 303
    assert browser.get("/api/v1/conversations").status_code == 401


def test_sessions_expire_when_idle_and_after_their_lifetime(configured: Runtime) -> None:
    t0 = datetime.now(UTC)
    token = web_sessions.login(configured, "bob", PASSWORDS["bob"], now=t0)
    assert token is not None
    idle, lifetime = web_sessions.IDLE, web_sessions.LIFETIME
    assert web_sessions.authenticate(configured, token, now=t0 + idle - timedelta(minutes=1))
    # used a minute before the idle limit: alive again for another idle period
    later = t0 + idle + timedelta(minutes=30)
    assert web_sessions.authenticate(configured, token, now=later) is not None
    assert web_sessions.authenticate(configured, token, now=later + idle) is None
    assert web_sessions.authenticate(configured, token, now=later) is None  # revoked for good

    kept = web_sessions.login(configured, "bob", PASSWORDS["bob"], now=t0)
    assert kept is not None
    moment = t0
    while moment + idle / 2 < t0 + lifetime:
        moment += idle / 2
        user = web_sessions.authenticate(configured, kept, now=moment)
        assert (user is not None) == (moment - t0 < lifetime)
    assert web_sessions.authenticate(configured, kept, now=t0 + lifetime) is None


def test_role_changes_and_deletion_apply_to_live_sessions(
    browser: TestClient, configured: Runtime
) -> None:
    log_in(browser, "bob")
    assert browser.get("/admin/queues").status_code == 403
    assert browser.get("/api/v1/queues").status_code == 403
    agent = configuration.get_resource(configured, "agents", "bob")
    configuration.replace_resource(configured, "agents", "bob", {**agent, "role": "admin"})
    assert browser.get("/admin/queues").status_code == 200
    configuration.delete_resource(configured, "agents", "bob")
    assert browser.get("/admin/queues").status_code == 303
    assert browser.get("/api/v1/queues").status_code == 401


def test_ended_sessions_are_deleted_at_the_next_login(configured: Runtime) -> None:
    tokens = [web_sessions.login(configured, "bob", PASSWORDS["bob"]) for _ in range(3)]
    assert all(tokens)
    for token in tokens[:2]:
        assert web_sessions.logout(configured, str(token))
    assert not web_sessions.logout(configured, str(tokens[0]))  # once is enough
    assert session_rows(configured) == 3
    assert web_sessions.login(configured, "bob", PASSWORDS["bob"]) is not None
    assert session_rows(configured) == 2  # the live one and the new one
    assert web_sessions.authenticate(configured, str(tokens[2])) is not None


def test_admin_pages_render_and_never_show_a_secret(
    browser: TestClient, configured: Runtime
) -> None:
    log_in(browser, "ada")
    pages = [
        "/",
        "/admin/services",
        "/admin/services/new",
        "/admin/services/sinch-eu",
        "/admin/queues",
        "/admin/queues/new",
        "/admin/queues/support",
        "/admin/agents",
        "/admin/agents/new",
        "/admin/agents/bob",
        "/admin/chat-settings",
        "/admin/events",
        "/admin/outbox",
    ]
    for path in pages:
        answer = browser.get(path)
        assert answer.status_code == 200, path
        for secret in ("key-secret-value-1", "webhook-secret-value-1", *PASSWORDS.values()):
            assert secret not in answer.text, (path, secret)
        assert "********" not in answer.text
    assert browser.get("/admin").headers["location"] == "/admin/services"
    missing = browser.get("/admin/queues/nope")
    assert missing.status_code == 404
    assert "There is no queue" in missing.text
    assert "Saved queue support." in browser.get("/admin/queues?saved=support").text
    assert browser.get("/static/js/configurator.js").status_code == 200


def test_agents_get_the_desktop_and_a_403_page_for_admin_pages(browser: TestClient) -> None:
    log_in(browser, "bob")
    desktop = browser.get("/")
    assert desktop.status_code == 200
    assert 'data-login="bob"' in desktop.text
    assert 'href="/admin/queues"' not in desktop.text
    for path in ("/admin", "/admin/services", "/admin/agents/ada", "/admin/events"):
        answer = browser.get(path)
        assert answer.status_code == 403, path
        assert "This page is for administrators." in answer.text
