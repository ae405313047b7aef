"""Browser tests: a real convodesk (web app and workers on a real socket, SQLite) wired to
the Sinch emulator, driven by Playwright in Debian's Chromium.

Without Chromium or the playwright package these tests are skipped with the reason, except
under CI=true, where that is a failure (.ci/run installs Chromium). Playwright never
downloads a browser here: it launches /usr/bin/chromium with the flags this machine needs
(no sandbox as root, no background networking, which the closed network refuses).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from convodesk.emulator.config import EmulatorConfig
from convodesk.emulator.server import running_emulator
from convodesk.runtime import Runtime
from convodesk.services import configuration
from convodesk.web.app import create_app
from convodesk.web.serving import serve_in_thread
from tests.integration.test_cli import free_port
from tests.support.apps import APP_EU, APP_US, PROJECT, make_runtime
from tests.support.databases import require

CHROMIUM = os.environ.get("CONVODESK_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1366, "height": 768}  # the laptop screen the pages are made for
IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
SCREENSHOTS_ENV = "CONVODESK_SCREENSHOTS"

PROJECT_US = "9d0e1f2a-3b4c-4d5e-8f60-718293a4b5c6"
KEY_EU, KEY_US = "key-secret-eu-0001", "key-secret-us-0001"
HOOK_EU, HOOK_US = "webhook-secret-eu-0001", "webhook-secret-us-0001"
ADMIN = ("ada", "ada-password-1")
AGENT = ("anna", "anna-password-1")


@dataclass
class WebStack:
    runtime: Runtime
    app: FastAPI
    url: str  # convodesk
    emulator: httpx.Client  # the emulator's control plane
    emulator_url: str

    def config(self, *, key_us: str = KEY_US) -> dict[str, Any]:
        return convodesk_config(self.emulator_url, key_us=key_us)

    def apply(self, raw: dict[str, Any]) -> None:
        configuration.apply_config(self.runtime, raw)
        self.app.state.directory.invalidate()


def emulator_config(app_url: str) -> EmulatorConfig:
    def app(app_id: str, channels: list[str], service: str, secret: str) -> dict[str, Any]:
        return {
            "id": app_id,
            "channels": channels,
            "rate_limit": 1000,
            "webhooks": [
                {
                    "target": f"{app_url}/sms/sinchconversation/{service}",
                    "secret": secret,
                    "triggers": ["MESSAGE_INBOUND", "MESSAGE_DELIVERY", "EVENT_INBOUND"],
                }
            ],
        }

    return EmulatorConfig.from_dict(
        {
            "callback_retry": {"max_attempts": 6, "initial_backoff_ms": 20, "timeout_ms": 5000},
            "delivery_delays_ms": {"queued": 1, "delivered": 2, "read": 3},
            "projects": [
                {
                    "id": PROJECT,
                    "region": "eu",
                    "rate_limit": 5000,
                    "access_keys": [{"key_id": "KEY-EU", "key_secret": KEY_EU}],
                    "apps": [app(APP_EU, ["WHATSAPP", "SMS", "MESSENGER"], "sinch-eu", HOOK_EU)],
                },
                {
                    "id": PROJECT_US,
                    "region": "us",
                    "rate_limit": 5000,
                    "access_keys": [{"key_id": "KEY-US", "key_secret": KEY_US}],
                    "apps": [app(APP_US, ["SMS"], "sinch-us", HOOK_US)],
                },
            ],
        }
    )


def convodesk_config(emulator_url: str, *, key_us: str = KEY_US) -> dict[str, Any]:
    def service(
        name: str, region: str, project: str, key_id: str, key: str, app: str, hook: str
    ) -> dict[str, Any]:
        return {
            "name": name,
            "service_connection": f"{emulator_url}/{region}/v1/projects/{project}/messages:send",
            "authentication": [
                {"auth_id": f"{key_id}@{app}", "password": key},
                {
                    "auth_id": "webhook",
                    "password": hook,
                    "triggers": ["MESSAGE_INBOUND", "MESSAGE_DELIVERY", "EVENT_INBOUND"],
                },
            ],
        }

    queues = ["whatsapp-support", "sms-us"]
    return {
        "allow_custom_endpoints": True,
        "oauth_token_url": f"{emulator_url}/oauth2/token",
        "messaging_services": [
            service("sinch-eu", "eu", PROJECT, "KEY-EU", KEY_EU, APP_EU, HOOK_EU),
            service("sinch-us", "us", PROJECT_US, "KEY-US", key_us, APP_US, HOOK_US),
        ],
        "queues": [
            {
                "name": "whatsapp-support",
                "priority": 1,
                "addresses": [f"{APP_EU}@whatsapp.sinchconversation.com"],
            },
            {
                "name": "sms-us",
                "addresses": [f"{APP_US}@sms.sinchconversation.com"],
                "sms_sender_id": "+12025550143",
            },
        ],
        "agents": [
            {
                "login": ADMIN[0],
                "display_name": "Ada Admin",
                "role": "admin",
                "password": ADMIN[1],
                "queues": queues,
            },
            {
                "login": AGENT[0],
                "display_name": "Anna Lindqvist",
                "password": AGENT[1],
                "queues": queues,
            },
        ],
    }


# Package scope, not session: Playwright's sync API runs an event loop on this thread while
# it is open, and the tests after this package call asyncio.run().
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    require(
        Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is not None,
        f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)",
    )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "browser tests need the playwright package (pip install playwright)")
        raise  # not reached: require skipped or failed
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[WebStack]:
    port = free_port()
    emulator_url = f"http://127.0.0.1:{port}"
    runtime = make_runtime(
        f"sqlite:///{tmp_path / 'convodesk.db'}",
        tmp_path,
        allow_custom_endpoints=True,
        oauth_token_url=f"{emulator_url}/oauth2/token",
        send_rate_per_app=1000,
        send_rate_per_project=5000,
    )
    try:
        app = create_app(runtime, workers=True)
        with serve_in_thread(app, name="convodesk") as app_url:
            configuration.apply_config(runtime, convodesk_config(emulator_url))
            app.state.directory.invalidate()
            with (
                running_emulator(emulator_config(app_url), port=port),
                httpx.Client(base_url=emulator_url) as emulator,
            ):
                yield WebStack(runtime, app, app_url, emulator, emulator_url)
    finally:
        runtime.close()


@pytest.fixture
def page(browser: Any, stack: WebStack) -> Iterator[Any]:
    context = browser.new_context(viewport=VIEWPORT, base_url=stack.url)
    context.set_default_timeout(10_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def log_in(page: Any, login: str, password: str, target: str = "/") -> None:
    page.goto(target)
    page.get_by_label("Login").fill(login)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def screenshot(page: Any, name: str) -> None:
    """The pictures of the guides (docs/guides/*.md). They are written to docs/images/ when
    missing or with CONVODESK_SCREENSHOTS=1 (after a change to the pages); otherwise the
    picture is still taken, to a temporary file, so that a test run leaves the tree clean."""
    target = IMAGES / name
    if target.exists() and os.environ.get(SCREENSHOTS_ENV) != "1":
        page.screenshot(path=str(Path(tempfile.gettempdir()) / f"convodesk-{name}"))
        return
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target))
