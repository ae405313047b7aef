"""A conversation's life in the Chat Server: admission and prompts, transfer, end with
wrap-up, inactivity, reopen to the last agent."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from convodesk.storage.db import transaction
from convodesk.storage.tables import AssignmentLogRow
from tests.integration.chat.conftest import Chat, chat_config
from tests.support.factories import make_event


def assigned_to(chat: Chat, login: str, **options: Any) -> int:
    """A conversation offered to and accepted by `login` (made ready first)."""
    desk = chat.desk(login)
    desk.ready()
    conversation = chat.conversation(**options)
    chat.route()
    [offer] = [o for o in desk.offers() if o["conversation_id"] == conversation]
    answer = desk.accept(offer["id"])
    assert answer.status_code == 200, answer.text
    return conversation


def history_of(chat: Chat, conversation_id: int) -> list[tuple[str, str | None, str | None]]:
    with transaction(chat.runtime.sessions) as session:
        rows = session.execute(
            select(AssignmentLogRow.action, AssignmentLogRow.agent, AssignmentLogRow.detail)
            .where(AssignmentLogRow.conversation_id == conversation_id)
            .order_by(AssignmentLogRow.id)
        ).all()
        return [(action, agent, detail) for action, agent, detail in rows]


# --------------------------------------------------------------------------- admission


def test_a_new_conversation_is_welcomed_and_told_its_place(chat: Chat) -> None:
    first, second, third = (chat.conversation(waited_seconds=0) for _ in range(3))
    chat.route()
    assert chat.prompts(first) == ["welcome: Welcome to support!"]
    chat.route(after_seconds=61)  # no agent for a minute: each hears its position
    assert chat.prompts(third)[-1] == "queue_position: You are number 3 in support."
    chat.route(after_seconds=62)  # unchanged: nothing new
    assert len(chat.prompts(third)) == 2
    picked = chat.desk("bob").post(f"/api/v1/conversations/{first}/pick")
    assert picked.status_code == 200
    chat.route(after_seconds=100)  # better, but too soon after the last one
    assert len(chat.prompts(third)) == 2
    chat.route(after_seconds=190)
    assert chat.prompts(second)[-1] == "queue_position: You are number 1 in support."
    assert chat.prompts(third)[-1] == "queue_position: You are number 2 in support."
    assert chat.prompts(first) == [
        "welcome: Welcome to support!",
        "queue_position: You are number 1 in support.",
    ]


@pytest.mark.parametrize("chat_settings", [{"queue_max_size": 2}])
def test_a_full_queue_turns_new_conversations_away(chat: Chat) -> None:
    first, second = chat.conversation(), chat.conversation()
    chat.route()
    third = chat.conversation()
    chat.route()
    row = chat.row(third)
    assert (row.status, row.close_reason, row.ended_by) == ("closed", "queue_full", "system")
    assert row.open_key is None
    assert chat.prompts(third) == ["queue_full: support is full, please write again later."]
    assert [chat.row(c).status for c in (first, second)] == ["waiting", "waiting"]
    # Room again once one is taken: a new conversation is admitted.
    assert chat.desk("bob").post(f"/api/v1/conversations/{first}/pick").status_code == 200
    fourth = chat.conversation()
    chat.route()
    assert chat.row(fourth).status == "waiting"


def test_outside_business_hours_the_customer_is_told_once_and_waits(chat: Chat) -> None:
    today = chat.start.date().isoformat()
    raw = chat_config()
    raw["queues"][0]["business_hours"] = {
        "timezone": "UTC",
        "weekly": {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
        "closed_dates": [today],
    }
    chat.configure({"queues": raw["queues"]})
    conversation = chat.conversation()
    chat.route()
    chat.route(after_seconds=1)
    assert chat.prompts(conversation) == [
        "outside_business_hours: support is closed now; we answer when we open."
    ]
    assert chat.row(conversation).status == "waiting"
    chat.desk("anna").ready()  # an agent working out of hours still gets it
    chat.route(after_seconds=2)
    assert chat.offers_of(conversation) == [("anna", "offered")]


# --------------------------------------------------------------------------- transfer


def test_transfer_to_a_queue_requeues_and_keeps_the_history(chat: Chat) -> None:
    conversation = assigned_to(chat, "anna", waited_seconds=40)
    anna, carl = chat.desk("anna"), chat.desk("carl")
    answer = anna.post(f"/api/v1/conversations/{conversation}/transfer", json={"queue": "sales"})
    assert answer.status_code == 200, answer.text
    item = answer.json()
    assert (item["status"], item["queue"], item["assigned_agent"]) == ("waiting", "sales", None)
    # it keeps its place: waiting since it first waited, 40 s before the start
    since = datetime.fromisoformat(item["waiting_since"].replace("Z", "+00:00"))
    assert since == chat.start - timedelta(seconds=40)
    # anna is no longer in it (not her queue, not hers); carl's queue has it now
    assert anna.get(f"/api/v1/conversations/{conversation}").status_code == 404
    carl.ready()
    chat.route()
    assert chat.offers_of(conversation)[-1] == ("carl", "offered")
    assert chat.prompts(conversation) == ["welcome: Welcome to support!"]  # no second welcome
    assert [(a, g) for a, g, _ in history_of(chat, conversation)] == [
        ("queued", None),
        ("assigned", "anna"),
        ("transferred", "anna"),
    ]
    assert history_of(chat, conversation)[-1][2] == "to queue sales"


def test_transfer_to_an_agent_offers_it_to_that_agent_at_once(chat: Chat) -> None:
    conversation = assigned_to(chat, "anna")
    anna, bob = chat.desk("anna"), chat.desk("bob")
    # bob is not ready: refused, nothing changes
    refused = anna.post(f"/api/v1/conversations/{conversation}/transfer", json={"agent": "bob"})
    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == (
        "agent bob is offline: a conversation can be transferred only to a ready agent"
    )
    assert chat.row(conversation).assigned_agent == "anna"
    bob.ready()
    # bob is full (two chats): a transfer to him goes through all the same
    for _ in range(2):
        other = chat.conversation()
        assert bob.post(f"/api/v1/conversations/{other}/pick").status_code == 200
    answer = anna.post(f"/api/v1/conversations/{conversation}/transfer", json={"agent": "bob"})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["status"], answer.json()["assigned_agent"]) == ("waiting", None)
    [offer] = bob.offers()
    assert (offer["conversation_id"], offer["kind"]) == (conversation, "direct")
    assert bob.accept(offer["id"]).json()["assigned_agent"] == "bob"


def test_a_rejected_transfer_goes_to_the_queue(chat: Chat) -> None:
    conversation = assigned_to(chat, "anna")
    chat.desk("dana").ready()
    answer = chat.desk("anna").post(
        f"/api/v1/conversations/{conversation}/transfer", json={"agent": "dana"}
    )
    assert answer.status_code == 200
    [offer] = chat.desk("dana").offers()
    assert chat.desk("dana").post(f"/api/v1/offers/{offer['id']}/reject").status_code == 204
    chat.route()
    # anna is idle since the transfer, dana just rejected it: anna gets it back
    assert chat.offers_of(conversation)[-1] == ("anna", "offered")


@pytest.mark.parametrize(
    ("body", "status", "path"),
    [
        ({"queue": "nope"}, 422, "queue"),
        ({"agent": "nobody"}, 422, "agent"),
        ({"queue": "sales", "agent": "bob"}, 422, ""),
        ({}, 422, ""),
        ({"queue": "sales", "colour": "red"}, 422, "colour"),
        ({"agent": "anna"}, 409, None),
    ],
)
def test_bad_transfers_are_refused_and_change_nothing(
    chat: Chat, body: dict[str, Any], status: int, path: str | None
) -> None:
    conversation = assigned_to(chat, "anna")
    answer = chat.desk("anna").post(f"/api/v1/conversations/{conversation}/transfer", json=body)
    assert answer.status_code == status, answer.text
    if path is not None:
        assert path in [e["path"] for e in answer.json()["errors"]]
    row = chat.row(conversation)
    assert (row.status, row.assigned_agent, row.queue) == ("active", "anna", "support")


def test_only_the_handling_agent_or_an_admin_transfers(chat: Chat) -> None:
    conversation = assigned_to(chat, "anna")
    bob = chat.desk("bob")
    answer = bob.post(f"/api/v1/conversations/{conversation}/transfer", json={"queue": "sales"})
    assert answer.status_code == 409
    assert "only the agent handling" in answer.json()["error"]["message"]
    admin = chat.desk("admin")
    moved = admin.post(f"/api/v1/conversations/{conversation}/transfer", json={"queue": "vip"})
    assert moved.status_code == 200
    assert moved.json()["queue"] == "vip"


# --------------------------------------------------------------------------- end


def test_end_with_a_wrapup_code(chat: Chat) -> None:
    conversation = assigned_to(chat, "anna")
    anna = chat.desk("anna")
    bad = anna.post(f"/api/v1/conversations/{conversation}/end", json={"wrapup_code": "gone"})
    assert bad.status_code == 422
    [error] = bad.json()["errors"]
    assert error["path"] == "wrapup_code"
    assert "expected one of resolved, follow-up" in error["message"]
    assert chat.row(conversation).status == "active"
    answer = anna.post(
        f"/api/v1/conversations/{conversation}/end", json={"wrapup_code": "resolved"}
    )
    assert answer.status_code == 200, answer.text
    item = answer.json()
    assert (item["status"], item["wrapup_code"], item["close_reason"], item["ended_by"]) == (
        "closed",
        "resolved",
        "agent",
        "anna",
    )
    assert item["assigned_agent"] == "anna"  # who handled it stays on record
    assert chat.prompts(conversation)[-1] == "closed: Thanks, this chat is closed."
    assert anna.post(f"/api/v1/conversations/{conversation}/end", json={}).status_code == 409
    assert history_of(chat, conversation)[-1] == ("closed", "anna", "agent, wrap-up resolved")


def test_end_without_a_code_and_codes_are_free_when_none_are_configured(chat: Chat) -> None:
    conversation = assigned_to(chat, "anna")
    answer = chat.desk("anna").post(f"/api/v1/conversations/{conversation}/end")
    assert answer.status_code == 200, answer.text
    assert answer.json()["wrapup_code"] is None
    chat.configure({"chat_settings": chat_config(wrapup_codes=[])["chat_settings"]})
    chat.desk("anna").ready("not_ready")
    other = assigned_to(chat, "bob")
    free = chat.desk("bob").post(f"/api/v1/conversations/{other}/end", json={"wrapup_code": "x"})
    assert free.status_code == 200, free.text
    assert free.json()["wrapup_code"] == "x"


def test_another_agent_cannot_end_a_chat(chat: Chat) -> None:
    conversation = assigned_to(chat, "anna")
    answer = chat.desk("bob").post(f"/api/v1/conversations/{conversation}/end", json={})
    assert answer.status_code == 409
    assert chat.row(conversation).status == "active"


# --------------------------------------------------------------------------- inactivity


def test_a_silent_customer_is_warned_then_the_chat_closes(chat: Chat) -> None:
    conversation = assigned_to(chat, "anna")
    anna = chat.desk("anna")
    reply = anna.post(f"/api/v1/conversations/{conversation}/messages", json={"text": "Hello?"})
    assert reply.status_code == 202, reply.text
    chat.route(after_seconds=200)
    assert chat.row(conversation).idle_warned_at is None
    chat.route(after_seconds=310)
    assert chat.prompts(conversation)[-1] == "idle_warning: Are you still there?"
    chat.route(after_seconds=320)  # warned once, not again
    assert [p for p in chat.prompts(conversation) if p.startswith("idle")] == [
        "idle_warning: Are you still there?"
    ]
    row = chat.row(conversation)
    assert row.status == "active"
    report = chat.route(after_seconds=620)
    assert report.closed == 1
    row = chat.row(conversation)
    assert (row.status, row.close_reason, row.ended_by) == ("closed", "inactivity", "system")
    assert chat.prompts(conversation)[-1] == "closed: Thanks, this chat is closed."
    # anna is free again
    assert (
        anna.get("/api/v1/conversations", params={"assigned": "me", "status": "active"}).json()[
            "items"
        ]
        == []
    )


def test_no_timer_while_the_customer_waits_for_the_agent(chat: Chat) -> None:
    conversation = assigned_to(chat, "anna")  # the customer wrote last; no agent reply yet
    chat.route(after_seconds=3600)
    row = chat.row(conversation)
    assert (row.status, row.idle_warned_at) == ("active", None)


# --------------------------------------------------------------------------- reopen


def customer_writes_again(chat: Chat, conversation_id: int) -> None:
    """An inbound message of the conversation's customer, threaded by the Chain Matcher."""
    row = chat.row(conversation_id)
    with transaction(chat.runtime.sessions) as session:
        make_event(session, identity=row.identity, channel=row.channel)
    assert chat.app.state.processor.process_batch() == 1


