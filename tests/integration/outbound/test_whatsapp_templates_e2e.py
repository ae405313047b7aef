"""WhatsApp templates end to end: configured through the admin API, sent by an agent outside
the 24-hour window, delivered by the sender to the emulator in Sinch's template shape; and a
failed delivery shown to the agent in plain words."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from convodesk.storage.db import transaction
from convodesk.storage.tables import ConversationRow
from tests.integration.outbound import test_replies_e2e
from tests.integration.outbound.test_replies_e2e import (
    Stack,
    customer_writes,
    sent_bodies,
    status_of,
    wait_for,
)
from tests.support.apps import APP_EU

stack = test_replies_e2e.stack  # the same fixture: convodesk, its workers and the emulator

ORDER_UPDATE = {
    "app_id": APP_EU,
    "name": "order_update",
    "language": "sv_SE",
    "parameters": ["body[1]text", "body[2]text", "button[0]url[1]text"],
    "text": "Hej {body[1]text}! Order {body[2]text} har skickats.",
}
PARAMETERS = {"body[1]text": "Anna", "body[2]text": "A-1001", "button[0]url[1]text": "A-1001"}


def configure_templates(stack: Stack, *templates: dict[str, Any]) -> None:
    service = stack.api.get("/api/v1/messaging-services/sinch-eu").json()
    service["whatsapp_templates"] = list(templates)
    answer = stack.api.put("/api/v1/messaging-services/sinch-eu", json=service)
    assert answer.status_code == 200, answer.text


def close_window(stack: Stack, conversation: int) -> None:
    """The customer last wrote 25 hours ago, as far as convodesk knows."""
    with transaction(stack.runtime.sessions) as session:
        row = session.get(ConversationRow, conversation)
        assert row is not None
        assert row.last_inbound_at is not None
        row.last_inbound_at -= timedelta(hours=25)


def test_a_template_outside_the_window_reaches_sinch_as_a_whatsapp_channel_template(
    stack: Stack,
) -> None:
    configure_templates(stack, ORDER_UPDATE)
    conversation = customer_writes(stack, APP_EU, "WHATSAPP", "46701000101")
    close_window(stack, conversation)
    path = f"/api/v1/conversations/{conversation}/messages"

    refused = stack.api.post(path, json={"text": "Your order shipped"})
    assert refused.status_code == 409
    assert [t["name"] for t in refused.json()["templates"]] == ["order_update"]
    offered = stack.api.get(f"/api/v1/conversations/{conversation}/templates").json()
    assert offered["whatsapp_window"]["open"] is False

    answer = stack.api.post(
        path,
        json={"template": {"name": "order_update", "language": "sv_SE", "parameters": PARAMETERS}},
    )
    assert answer.status_code == 202, answer.text
    message_id = answer.json()["id"]
    wait_for(lambda: status_of(stack, message_id) == "READ")
    [sent] = sent_bodies(stack, "46701000101")
    assert sent == {
        "app_id": APP_EU,
        "recipient": {
            "identified_by": {
                "channel_identities": [{"channel": "WHATSAPP", "identity": "46701000101"}]
            }
        },
        "message": {
            "template_message": {
                "channel_template": {
                    "WHATSAPP": {
                        "template_id": "order_update",
                        "language_code": "sv_SE",
                        "parameters": PARAMETERS,
                    }
                }
            }
        },
        "channel_priority_order": ["WHATSAPP"],
        "message_metadata": f"cd:{message_id}",
    }
    [shown] = [
        m
        for m in stack.api.get(path).json()["items"]
        if m["direction"] == "outbound" and m["id"] == message_id
    ]
    assert shown["text"] == "Hej Anna! Order A-1001 har skickats."
    assert shown["failure_text"] is None


def test_unknown_templates_and_parameters_never_reach_sinch(stack: Stack) -> None:
    configure_templates(stack, ORDER_UPDATE)
    conversation = customer_writes(stack, APP_EU, "WHATSAPP", "46701000102")
    path = f"/api/v1/conversations/{conversation}/messages"
    for body in (
        {"template": {"name": "order_updates", "language": "sv_SE", "parameters": PARAMETERS}},
        {"template": {"name": "order_update", "language": "sv_SE", "parameters": {}}},
    ):
        assert stack.api.post(path, json=body).status_code == 422
    ok = stack.api.post(path, json={"text": "The window is open: free text goes"})
    assert ok.status_code == 202
    wait_for(lambda: status_of(stack, ok.json()["id"]) == "READ")
    assert [b["message"] for b in sent_bodies(stack, "46701000102")] == [
        {"text_message": {"text": "The window is open: free text goes"}}
    ]


def test_a_failed_delivery_is_explained_in_plain_words(stack: Stack) -> None:
    conversation = customer_writes(stack, APP_EU, "WHATSAPP", "46701000103")
    # Sinch's view of the window differs from ours (say the clocks disagree): it refuses.
    scripted = stack.emulator.post(
        "/_emulator/outcomes",
        json={"identity": "46701000103", "fail_reason": "OUTSIDE_ALLOWED_SENDING_WINDOW"},
    )
    assert scripted.status_code == 201, scripted.text
    path = f"/api/v1/conversations/{conversation}/messages"
    message_id = stack.api.post(path, json={"text": "Still there?"}).json()["id"]
    wait_for(lambda: status_of(stack, message_id) == "FAILED")
    [failed] = [m for m in stack.api.get(path).json()["items"] if m["id"] == message_id]
    assert failed["reason_code"] == "OUTSIDE_ALLOWED_SENDING_WINDOW"
    assert failed["reason_text"]  # Sinch's own description stays beside it
    assert failed["failure_text"] == (
        "The customer's 24-hour WhatsApp window has closed; send an approved template."
    )
