"""The agent desktop against the real chat server: the whole journey from a customer's
message in the emulator to an ended chat, and the desktop's smaller promises."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from convodesk.storage.db import transaction
from convodesk.storage.tables import ConversationRow, MessageRow
from tests.browser.conftest import AGENT, WebStack, log_in, screenshot
from tests.browser.test_admin_logs import customer_writes, wait_for
from tests.support.apps import APP_EU


def activate(stack: WebStack, conversation_id: int) -> None:
    """Give the conversation to the agent without going through an offer."""
    with transaction(stack.runtime.sessions) as session:
        row = session.get(ConversationRow, conversation_id)
        assert row is not None
        row.status = "active"
        row.assigned_agent = AGENT[0]


def messages_of(stack: WebStack, conversation_id: int) -> list[MessageRow]:
    with transaction(stack.runtime.sessions) as session:
        query = select(MessageRow).where(MessageRow.conversation_id == conversation_id)
        return list(session.scalars(query.order_by(MessageRow.id)))


def conversation_row(stack: WebStack, conversation_id: int) -> ConversationRow:
    with transaction(stack.runtime.sessions) as session:
        row = session.get(ConversationRow, conversation_id)
        assert row is not None
        session.expunge(row)
        return row


def test_the_whole_journey_from_customer_message_to_ended_chat(page: Any, stack: WebStack) -> None:
    log_in(page, *AGENT)
    page.locator("#desktop[data-ready=yes]").wait_for(state="attached")
    toggle = page.locator("#presence-toggle")
    assert toggle.get_attribute("aria-pressed") == "false"
    toggle.click()
    page.locator("#presence-toggle[aria-pressed=true]").wait_for()

    # The customer writes through the emulator, which signs and delivers the callback.
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

    # The router offers it to the only ready agent; the offer arrives live, with a countdown
    # and the customer's last message (the text or the location, whichever it saw last).
    offer = page.locator(".offer").filter(has_text=identity)
    offer.wait_for()
    preview = offer.locator(".offer-preview").inner_text()
    assert "Hej! Where is my order?" in preview or "Sergels torg" in preview
    assert offer.locator(".countdown").inner_text().startswith("Expires in")
    offer.get_by_role("button", name="Accept").click()

    transcript = page.get_by_role("list", name="Transcript")
    transcript.get_by_text("Hej! Where is my order?").wait_for()
    place = transcript.get_by_role("link", name="Sergels torg")
    place.wait_for()
    assert place.get_attribute("href").startswith(
        "https://www.openstreetmap.org/?mlat=59.3326&mlon=18.0649"
    )
    assert page.url.endswith(f"/?conversation={conversation}")
    assert "WhatsApp window open" in page.locator("#wa-window").inner_text()
    assert page.get_by_role("heading", name=identity).is_visible()
    row = conversation_row(stack, conversation)
    assert (row.status, row.assigned_agent) == ("active", AGENT[0])

    reply = page.get_by_label("Reply (Ctrl+Enter sends)")
    assert reply.evaluate("el => el === document.activeElement")  # ready to type
    text = "Your order left the warehouse this morning."
    reply.fill(text)
    reply.press("Control+Enter")
    sent = transcript.locator(".message.outbound").filter(has_text="left the warehouse")
    sent.wait_for()
    assert reply.input_value() == ""
    ours = next(m for m in messages_of(stack, conversation) if m.text == text)
    assert ours.author == AGENT[0]

    # The emulator received exactly this send, for this customer on WhatsApp.
    def received() -> list[dict[str, Any]]:
        records = stack.emulator.get("/_emulator/sent", params={"identity": identity}).json()
        return [
            r
            for r in records["sent"]
            if r["request"]["message"].get("text_message", {}).get("text") == text
        ]

    [record] = wait_for(lambda: received() or None)
    assert record["channel"] == "WHATSAPP"
    assert record["request"]["app_id"] == APP_EU

    # Delivery and read receipts come back through the webhook; the ticks follow live.
    ticks = transcript.locator(f'[data-message-id="{ours.id}"] .ticks')
    transcript.locator(f'[data-message-id="{ours.id}"] .ticks[title="Read"]').wait_for()
    assert "status-READ" in (ticks.get_attribute("class") or "")
    screenshot(page, "desktop.png")

    page.get_by_label("Wrap-up code").fill("order-status")
    page.get_by_role("button", name="End chat").click()
    page.get_by_role("status").filter(has_text="The chat is ended.").wait_for()
    assert page.locator(f'.chat[data-conversation-id="{conversation}"]').count() == 0
    row = conversation_row(stack, conversation)
    assert row.status == "closed"
    assert row.wrapup_code == "order-status"


def test_an_agent_not_ready_picks_a_waiting_chat_from_the_queue(page: Any, stack: WebStack) -> None:
    identity = "46701000012"
    conversation = customer_writes(stack, APP_EU, "WHATSAPP", identity, "Is anyone there?")
    log_in(page, *AGENT)
    page.locator("#desktop[data-ready=yes]").wait_for(state="attached")
    assert page.locator("#presence-toggle").get_attribute("aria-pressed") == "false"

    count = page.get_by_role("button", name="Show the 1 waiting in whatsapp-support")
    count.wait_for()  # the overview follows the new waiting conversation live
    count.click()
    waiting = page.locator("#waiting")
    waiting.get_by_text("Waiting in whatsapp-support (1)").wait_for()
    waiting.get_by_role("button", name=f"Pick {identity}").click()

    page.get_by_role("list", name="Transcript").get_by_text("Is anyone there?").wait_for()
    assert waiting.is_hidden()
    page.locator(f'.chat[data-conversation-id="{conversation}"]').wait_for()
    row = conversation_row(stack, conversation)
    assert (row.status, row.assigned_agent) == ("active", AGENT[0])


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