def test_a_reopened_conversation_goes_back_to_its_last_agent(chat: Chat) -> None:
    conversation = assigned_to(chat, "anna")
    chat.desk("bob").ready()
    assert chat.desk("anna").post(f"/api/v1/conversations/{conversation}/end").status_code == 200
    # bob has been idle longer than anna (her chat just ended): only the preference sends
    # the conversation back to her
    customer_writes_again(chat, conversation)
    row = chat.row(conversation)
    assert (row.status, row.reopen_count, row.assigned_agent) == ("waiting", 1, None)
    chat.route()
    assert chat.offers_of(conversation)[-1] == ("anna", "offered")
    [offer] = chat.desk("anna").offers()
    assert offer["kind"] == "preferred"
    welcome = [p for p in chat.prompts(conversation) if p.startswith("welcome")]
    assert len(welcome) == 1  # not welcomed again
    assert [a for a, _, d in history_of(chat, conversation)][-2:] == ["closed", "queued"]


def test_a_reopened_conversation_goes_to_anyone_when_its_agent_is_away(chat: Chat) -> None:
    conversation = assigned_to(chat, "anna")
    assert chat.desk("anna").post(f"/api/v1/conversations/{conversation}/end").status_code == 200
    chat.desk("anna").ready("not_ready")
    chat.desk("bob").ready()
    customer_writes_again(chat, conversation)
    chat.route()
    assert chat.offers_of(conversation)[-1] == ("bob", "offered")


def test_history_lists_the_customers_earlier_conversations(chat: Chat) -> None:
    old = chat.conversation(status="closed", identity="46709990000", text="old question")
    other_customer = chat.conversation(identity="46709990001")
    current = chat.conversation(identity="46709990000", text="new question")
    answer = chat.desk("anna").get(f"/api/v1/conversations/{current}/history")
    assert answer.status_code == 200, answer.text
    [item] = answer.json()
    assert (item["id"], item["status"], item["preview"]) == (old, "closed", "old question")
    assert other_customer not in [i["id"] for i in answer.json()]
    assert chat.desk("carl").get(f"/api/v1/conversations/{current}/history").status_code == 404


def test_chats_of_a_removed_agent_wait_again(chat: Chat) -> None:
    conversation = assigned_to(chat, "anna")
    raw = chat_config()
    raw["agents"] = [a for a in raw["agents"] if a["login"] != "anna"]
    chat.configure({"agents": raw["agents"]})
    chat.desk("bob").ready()
    chat.route()
    row = chat.row(conversation)
    assert (row.status, row.assigned_agent) == ("waiting", None)
    assert chat.offers_of(conversation)[-1] == ("bob", "offered")
    assert history_of(chat, conversation)[-1][:2] == ("requeued", "anna")
