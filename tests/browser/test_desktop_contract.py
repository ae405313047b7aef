"""The desktop against the chat server's contract (offers, presence, queue overview, the
event stream, uploads), with those endpoints played by Playwright routes until the chat
server lands on this branch; conversations, messages and templates are the real ones."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.encoders import jsonable_encoder

from convodesk.services import conversations
from convodesk.storage.api_tokens import Principal
from convodesk.storage.db import transaction
from convodesk.storage.tables import ConversationRow, MessageRow
from tests.browser.conftest import AGENT, WebStack, log_in
from tests.browser.test_admin_logs import customer_writes
from tests.support.apps import APP_EU

ADMIN_VIEW = Principal(token_id=0, role="admin", agent_login=None)


def conversation_json(stack: WebStack, conversation_id: int, **changes: Any) -> dict[str, Any]:
    item = conversations.get_conversation(stack.runtime, ADMIN_VIEW, conversation_id)
    return {**jsonable_encoder(item), "assigned_agent": AGENT[0], **changes}


def set_conversation(stack: WebStack, conversation_id: int, **values: Any) -> None:
    with transaction(stack.runtime.sessions) as session:
        row = session.get(ConversationRow, conversation_id)
        assert row is not None
        for key, value in values.items():
            setattr(row, key, value)


def fulfil_json(route: Any, body: Any, status: int = 200) -> None:
    route.fulfill(status=status, content_type="application/json", body=json.dumps(body))


def until(page: Any, condition: Any, timeout: float = 8.0) -> None:
    """Wait for something a route handler records: Playwright runs handlers only while the
    test is inside a Playwright call, so this waits with the page's own timer."""
    for _ in range(int(timeout * 20)):
        if condition():
            return
        page.wait_for_timeout(50)
    raise AssertionError("timed out")


def ready(page: Any) -> None:
    page.locator("#desktop[data-ready=yes]").wait_for(state="attached")


def offer_for(conversation_id: int, *, seconds: int = 90) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "id": 501,
        "conversation_id": conversation_id,
        "queue": "whatsapp-support",
        "channel": "WHATSAPP",
        "customer": "46701000021",
        "preview": "Hej! Where is my order?",
        "created_at": now.isoformat(),
        "expires_at": (now + timedelta(seconds=seconds)).isoformat(),
    }


def test_presence_offers_and_accept_with_the_keyboard(page: Any, stack: WebStack) -> None:
    conversation = customer_writes(
        stack, APP_EU, "WHATSAPP", "46701000021", "Hej! Where is my order?"
    )
    offers = [offer_for(conversation)]
    presence_bodies: list[Any] = []
    accepted: list[str] = []

    page.route(
        "**/api/v1/me",
        lambda route: fulfil_json(
            route,
            {
                "login": AGENT[0],
                "role": "agent",
                "display_name": "Anna Lindqvist",
                "presence": "not_ready",
                "max_chats": 3,
                "queues": ["whatsapp-support", "sms-us"],
            },
        ),
    )

    def presence(route: Any) -> None:
        presence_bodies.append(route.request.post_data_json)
        route.fulfill(status=204)

    page.route("**/api/v1/me/presence", presence)
    overview = [
        {
            "queue": "whatsapp-support",
            "priority": 1,
            "waiting": 2,
            "longest_wait_seconds": 75,
            "agents_ready": 1,
            "agents_busy": 2,
        },
        {
            "queue": "sms-us",
            "priority": 0,
            "waiting": 0,
            "longest_wait_seconds": None,
            "agents_ready": 1,
            "agents_busy": 0,
        },
    ]
    page.route("**/api/v1/queues/overview", lambda route: fulfil_json(route, overview))
    page.route("**/api/v1/offers", lambda route: fulfil_json(route, offers))

    def accept(route: Any) -> None:
        accepted.append(route.request.url)
        assert route.request.headers.get("x-csrf-token")
        # what the chat server does
        set_conversation(stack, conversation, status="active", assigned_agent=AGENT[0])
        offers.clear()
        fulfil_json(route, conversation_json(stack, conversation))

    page.route("**/api/v1/offers/501/accept", accept)
    earlier = customer_writes(stack, APP_EU, "WHATSAPP", "46701000031", "My parcel was damaged")
    page.route(
        f"**/api/v1/conversations/{conversation}/history",
        lambda route: fulfil_json(route, [conversation_json(stack, earlier, status="closed")]),
    )

    log_in(page, *AGENT)
    ready(page)
    offer = page.locator(".offer")
    offer.wait_for()
    assert "Hej! Where is my order?" in offer.inner_text()
    assert offer.locator(".countdown").inner_text().startswith("Expires in 1:")
    queue_row = page.locator('#queues tr[data-queue="whatsapp-support"]')
    assert queue_row.locator("td").nth(0).inner_text() == "2"
    assert queue_row.locator("td").nth(1).inner_text().startswith("1:1")  # 75 s and counting
    assert queue_row.locator("td").nth(2).inner_text() == "1 / 2"

    toggle = page.locator("#presence-toggle")
    assert toggle.get_attribute("aria-pressed") == "false"
    page.keyboard.press("Alt+S")
    until(page, lambda: presence_bodies == [{"state": "ready"}])
    page.locator("#presence-toggle[aria-pressed=true]").wait_for()
    assert toggle.inner_text().strip() == "Ready"

    page.keyboard.press("Alt+A")
    page.get_by_role("list", name="Transcript").get_by_text("Hej! Where is my order?").wait_for()
    assert len(accepted) == 1
    assert page.locator(".offer").count() == 0
    assert page.locator(f'.chat[data-conversation-id="{conversation}"]').count() == 1
    assert page.get_by_label("Reply (Ctrl+Enter sends)").evaluate(
        "el => el === document.activeElement"
    )
    history = page.locator(f'details.earlier[data-conversation-id="{earlier}"]')
    history.locator("summary").click()
    history.get_by_text("My parcel was damaged").wait_for()


