"""The agent desktop, with what exists on this branch: the conversations and messages API.
Offers, presence, the stream and assignment come with the chat server; until then the
desktop shows the conversation it is pointed at, and its panels say what is missing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from convodesk.storage.db import transaction
from convodesk.storage.tables import ConversationRow, MessageRow
from tests.browser.conftest import AGENT, WebStack, log_in, screenshot
from tests.browser.test_admin_logs import customer_writes, message_status, wait_for
from tests.support.apps import APP_EU


def activate(stack: WebStack, conversation_id: int) -> None:
    """What accepting an offer does, until the chat server lands."""
    with transaction(stack.runtime.sessions) as session:
        row = session.get(ConversationRow, conversation_id)
        assert row is not None
        row.status = "active"


def messages_of(stack: WebStack, conversation_id: int) -> list[MessageRow]:
    with transaction(stack.runtime.sessions) as session:
        query = select(MessageRow).where(MessageRow.conversation_id == conversation_id)
        return list(session.scalars(query.order_by(MessageRow.id)))


def test_desktop_shows_the_transcript_and_sends_a_reply(page: Any, stack: WebStack) -> None:
    identity = "46701000009"
    conversation = customer_writes(stack, APP_EU, "WHATSAPP", identity, "Hej! Where is my order?")
    answer = stack.emulator.post(
        "/_emulator/inbound",
        json={
            "app_id": APP_EU,
            "channel": "WHATSAPP",
            "identity": identity,
            "location": {"latitude": 59.3326, "longitude": 18.0649, "label": "Sergels torg"},
        },
    )
    assert answer.status_code == 202
    wait_for(lambda: len(messages_of(stack, conversation)) == 2)
    activate(stack, conversation)

    log_in(page, *AGENT)
    page.wait_for_url(lambda url: url.rstrip("/").endswith(stack.url.split("//")[1]) or "/?" in url)
    chat = page.get_by_role("button", name=identity)
    chat.wait_for()
    chat.click()
    transcript = page.get_by_role("list", name="Transcript")
    transcript.get_by_text("Hej! Where is my order?").wait_for()
    assert page.url.endswith(f"/?conversation={conversation}")
    place = transcript.get_by_role("link", name="Sergels torg")
    assert place.get_attribute("href").startswith(
        "https://www.openstreetmap.org/?mlat=59.3326&mlon=18.0649"
    )
    assert "WhatsApp window open" in page.locator("#wa-window").inner_text()
    assert page.get_by_role("heading", name=identity).is_visible()

    reply = page.get_by_label("Reply")
    assert reply.evaluate("el => el === document.activeElement")  # ready to type
    reply.fill("Your order left the warehouse this morning.")
    reply.press("Control+Enter")
    sent = transcript.locator(".message.outbound").filter(has_text="left the warehouse")
    sent.wait_for()
    assert reply.input_value() == ""
    [_, _, ours] = messages_of(stack, conversation)
    assert ours.text == "Your order left the warehouse this morning."
    assert ours.author == AGENT[0]
    wait_for(lambda: message_status(stack, ours.id) == "READ")

    # Without the stream (it comes with the chat server) a reload shows the receipt.
    page.reload()
    ticks = transcript.locator(f'[data-message-id="{ours.id}"] .ticks')
    ticks.wait_for()
    assert ticks.get_attribute("title") == "Read"
    assert "status-READ" in (ticks.get_attribute("class") or "")
    screenshot(page, "desktop.png")


def test_failed_reply_shows_the_reason_in_plain_words(page: Any, stack: WebStack) -> None:
    conversation = customer_writes(stack, APP_EU, "WHATSAPP", "46701000010", "Hello")
    activate(stack, conversation)
    with transaction(stack.runtime.sessions) as session:
        session.add(
            MessageRow(
                conversation_id=conversation,
                direction="outbound",
                kind="text",
                text="Are you there?",
                content={"text_message": {"text": "Are you there?"}},
                status="FAILED",
                reason_code="RECIPIENT_NOT_REACHABLE",
                reason_text="technical text",
            )
        )
    log_in(page, *AGENT, target=f"/?conversation={conversation}")
    failure = page.locator(".message.outbound .failure")
    failure.wait_for()
    assert failure.inner_text() not in ("", "technical text")
    assert page.locator(".message.outbound .ticks").get_attribute("title") == "Not delivered"


def test_keyboard_shortcuts_are_listed_and_the_dialog_closes(page: Any, stack: WebStack) -> None:
    log_in(page, *AGENT)
    page.locator("#desktop[data-ready=yes]").wait_for(state="attached")
    page.locator("body").press("?")
    dialog = page.get_by_role("dialog", name="Keyboard shortcuts")
    dialog.wait_for()
    text = dialog.inner_text()
    for shortcut in ("Accept the oldest offer", "Send the reply", "Ready / not ready"):
        assert shortcut in text
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
