"""The conversations read API on SQLite and PostgreSQL: filters, paging, messages with
their attachments, and who sees what (an agent only its queues; 404 for the others)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import event

from convodesk.runtime import Runtime
from convodesk.storage import conversations as conversations_sql
from convodesk.storage.db import transaction
from tests.support.apps import client_for, make_token
from tests.support.factories import (
    APP_EU,
    make_agent,
    make_attachment,
    make_conversation,
    make_message,
)

T0 = datetime(2024, 6, 10, 6, 0, tzinfo=UTC)


def add_conversations(runtime: Runtime, *specs: dict[str, Any]) -> list[int]:
    with transaction(runtime.sessions) as session:
        return [make_conversation(session, **spec).id for spec in specs]


def ids_of(answer: Any) -> list[int]:
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["items"]]


def test_conversation_endpoints_need_a_token(runtime: Runtime) -> None:
    [conversation_id] = add_conversations(runtime, {})
    with client_for(runtime) as anonymous:
        for path in (
            "/api/v1/conversations",
            f"/api/v1/conversations/{conversation_id}",
            f"/api/v1/conversations/{conversation_id}/messages",
        ):
            answer = anonymous.get(path)
            assert answer.status_code == 401, path
            assert answer.headers["www-authenticate"].startswith("Bearer")
    with client_for(runtime, "cdk_not-a-real-token") as stranger:
        assert stranger.get("/api/v1/conversations").status_code == 401


def test_a_conversation_carries_its_fields(runtime: Runtime, admin: TestClient) -> None:
    [conversation_id] = add_conversations(
        runtime,
        {
            "identity": "46701234567",
            "status": "active",
            "opened_at": T0,
            "last_activity_at": T0 + timedelta(minutes=5),
            "last_inbound_at": T0 + timedelta(minutes=4),
            "sinch_contact_id": "01J0CONTACT0000000000000000",
        },
    )
    expected = {
        "id": conversation_id,
        "service": "sinch-eu",
        "app_id": APP_EU,
        "channel": "WHATSAPP",
        "identity": "46701234567",
        "queue": "support",
        "status": "active",
        "opened_at": "2024-06-10T06:00:00Z",
        "closed_at": None,
        "last_inbound_at": "2024-06-10T06:04:00Z",
        "last_activity_at": "2024-06-10T06:05:00Z",
        "reopen_count": 0,
        "sinch_conversation_id": None,
        "sinch_contact_id": "01J0CONTACT0000000000000000",
        "customer_typing_at": None,
        "customer_typing": False,
        # The customer wrote at 06:04 in 2024: the 24-hour window closed long ago.
        "whatsapp_window": {"open": False, "closes_at": "2024-06-11T06:04:00Z"},
        "assigned_agent": None,
        "assigned_at": None,
        "waiting_since": None,
        "ended_by": None,
        "wrapup_code": None,
        "close_reason": None,
    }
    assert admin.get(f"/api/v1/conversations/{conversation_id}").json() == expected
    assert admin.get("/api/v1/conversations").json() == {"items": [expected], "next": None}


def test_filters_narrow_the_list(runtime: Runtime, admin: TestClient) -> None:
    support, sales, closed, sms, known = add_conversations(
        runtime,
        {},
        {"queue": "sales"},
        {"status": "closed"},
        {"channel": "SMS"},
        {"identity": "46709999999", "status": "active"},
    )
    assert ids_of(admin.get("/api/v1/conversations")) == [known, sms, closed, sales, support]
    cases: list[tuple[dict[str, str], list[int]]] = [
        ({"queue": "sales"}, [sales]),
        ({"status": "closed"}, [closed]),
        ({"status": "waiting"}, [sms, sales, support]),
        ({"channel": "SMS"}, [sms]),
        ({"identity": "46709999999"}, [known]),
        ({"queue": "support", "status": "active"}, [known]),
        ({"queue": "nope"}, []),
    ]
    for params, expected in cases:
        assert ids_of(admin.get("/api/v1/conversations", params=params)) == expected, params
    for params in ({"status": "open"}, {"limit": "0"}, {"limit": "501"}, {"before": "0"}):
        answer = admin.get("/api/v1/conversations", params=params)
        assert answer.status_code == 422, params
        assert answer.json()["error"]["code"] == "invalid_request"


def test_conversations_page_by_keyset(runtime: Runtime, admin: TestClient) -> None:
    created = add_conversations(runtime, *({} for _ in range(5)))
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = admin.get("/api/v1/conversations", params=params).json()
        seen += [item["id"] for item in page["items"]]
        if page["next"] is None:
            break
        params["before"] = page["next"]
    assert seen == sorted(created, reverse=True)


def test_messages_come_oldest_first_with_their_attachments(
    runtime: Runtime, admin: TestClient
) -> None:
    with transaction(runtime.sessions) as session:
        conversation = make_conversation(session)
        hello = make_message(session, conversation, created_at=T0, status_at=T0)
        photo = make_message(
            session,
            conversation,
            kind="media",
            text=None,
            content={"media_message": {"url": "https://media.example.com/a.jpg"}},
        )
        stored = make_attachment(session, photo, token="tok-stored-0001")
        pending = make_attachment(session, photo, state="pending", filename=None)
        reply = make_message(
            session,
            conversation,
            direction="outbound",
            text="It ships today.",
            status="FAILED",
            reason_code="RECIPIENT_NOT_REACHABLE",
            reason_text="the customer's phone is off",
            reply_to=hello.sinch_message_id,
        )
        other = make_message(session)  # another conversation's message stays out
        ids = (conversation.id, hello.id, photo.id, reply.id, other.conversation_id)
    conversation_id, hello_id, photo_id, reply_id, other_conversation = ids
    assert other_conversation != conversation_id

    answer = admin.get(f"/api/v1/conversations/{conversation_id}/messages")
    assert answer.status_code == 200, answer.text
    page = answer.json()
    assert page["next"] is None
    first, second, third = page["items"]
    assert [first["id"], second["id"], third["id"]] == [hello_id, photo_id, reply_id]
    assert first == {
        "id": hello_id,
        "conversation_id": conversation_id,
        "direction": "inbound",
        "kind": "text",
        "text": "Hej! Where is my order?",
        "content": {"text_message": {"text": "Hej! Where is my order?"}},
        "status": "received",
        "reason_code": None,
        "reason_text": None,
        "failure_text": None,
        "author": None,
        "author_name": None,
        "sinch_message_id": first["sinch_message_id"],
        "reply_to": None,
        "created_at": "2024-06-10T06:00:00Z",
        "status_at": "2024-06-10T06:00:00Z",
        "attachments": [],
    }
    assert len(first["sinch_message_id"]) == 26
    assert second["attachments"] == [
        {
            "id": stored.id,
            "state": "stored",
            "content_type": "image/jpeg",
            "size": 48213,
            "filename": "photo.jpg",
            "url": "/sms/richcontent/tok-stored-0001",
        },
        {
            "id": pending.id,
            "state": "pending",
            "content_type": "image/jpeg",
            "size": 48213,
            "filename": None,
            "url": None,
        },
    ]
    assert (third["direction"], third["status"], third["reason_code"], third["reply_to"]) == (
        "outbound",
        "FAILED",
        "RECIPIENT_NOT_REACHABLE",
        first["sinch_message_id"],
    )
    assert third["reason_text"] == "the customer's phone is off"
    assert third["failure_text"] == "The customer cannot be reached on this channel."


def test_messages_page_forward_from_a_cursor(runtime: Runtime, admin: TestClient) -> None:
    with transaction(runtime.sessions) as session:
        conversation = make_conversation(session)
        created = [make_message(session, conversation, text=f"m{i}").id for i in range(5)]
        conversation_id = conversation.id
    path = f"/api/v1/conversations/{conversation_id}/messages"
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = admin.get(path, params=params).json()
        seen += [item["id"] for item in page["items"]]
        if page["next"] is None:
            break
        params["after"] = page["next"]
    assert seen == created
    # polling from the last id seen answers only what is new
    assert admin.get(path, params={"after": created[-1]}).json() == {"items": [], "next": None}


def test_messages_and_attachments_load_in_two_queries(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        conversation = make_conversation(session)
        for _ in range(6):
            make_attachment(session, make_message(session, conversation, kind="media"))
        conversation_id = conversation.id
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(runtime.engine, "before_cursor_execute", record)
    try:
        with transaction(runtime.sessions) as session:
            entries = conversations_sql.list_messages(session, conversation_id, limit=100)
            assert [len(e.attachments) for e in entries] == [1] * 6
    finally:
        event.remove(runtime.engine, "before_cursor_execute", record)
    assert len(statements) == 2, statements


def test_an_agent_sees_only_the_conversations_of_its_queues(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        make_agent(session, "anna", queues=("support", "billing"))
        make_agent(session, "bob", queues=())
        mine = make_conversation(session, queue="support")
        billing = make_conversation(session, queue="billing")
        theirs = make_conversation(session, queue="sales")
        make_message(session, theirs)
        ids = (mine.id, billing.id, theirs.id)
    mine_id, billing_id, theirs_id = ids
    with client_for(runtime, make_token(runtime, "agent", "anna")) as anna:
        assert ids_of(anna.get("/api/v1/conversations")) == [billing_id, mine_id]
        assert ids_of(anna.get("/api/v1/conversations", params={"queue": "sales"})) == []
        assert anna.get(f"/api/v1/conversations/{mine_id}").status_code == 200
        assert anna.get(f"/api/v1/conversations/{mine_id}/messages").status_code == 200
        for path in (
            f"/api/v1/conversations/{theirs_id}",
            f"/api/v1/conversations/{theirs_id}/messages",
            "/api/v1/conversations/999999",
        ):
            answer = anna.get(path)
            assert answer.status_code == 404, path
            # the same answer as for an id that does not exist: nothing leaks
            assert answer.json()["error"]["code"] == "not_found"
            assert "sales" not in answer.text
    with client_for(runtime, make_token(runtime, "agent", "bob")) as bob:
        assert ids_of(bob.get("/api/v1/conversations")) == []
        assert bob.get(f"/api/v1/conversations/{mine_id}").status_code == 404
    with client_for(runtime, make_token(runtime)) as admin:
        assert ids_of(admin.get("/api/v1/conversations")) == [theirs_id, billing_id, mine_id]
        assert admin.get(f"/api/v1/conversations/{theirs_id}/messages").status_code == 200


def test_unknown_conversation_is_404(admin: TestClient) -> None:
    assert admin.get("/api/v1/conversations/424242").status_code == 404
    assert admin.get("/api/v1/conversations/424242/messages").status_code == 404
    # ids past the column's range are refused before they reach the database
    assert admin.get(f"/api/v1/conversations/{2**31 - 1}").status_code == 404
    assert admin.get(f"/api/v1/conversations/{2**31}").status_code == 422
    assert admin.get(f"/api/v1/conversations/{2**31}/messages").status_code == 422
    assert admin.get("/api/v1/conversations", params={"before": 2**31}).status_code == 422
    answer = admin.get("/api/v1/conversations/1/messages", params={"after": 2**63})
    assert answer.status_code == 422
    assert admin.get("/api/v1/conversations/abc").status_code == 422