def sse(*events: dict[str, Any]) -> str:
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events)


def test_stream_events_update_the_page_and_it_reconnects(page: Any, stack: WebStack) -> None:
    conversation = customer_writes(stack, APP_EU, "WHATSAPP", "46701000022", "Is it shipped?")
    set_conversation(stack, conversation, status="active", assigned_agent=AGENT[0])
    with transaction(stack.runtime.sessions) as session:
        ours = MessageRow(
            conversation_id=conversation,
            direction="outbound",
            kind="text",
            text="Let me check.",
            content={"text_message": {"text": "Let me check."}},
            status="accepted",
            author=AGENT[0],
            author_name="Anna Lindqvist",
        )
        session.add(ours)
        session.flush()
        ours_id = ours.id
    streams: list[Any] = []  # held open until the test answers them
    offer_reads: list[str] = []
    offered: list[bool] = []  # the server's state: after the event, the offer exists
    page.route("**/api/v1/stream", lambda route: streams.append(route))

    def offers(route: Any) -> None:
        offer_reads.append(route.request.url)
        fulfil_json(route, [offer_for(conversation)] if offered else [])

    page.route("**/api/v1/offers", offers)

    log_in(page, *AGENT, target=f"/?conversation={conversation}")
    ready(page)
    transcript = page.get_by_role("list", name="Transcript")
    transcript.get_by_text("Is it shipped?").wait_for()
    ticks = transcript.locator(f'[data-message-id="{ours_id}"] .ticks')
    assert ticks.get_attribute("title") == "Sent"
    assert page.locator("#live-state").inner_text() == "Connecting…"

    # What the server would now send: a receipt, the customer typing, then writing.
    now = datetime.now(UTC)
    with transaction(stack.runtime.sessions) as session:
        row = session.get(MessageRow, ours_id)
        assert row is not None
        row.status = "READ"
        thanks = MessageRow(
            conversation_id=conversation,
            direction="inbound",
            kind="text",
            text="Thanks!",
            content={"text_message": {"text": "Thanks!"}},
            status="received",
        )
        session.add(thanks)
    message = jsonable_encoder(
        conversations.list_messages(stack.runtime, ADMIN_VIEW, conversation).items[-1]
    )
    events = sse(
        {
            "type": "message.status",
            "conversation_id": conversation,
            "message_id": ours_id,
            "status": "READ",
        },
        {
            "type": "typing",
            "conversation_id": conversation,
            "until": (now + timedelta(seconds=20)).isoformat(),
        },
        {"type": "offer.created", "offer": offer_for(conversation)},
    )
    until(page, lambda: streams)
    offered.append(True)
    streams[0].fulfill(status=200, content_type="text/event-stream", body=events)
    ticks.filter(has_text="✓✓").wait_for()
    assert ticks.get_attribute("title") == "Read"
    assert page.locator("#typing").inner_text() == "46701000022 is typing…"
    page.locator(".offer").wait_for()
    page.locator("#announce").filter(has_text="New offer: 46701000021").wait_for(state="attached")
    # The stream ended: the page opens it again after a pause, fetching its state meanwhile.
    until(page, lambda: len(streams) >= 2)
    assert len(offer_reads) >= 2
    streams[1].fulfill(
        status=200,
        content_type="text/event-stream",
        body=sse({"type": "message.created", "conversation_id": conversation, "message": message}),
    )
    transcript.get_by_text("Thanks!").wait_for()
    assert transcript.get_by_text("Thanks!").count() == 1  # the event and the refetch agree


