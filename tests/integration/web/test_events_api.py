"""The event-log API on SQLite and PostgreSQL: filters, paging, one event, replay, and
retention cleanup (through the service, which the CLI and the workers share)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from convodesk.runtime import Runtime
from convodesk.services import configuration, event_log
from convodesk.storage import event_log as event_log_sql
from convodesk.storage.db import transaction
from convodesk.storage.event_log import EventFilters
from convodesk.storage.tables import EventRow
from tests.support.apps import client_for, make_token
from tests.support.factories import APP_EU, make_agent, make_event

APP_EU2 = "01HZX4K7QW8E2R5T9Y3V6M1N0Q"

T0 = datetime(2024, 6, 10, 6, 0, tzinfo=UTC)


def add_events(runtime: Runtime, *specs: dict[str, Any]) -> list[int]:
    with transaction(runtime.sessions) as session:
        return [make_event(session, **spec).id for spec in specs]


def ids_of(answer: Any) -> list[int]:
    assert answer.status_code == 200, answer.text
    return [item["id"] for item in answer.json()["items"]]


def load(runtime: Runtime, event_id: int) -> EventRow:
    with transaction(runtime.sessions) as session:
        row = session.get(EventRow, event_id)
        assert row is not None
        return row


def test_event_endpoints_need_an_admin_token(runtime: Runtime) -> None:
    with client_for(runtime) as anonymous:
        assert anonymous.get("/api/v1/events").status_code == 401
        assert anonymous.get("/api/v1/events/1").status_code == 401
        assert anonymous.post("/api/v1/events/replay", json={"ids": [1]}).status_code == 401
    with transaction(runtime.sessions) as session:
        make_agent(session, "anna")
    with client_for(runtime, make_token(runtime, "agent", "anna")) as agent:
        assert agent.get("/api/v1/events").status_code == 403
        assert agent.get("/api/v1/events/1").status_code == 403
        answer = agent.post("/api/v1/events/replay", json={"ids": [1]})
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "forbidden"


def test_items_carry_every_field_and_the_body_as_text(runtime: Runtime, admin: TestClient) -> None:
    body = b'{"app_id":"' + APP_EU.encode() + b'","text":"caf\xc3\xa9 \xff"}'
    [event_id] = add_events(
        runtime,
        {
            "received_at": T0,
            "body": body,
            "reason": "warning: trigger not configured",
            "state": "done",
            "processed_at": T0 + timedelta(seconds=1),
            "conversation_id": 7,
        },
    )
    [item] = admin.get("/api/v1/events").json()["items"]
    assert item == {
        "id": event_id,
        "received_at": "2024-06-10T06:00:00Z",
        "service": "sinch-eu",
        "trigger": "MESSAGE_INBOUND",
        "app_id": APP_EU,
        "channel": "WHATSAPP",
        "identity": "46701234567",
        "outcome": "accepted",
        "reason": "warning: trigger not configured",
        "state": "done",
        "state_reason": None,
        "processed_at": "2024-06-10T06:00:01Z",
        "conversation_id": 7,
        "body": '{"app_id":"' + APP_EU + '","text":"café \ufffd"}',
    }
    assert admin.get(f"/api/v1/events/{event_id}").json() == item


def test_one_event_missing_is_404(admin: TestClient) -> None:
    answer = admin.get("/api/v1/events/999999")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"
    assert admin.get("/api/v1/events/not-a-number").status_code == 422
    assert admin.get(f"/api/v1/events/{2**63 - 1}").status_code == 404
    assert admin.get(f"/api/v1/events/{2**63}").status_code == 422
    assert admin.get("/api/v1/events", params={"before": str(2**63)}).status_code == 422


def test_each_filter_narrows_the_list(runtime: Runtime, admin: TestClient) -> None:
    base, other_service, delivery, rejected, done, other_app, other_identity = add_events(
        runtime,
        {},
        {"service": "sinch-us"},
        {"trigger": "MESSAGE_DELIVERY"},
        {"outcome": "rejected", "reason": "401 invalid_signature: bad"},
        {"state": "done"},
        {"app_id": APP_EU2},
        {"identity": "46709999999"},
    )
    everything = [other_identity, other_app, done, rejected, delivery, other_service, base]
    assert ids_of(admin.get("/api/v1/events")) == everything  # newest first
    cases: list[tuple[dict[str, str], list[int]]] = [
        ({"service": "sinch-us"}, [other_service]),
        ({"trigger": "MESSAGE_DELIVERY"}, [delivery]),
        ({"outcome": "rejected"}, [rejected]),
        ({"state": "done"}, [done]),
        ({"state": "none"}, [rejected]),
        ({"app_id": APP_EU2}, [other_app]),
        ({"identity": "46709999999"}, [other_identity]),
        (
            {"service": "sinch-eu", "state": "pending", "trigger": "MESSAGE_INBOUND"},
            [
                other_identity,
                other_app,
                base,
            ],
        ),
        ({"service": "nope"}, []),
    ]
    for params, expected in cases:
        assert ids_of(admin.get("/api/v1/events", params=params)) == expected, params


def test_time_range_is_since_inclusive_until_exclusive(runtime: Runtime, admin: TestClient) -> None:
    early, middle, late = add_events(
        runtime,
        {"received_at": T0},
        {"received_at": T0 + timedelta(hours=1)},
        {"received_at": T0 + timedelta(hours=2)},
    )
    cases: list[tuple[dict[str, str], list[int]]] = [
        ({"since": "2024-06-10T07:00:00Z"}, [late, middle]),
        ({"until": "2024-06-10T07:00:00Z"}, [early]),
        ({"since": "2024-06-10T06:00:00Z", "until": "2024-06-10T08:00:00Z"}, [middle, early]),
        # the same instant in another zone, and without an offset (taken as UTC)
        ({"since": "2024-06-10T09:00:00+02:00"}, [late, middle]),
        ({"until": "2024-06-10T08:00:00+02:00"}, []),
        ({"until": "2024-06-10T08:00:01+02:00"}, [early]),
        ({"since": "2024-06-10T07:00:00"}, [late, middle]),
        ({"until": "2024-06-10"}, []),
        ({"since": "2024-06-10"}, [late, middle, early]),
    ]
    for params, expected in cases:
        assert ids_of(admin.get("/api/v1/events", params=params)) == expected, params


def test_bad_parameters_are_422_naming_the_parameter(admin: TestClient) -> None:
    for params, name in [
        ({"since": "yesterday"}, "since"),
        ({"until": "2024-13-45"}, "until"),
        ({"outcome": "maybe"}, "outcome"),
        ({"state": "sleeping"}, "state"),
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"before": "x"}, "before"),
    ]:
        answer = admin.get("/api/v1/events", params=params)
        assert answer.status_code == 422, params
        body = answer.json()
        assert body["error"]["code"] == "invalid_request"
        assert any(e["path"].split(".")[-1] == name for e in body["errors"]), body


def test_keyset_paging_walks_every_event_once(runtime: Runtime, admin: TestClient) -> None:
    created = add_events(runtime, *({} for _ in range(5)))
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 2}
    pages = 0
    while True:
        page = admin.get("/api/v1/events", params=params).json()
        pages += 1
        seen += [item["id"] for item in page["items"]]
        if page["next"] is None:
            break
        assert page["next"] == seen[-1]
        params["before"] = page["next"]
    assert seen == sorted(created, reverse=True)
    assert pages == 3
    # an exact fit says "no more" at once
    assert admin.get("/api/v1/events", params={"limit": 5}).json()["next"] is None


def test_replay_by_filter_puts_accepted_events_back_to_pending(
    runtime: Runtime, admin: TestClient
) -> None:
    failed, done, rejected = add_events(
        runtime,
        {"state": "failed", "state_reason": "boom", "processed_at": T0},
        {"state": "done", "processed_at": T0, "conversation_id": 3},
        {"outcome": "rejected"},
    )
    answer = admin.post("/api/v1/events/replay", json={"state": "failed"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"replayed": 1}
    row = load(runtime, failed)
    assert (row.state, row.state_reason, row.processed_at) == ("pending", None, None)
    assert load(runtime, done).state == "done"

    # a time filter alone is a selection too; rejected events are never replayed
    answer = admin.post("/api/v1/events/replay", json={"since": "2000-01-01T00:00:00Z"})
    assert answer.json() == {"replayed": 1}  # done; failed is pending already
    replayed = load(runtime, done)
    assert (replayed.state, replayed.processed_at) == ("pending", None)
    assert replayed.conversation_id == 3
    assert load(runtime, rejected).state == "none"


def test_replay_by_ids_touches_only_accepted_events(runtime: Runtime, admin: TestClient) -> None:
    done, pending, ignored = add_events(
        runtime,
        {"state": "done"},
        {},
        {"outcome": "ignored", "trigger": "MESSAGE_SUBMIT"},
    )
    answer = admin.post("/api/v1/events/replay", json={"ids": [done, pending, ignored, 999999]})
    assert answer.json() == {"replayed": 1}
    assert [load(runtime, i).state for i in (done, pending, ignored)] == [
        "pending",
        "pending",
        "none",
    ]


def test_replay_refuses_an_empty_or_unclear_selection(runtime: Runtime, admin: TestClient) -> None:
    [event_id] = add_events(runtime, {"state": "done"})
    bodies: list[Any] = [
        {},
        {"ids": []},
        {"ids": None},
        {"servce": "sinch-eu"},  # a misspelt filter must not widen the selection to everything
        {"outcome": "accepted"},  # replay is for accepted events only; not a filter here
        {"ids": [event_id], "service": "sinch-eu"},
        {"state": "sleeping"},
        {"since": "yesterday"},
        {"ids": [0]},
        {"ids": [2**63]},
        {"ids": list(range(1, 1002))},
        [],
    ]
    for body in bodies:
        answer = admin.post("/api/v1/events/replay", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["error"]["code"] == "invalid_request"
    assert load(runtime, event_id).state == "done"
    message = admin.post("/api/v1/events/replay", json={}).json()["errors"][0]["message"]
    assert "at least one filter" in message


def test_replay_refuses_an_empty_selection_below_the_api(runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        selections: list[EventFilters | list[int]] = [EventFilters(), []]
        for selection in selections:
            with pytest.raises(event_log_sql.EmptySelectionError):
                event_log_sql.mark_for_replay(session, selection)


def test_cleanup_deletes_only_old_events_in_batches(runtime: Runtime) -> None:
    now = datetime.now(UTC)
    old = add_events(
        runtime,
        *({"received_at": now - timedelta(days=40), "state": "done"} for _ in range(5)),
        {"received_at": now - timedelta(days=40), "outcome": "rejected"},
    )
    old_pending, recent = add_events(
        runtime,
        {"received_at": now - timedelta(days=40)},  # not processed yet: kept
        {"received_at": now - timedelta(days=5), "state": "done"},
    )
    result = event_log.cleanup_events(runtime, older_than_days=30, now=now, batch=2)
    assert result.deleted == len(old)
    assert result.cutoff == now - timedelta(days=30)
    with transaction(runtime.sessions) as session:
        left = event_log_sql.list_events(session, EventFilters(), limit=100)
    assert [row.id for row in left] == [recent, old_pending]


def test_cleanup_defaults_to_the_configured_retention(runtime: Runtime) -> None:
    now = datetime.now(UTC)
    twelve_days, three_days = add_events(
        runtime,
        {"received_at": now - timedelta(days=12), "state": "done"},
        {"received_at": now - timedelta(days=3), "state": "done"},
    )
    assert event_log.cleanup_events(runtime, now=now).older_than_days == 30
    configuration.replace_chat_settings(runtime, {"event_retention_days": 10})
    result = event_log.cleanup_events(runtime, now=now)
    assert (result.deleted, result.older_than_days) == (1, 10)
    with transaction(runtime.sessions) as session:
        assert session.get(EventRow, twelve_days) is None
        assert session.get(EventRow, three_days) is not None
