"""WhatsApp rules over the API, on SQLite and PostgreSQL: templates configured per app through
the admin API, the 24-hour window on the conversation, the templates an agent may send, the
checks on a template reply, and failure reasons in plain words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from convodesk.runtime import Runtime
from convodesk.services import configuration
from convodesk.services import conversations as conversation_service
from convodesk.storage.api_tokens import Principal
from convodesk.storage.db import transaction
from convodesk.storage.tables import MessageRow, MessagingServiceRow, OutboxRow
from tests.support.apps import APP_EU, APP_EU2, client_for, make_token, service_body
from tests.support.factories import make_agent, make_conversation, make_message

ORDER_UPDATE = {
    "app_id": APP_EU,
    "name": "order_update",
    "language": "sv_SE",
    "parameters": ["body[1]text", "body[2]text"],
    "text": "Hej {body[1]text}! Order {body[2]text} har skickats.",
}
HELLO = {"app_id": APP_EU, "name": "hello", "language": "en", "parameters": []}
OTHER_APP = {**HELLO, "app_id": APP_EU2, "name": "other_app_only"}
ADMIN = Principal(token_id=0, role="admin", agent_login=None)


def service_with_templates(*templates: dict[str, Any]) -> dict[str, Any]:
    body = service_body(apps=(APP_EU, APP_EU2))
    body["whatsapp_templates"] = list(templates)
    return body


@pytest.fixture
def configured(runtime: Runtime, admin: TestClient) -> TestClient:
    answer = admin.post(
        "/api/v1/messaging-services", json=service_with_templates(ORDER_UPDATE, HELLO, OTHER_APP)
    )
    assert answer.status_code == 201, answer.text
    return admin


def conversation(runtime: Runtime, **values: Any) -> int:
    with transaction(runtime.sessions) as session:
        return make_conversation(session, **values).id


def reply(client: TestClient, conversation_id: int, body: dict[str, Any]) -> Any:
    return client.post(f"/api/v1/conversations/{conversation_id}/messages", json=body)


def template(name: str = "order_update", language: str = "sv_SE", **parameters: str) -> Any:
    return {"template": {"name": name, "language": language, "parameters": parameters}}


ORDER_PARAMETERS = {"body[1]text": "Anna", "body[2]text": "A-1001"}


# --------------------------------------------------------------------------- admin API


def test_the_admin_api_carries_templates_as_part_of_a_service(
    runtime: Runtime, configured: TestClient
) -> None:
    got = configured.get("/api/v1/messaging-services/sinch-eu").json()
    assert got["whatsapp_templates"] == [
        ORDER_UPDATE,
        {**HELLO, "parameters": []},
        {**OTHER_APP, "parameters": []},
    ]
    with transaction(runtime.sessions) as session:
        stored = session.scalar(select(MessagingServiceRow.whatsapp_templates))
    assert stored is not None
    assert [t["name"] for t in stored] == ["order_update", "hello", "other_app_only"]

    got["whatsapp_templates"] = [ORDER_UPDATE]  # the masked secrets keep the stored ones
    replaced = configured.put("/api/v1/messaging-services/sinch-eu", json=got)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["whatsapp_templates"] == [ORDER_UPDATE]

    del got["whatsapp_templates"]
    assert configured.put("/api/v1/messaging-services/sinch-eu", json=got).status_code == 200
    assert "whatsapp_templates" not in configured.get("/api/v1/messaging-services/sinch-eu").json()
    with transaction(runtime.sessions) as session:
        assert session.scalar(select(MessagingServiceRow.whatsapp_templates)) is None


def test_a_bad_template_is_a_422_naming_its_path_and_changes_nothing(
    configured: TestClient,
) -> None:
    before = configured.get("/api/v1/messaging-services/sinch-eu").json()
    body = {
        **before,
        "whatsapp_templates": [
            {**ORDER_UPDATE, "language": "sv-SE"},
            {**HELLO, "app_id": APP_EU.lower()},
        ],
    }
    answer = configured.put("/api/v1/messaging-services/sinch-eu", json=body)
    assert answer.status_code == 422
    assert answer.json()["errors"] == [
        {
            "path": "whatsapp_templates[0].language",
            "message": "WhatsApp writes language codes with an underscore and an upper-case "
            "country: use sv_SE",
            "severity": "error",
        },
        {
            "path": "whatsapp_templates[1].app_id",
            "message": f"app id must be upper case: use {APP_EU}",
            "severity": "error",
        },
    ]
    assert configured.get("/api/v1/messaging-services/sinch-eu").json() == before


def test_export_then_apply_says_no_changes(runtime: Runtime, configured: TestClient) -> None:
    exported = configuration.export_config(runtime, secrets="reveal")
    assert exported["messaging_services"][0]["whatsapp_templates"][0] == ORDER_UPDATE
    changes, _ = configuration.apply_config(runtime, exported)
    assert changes == []
    exported["messaging_services"][0]["whatsapp_templates"][0]["parameters"] = ["body[1]text"]
    exported["messaging_services"][0]["whatsapp_templates"][0]["text"] = "Hej {body[1]text}!"
    changes, _ = configuration.apply_config(runtime, exported)
    assert [str(c) for c in changes] == [
        "changed messaging_services: sinch-eu (whatsapp_templates)"
    ]


# --------------------------------------------------------------------------- the window


def test_the_window_is_open_for_24_hours_after_the_customer_wrote(
    runtime: Runtime, configured: TestClient
) -> None:
    wrote = datetime(2024, 6, 10, 6, 0, tzinfo=UTC)
    whatsapp = conversation(runtime, last_inbound_at=wrote)
    closes = "2024-06-11T06:00:00Z"

    def window(now: datetime) -> Any:
        item = conversation_service.get_conversation(runtime, ADMIN, whatsapp, now=now)
        return item.whatsapp_window

    just_before = window(wrote + timedelta(hours=24) - timedelta(seconds=1))
    assert just_before is not None
    assert (just_before.open, just_before.closes_at) == (True, wrote + timedelta(hours=24))
    at_24_hours = window(wrote + timedelta(hours=24))
    assert at_24_hours is not None
    assert (at_24_hours.open, at_24_hours.closes_at) == (False, wrote + timedelta(hours=24))

    # Over the API (now is 2024 + years): closed, and closes_at says since when.
    got = configured.get(f"/api/v1/conversations/{whatsapp}").json()
    assert got["whatsapp_window"] == {"open": False, "closes_at": closes}
    listed = configured.get("/api/v1/conversations").json()["items"]
    assert [i["whatsapp_window"] for i in listed] == [{"open": False, "closes_at": closes}]

    fresh = conversation(runtime, last_inbound_at=datetime.now(UTC) - timedelta(hours=23))
    assert configured.get(f"/api/v1/conversations/{fresh}").json()["whatsapp_window"]["open"]
    never = conversation(runtime)  # no inbound message at all: closed, no closing time
    assert configured.get(f"/api/v1/conversations/{never}").json()["whatsapp_window"] == {
        "open": False,
        "closes_at": None,
    }
    sms = conversation(runtime, channel="SMS", identity="46700000001")
    assert configured.get(f"/api/v1/conversations/{sms}").json()["whatsapp_window"] is None


def test_the_templates_of_a_conversation_are_those_of_its_app(
    runtime: Runtime, configured: TestClient
) -> None:
    now = datetime.now(UTC)
    eu = conversation(runtime, last_inbound_at=now - timedelta(hours=1))
    eu2 = conversation(runtime, app_id=APP_EU2, last_inbound_at=now - timedelta(hours=30))
    sms = conversation(runtime, channel="SMS", identity="46700000002")

    answer = configured.get(f"/api/v1/conversations/{eu}/templates")
    assert answer.status_code == 200
    body = answer.json()
    assert body["whatsapp_window"]["open"] is True
    assert body["templates"] == [
        {
            "name": "order_update",
            "language": "sv_SE",
            "parameters": ["body[1]text", "body[2]text"],
            "text": "Hej {body[1]text}! Order {body[2]text} har skickats.",
        },
        {"name": "hello", "language": "en", "parameters": [], "text": None},
    ]
    other = configured.get(f"/api/v1/conversations/{eu2}/templates").json()
    assert other["whatsapp_window"]["open"] is False
    assert [t["name"] for t in other["templates"]] == ["other_app_only"]
    assert configured.get(f"/api/v1/conversations/{sms}/templates").json() == {
        "whatsapp_window": None,
        "templates": [],
    }


def test_an_agent_sees_templates_only_in_its_queues(
    runtime: Runtime, configured: TestClient
) -> None:
    with transaction(runtime.sessions) as session:
        make_agent(session, "bert", queues=("billing",))
    mine = conversation(runtime, queue="billing")
    theirs = conversation(runtime)
    with client_for(runtime, make_token(runtime, "agent", "bert")) as agent:
        assert agent.get(f"/api/v1/conversations/{mine}/templates").status_code == 200
        assert agent.get(f"/api/v1/conversations/{theirs}/templates").status_code == 404
    with client_for(runtime) as anonymous:
        assert anonymous.get(f"/api/v1/conversations/{mine}/templates").status_code == 401


# --------------------------------------------------------------------------- template replies


def test_a_configured_template_is_accepted_with_its_preview_as_the_text(
    runtime: Runtime, configured: TestClient
) -> None:
    closed = conversation(runtime, last_inbound_at=datetime.now(UTC) - timedelta(days=3))
    answer = reply(configured, closed, template(**ORDER_PARAMETERS))
    assert answer.status_code == 202, answer.text
    sent = answer.json()
    assert sent["kind"] == "template"
    assert sent["text"] == "Hej Anna! Order A-1001 har skickats."
    assert sent["content"] == {
        "template": {"name": "order_update", "language": "sv_SE", "parameters": ORDER_PARAMETERS}
    }
    hello = reply(configured, closed, template("hello", "en"))
    assert hello.status_code == 202, hello.text
    assert hello.json()["text"] == "[template hello (en)]"  # no preview configured


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        (
            template("shipping_notice", **ORDER_PARAMETERS),
            [
                {
                    "path": "template.name",
                    "message": f"no template 'shipping_notice' is configured for app {APP_EU}; "
                    "its templates: order_update (sv_SE), hello (en)",
                }
            ],
        ),
        (
            template("other_app_only", "en"),
            [
                {
                    "path": "template.name",
                    "message": f"no template 'other_app_only' is configured for app {APP_EU}; "
                    "its templates: order_update (sv_SE), hello (en)",
                }
            ],
        ),
        (
            template("order_update", "en_US", **ORDER_PARAMETERS),
            [
                {
                    "path": "template.language",
                    "message": "template order_update has no language 'en_US' for this "
                    "conversation's app; its languages: sv_SE",
                }
            ],
        ),
        (
            template(**{"body[1]text": "Anna", "body[3]text": "x", "header[1]text": "y"}),
            [
                {
                    "path": "template.parameters",
                    "message": "missing body[2]text: template order_update (sv_SE) takes "
                    "exactly these parameters: body[1]text, body[2]text",
                },
                {
                    "path": "template.parameters",
                    "message": "unknown body[3]text, header[1]text: template order_update "
                    "(sv_SE) takes exactly these parameters: body[1]text, body[2]text",
                },
            ],
        ),
        (
            template("hello", "en", **{"body[1]text": "Anna"}),
            [
                {
                    "path": "template.parameters",
                    "message": "unknown body[1]text: template hello (en) takes exactly these "
                    "parameters: none",
                }
            ],
        ),
    ],
)
def test_a_template_reply_must_match_the_configuration(
    runtime: Runtime, configured: TestClient, body: dict[str, Any], errors: list[dict[str, str]]
) -> None:
    target = conversation(runtime, last_inbound_at=datetime.now(UTC))
    answer = reply(configured, target, body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid_request"
    assert [{k: e[k] for k in ("path", "message")} for e in answer.json()["errors"]] == errors
    with transaction(runtime.sessions) as session:
        assert session.scalars(select(MessageRow)).all() == []
        assert session.scalars(select(OutboxRow)).all() == []


def test_an_unknown_template_answer_lists_the_templates(
    runtime: Runtime, configured: TestClient
) -> None:
    target = conversation(runtime, last_inbound_at=datetime.now(UTC))
    answer = reply(configured, target, template("nope"))
    assert [t["name"] for t in answer.json()["templates"]] == ["order_update", "hello"]


def test_templates_are_refused_off_whatsapp(runtime: Runtime, configured: TestClient) -> None:
    sms = conversation(runtime, channel="SMS", identity="46700000003")
    answer = reply(configured, sms, template(**ORDER_PARAMETERS))
    assert answer.status_code == 422
    assert answer.json()["errors"] == [
        {
            "path": "template",
            "message": "templates are for WhatsApp only: this conversation is on SMS, where any "
            "text can be sent",
            "severity": "error",
        }
    ]
    assert reply(configured, sms, {"text": "Hello"}).status_code == 202


def test_free_text_outside_the_window_is_409_offering_the_templates(
    runtime: Runtime, configured: TestClient
) -> None:
    wrote = datetime(2024, 6, 10, 6, 0, tzinfo=UTC)
    closed = conversation(runtime, last_inbound_at=wrote)
    answer = reply(configured, closed, {"text": "Are you there?"})
    assert answer.status_code == 409
    body = answer.json()
    assert body["error"] == {
        "code": "conflict",
        "message": "the WhatsApp 24-hour window is closed (the customer has not written in the "
        "last 24 hours): send an approved template instead: order_update (sv_SE), hello (en)",
    }
    assert body["whatsapp_window"] == {"open": False, "closes_at": "2024-06-11T06:00:00Z"}
    assert (
        body["templates"]
        == configured.get(f"/api/v1/conversations/{closed}/templates").json()["templates"]
    )
    other = conversation(runtime, app_id=APP_EU2, identity="46700000004")
    assert reply(configured, other, {"text": "x"}).json()["templates"] == [
        {"name": "other_app_only", "language": "en", "parameters": [], "text": None}
    ]
    open_window = conversation(runtime, last_inbound_at=datetime.now(UTC) - timedelta(hours=23))
    assert reply(configured, open_window, {"text": "Hello"}).status_code == 202


def test_outside_the_window_without_templates_the_answer_says_none_are_configured(
    runtime: Runtime, admin: TestClient
) -> None:
    assert admin.post("/api/v1/messaging-services", json=service_body()).status_code == 201
    closed = conversation(runtime)
    answer = reply(admin, closed, {"text": "x"})
    assert answer.status_code == 409
    assert answer.json()["error"]["message"].endswith(
        f"send an approved template instead, but app {APP_EU} has none configured (an "
        "administrator adds them to messaging service sinch-eu, whatsapp_templates)"
    )
    assert answer.json()["templates"] == []
    refused = reply(admin, closed, template(**ORDER_PARAMETERS))
    assert refused.json()["errors"][0]["message"] == (
        f"no template 'order_update' is configured for app {APP_EU}; its templates: "
        "none are configured"
    )


# --------------------------------------------------------------------------- reasons


def test_a_failed_message_carries_its_reason_in_plain_words(
    runtime: Runtime, admin: TestClient
) -> None:
    with transaction(runtime.sessions) as session:
        row = make_conversation(session)
        make_message(
            session,
            row,
            direction="outbound",
            status="FAILED",
            reason_code="OUTSIDE_ALLOWED_SENDING_WINDOW",
            reason_text="Channel says the customer has not written in the last 24 hours",
        )
        make_message(session, row, direction="outbound", status="FAILED", reason_code="NEW_ONE")
        make_message(session, row, direction="outbound", status="DELIVERED")
        conversation_id = row.id
    items = admin.get(f"/api/v1/conversations/{conversation_id}/messages").json()["items"]
    assert [(m["reason_code"], m["failure_text"]) for m in items] == [
        (
            "OUTSIDE_ALLOWED_SENDING_WINDOW",
            "The customer's 24-hour WhatsApp window has closed; send an approved template.",
        ),
        ("NEW_ONE", "The message was not delivered (reason NEW_ONE)."),
        (None, None),
    ]
    assert items[0]["reason_text"] == (
        "Channel says the customer has not written in the last 24 hours"
    )
