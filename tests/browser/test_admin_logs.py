"""The event log and the outbox pages: filters, paging, dead-letter retry."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import func, select

from convodesk.storage.db import transaction
from convodesk.storage.tables import ConversationRow, EventRow, MessageRow
from tests.browser.conftest import ADMIN, WebStack, log_in, screenshot
from tests.support.apps import APP_EU, APP_US
from tests.support.factories import inbound_body
from tests.support.intake import signed_post


def wait_for(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def customer_writes(stack: WebStack, app_id: str, channel: str, identity: str, text: str) -> int:
    answer = stack.emulator.post(
        "/_emulator/inbound",
        json={"app_id": app_id, "channel": channel, "identity": identity, "text": text},
    )
    assert answer.status_code == 202, answer.text

    def conversation() -> int | None:
        with transaction(stack.runtime.sessions) as session:
            return session.scalar(
                select(ConversationRow.id).where(
                    ConversationRow.identity == identity, ConversationRow.channel == channel
                )
            )

    return int(wait_for(conversation))


def event_count(stack: WebStack) -> int:
    with transaction(stack.runtime.sessions) as session:
        return int(session.scalar(select(func.count()).select_from(EventRow)) or 0)


def test_event_log_filters_and_pages(page: Any, stack: WebStack) -> None:
    customer_writes(stack, APP_EU, "WHATSAPP", "46701000001", "Hej! Where is my order?")
    customer_writes(stack, APP_US, "SMS", "12025550199", "Is the store open today?")
    with httpx.Client(base_url=stack.url) as client:  # a forged callback: bad signature
        answer = signed_post(client, inbound_body(), service="sinch-eu", secret="wrong")
        assert answer.status_code == 401
    total = wait_for(lambda: event_count(stack) >= 3 and event_count(stack))

    log_in(page, *ADMIN, target="/admin/events")
    page.wait_for_url("**/admin/events")
    rows = page.locator("#events-table tbody tr:not(.event-body)")
    rows.first.wait_for()
    assert rows.count() == total

    page.get_by_label("Outcome").select_option("rejected")
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("status").filter(has_text="Page 1: 1 event").wait_for()
    assert "outcome=rejected" in page.url  # linkable
    assert rows.count() == 1
    assert "signature" in rows.first.locator("td.reason").inner_text()

    page.get_by_label("Outcome").select_option("")
    page.get_by_label("Service").select_option("sinch-us")
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("status").filter(has_text="Page 1:").wait_for()
    assert "service=sinch-us" in page.url
    assert "outcome" not in page.url
    services = rows.locator("td:nth-child(3)").all_inner_texts()
    assert services
    assert set(services) == {"sinch-us"}
    first = rows.first
    first.get_by_role("button", name="Body").click()
    body = page.locator("tr.event-body pre").first
    assert "Is the store open today?" in body.inner_text()
    screenshot(page, "event-log.png")

    # paging: one event a page, back and forth
    page.get_by_label("Service").select_option("")
    page.get_by_label("Per page").select_option("25")
    page.reload()  # the filters come back from the address bar
    assert page.get_by_label("Service").input_value() == "sinch-us"
    page.goto("/admin/events?limit=1")  # not offered in the list, but the API takes it
    page.get_by_role("status").filter(has_text="Page 1: 1 event").wait_for()
    newest = rows.first.locator("td").first.inner_text()
    page.get_by_role("button", name="Older").click()
    page.get_by_role("status").filter(has_text="Page 2: 1 event").wait_for()
    assert rows.first.locator("td").first.inner_text() != newest
    page.get_by_role("button", name="Newer").click()
    page.get_by_role("status").filter(has_text="Page 1: 1 event").wait_for()
    assert rows.first.locator("td").first.inner_text() == newest


def message_status(stack: WebStack, message_id: int) -> str:
    with transaction(stack.runtime.sessions) as session:
        row = session.get(MessageRow, message_id)
        assert row is not None
        return row.status


def test_dead_letter_is_sent_after_the_admin_fixes_the_key_and_retries(
    page: Any, stack: WebStack
) -> None:
    conversation = customer_writes(stack, APP_US, "SMS", "12025550104", "Hello?")
    stack.apply(stack.config(key_us="wrong-secret"))  # Sinch will answer 401: permanent
    log_in(page, *ADMIN, target="/admin/outbox")
    page.wait_for_url("**/admin/outbox")
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    answer = page.request.post(
        f"/api/v1/conversations/{conversation}/messages",
        data={"text": "Yes, we are open until 18:00."},
        headers={"X-CSRF-Token": token},
    )
    assert answer.status == 202, answer.text()
    message_id = answer.json()["id"]
    wait_for(lambda: message_status(stack, message_id) == "FAILED")

    page.reload()
    row = page.locator("#outbox-table tbody tr").filter(has_text="Yes, we are open")
    row.wait_for()
    assert "failed" in row.inner_text()
    screenshot(page, "outbox.png")

    stack.apply(stack.config())  # the admin fixes the key
    row.get_by_role("checkbox").check()
    page.get_by_role("button", name="Retry selected (1)").click()
    page.get_by_role("status").filter(has_text="1 send queued again.").wait_for()
    wait_for(lambda: message_status(stack, message_id) == "DELIVERED")
    page.get_by_role("button", name="Show").click()
    page.get_by_role("status").filter(has_text="Nothing in the outbox").wait_for()