def test_template_picker_when_the_whatsapp_window_is_closed(page: Any, stack: WebStack) -> None:
    raw = stack.config()
    raw["messaging_services"][0]["whatsapp_templates"] = [
        {
            "app_id": APP_EU,
            "name": "order_update",
            "language": "en",
            "parameters": ["body[1]text"],
            "text": "Hi! Your order {body[1]text} has shipped.",
        }
    ]
    stack.apply(raw)
    conversation = customer_writes(stack, APP_EU, "WHATSAPP", "46701000023", "Any news?")
    set_conversation(
        stack,
        conversation,
        status="active",
        assigned_agent=AGENT[0],
        last_inbound_at=datetime.now(UTC) - timedelta(days=2),
    )
    log_in(page, *AGENT, target=f"/?conversation={conversation}")
    ready(page)
    window = page.locator("#wa-window")
    window.filter(has_text="WhatsApp window closed").wait_for()
    assert page.get_by_label("Reply (Ctrl+Enter sends)").is_hidden()
    page.locator("#template-select option", has_text="order_update (en)").wait_for(state="attached")
    parameter = page.get_by_label("body[1]text")
    parameter.fill("A-1042")
    assert page.locator("#template-preview").inner_text() == (
        "Preview: Hi! Your order A-1042 has shipped."
    )
    parameter.press("Control+Enter")
    sent = page.locator(".message.outbound .template")
    sent.wait_for()
    assert "Template order_update (en)" in sent.inner_text()
    assert "A-1042" in sent.inner_text()


def test_upload_errors_are_shown_and_an_upload_is_sent_by_token(page: Any, stack: WebStack) -> None:
    conversation = customer_writes(stack, APP_EU, "WHATSAPP", "46701000024", "Photo please")
    set_conversation(stack, conversation, status="active", assigned_agent=AGENT[0])
    uploads: list[int] = []
    sent: list[Any] = []

    def upload(route: Any) -> None:
        uploads.append(1)
        assert b'name="file"' in (route.request.post_data_buffer or b"")
        if len(uploads) == 1:
            fulfil_json(
                route,
                {"error": {"code": "payload_too_large", "message": "larger than 16 MB"}},
                413,
            )
        else:
            fulfil_json(
                route,
                {
                    "token": "tok-123",
                    "url": "/sms/richcontent/tok-123",
                    "content_type": "image/png",
                    "size": 68,
                },
                201,
            )

    def messages(route: Any) -> None:
        if route.request.method != "POST":
            route.fallback()
            return
        sent.append(route.request.post_data_json)
        fulfil_json(
            route,
            {
                "id": 999999,
                "conversation_id": conversation,
                "direction": "outbound",
                "kind": "media",
                "text": None,
                "content": {},
                "status": "pending",
                "created_at": datetime.now(UTC).isoformat(),
                "attachments": [
                    {
                        "id": 1,
                        "state": "stored",
                        "content_type": "image/png",
                        "size": 68,
                        "filename": "photo.png",
                        "url": "/static/favicon.svg",
                    }
                ],
            },
            202,
        )

    page.route(f"**/api/v1/conversations/{conversation}/attachments", upload)
    page.route(f"**/api/v1/conversations/{conversation}/messages", messages)
    log_in(page, *AGENT, target=f"/?conversation={conversation}")
    ready(page)
    page.get_by_role("list", name="Transcript").get_by_text("Photo please").wait_for()
    file = {
        "name": "photo.png",
        "mimeType": "image/png",
        "buffer": b"\x89PNG\r\n\x1a\n" + b"0" * 60,
    }
    page.get_by_label("Attach a file").set_input_files(file)
    error = page.locator("#reply-error")
    error.filter(has_text="photo.png was not attached: the file is too large").wait_for()

    page.get_by_label("Attach a file").set_input_files(file)
    page.locator("#reply-attachment").filter(has_text="Attached: photo.png").wait_for()
    assert error.is_hidden()
    page.get_by_role("button", name="Send").click()
    page.locator('.message.outbound[data-message-id="999999"] img').wait_for()
    assert sent == [{"attachment": "tok-123"}]
    assert page.locator("#reply-attachment").is_hidden()
