"""The admin JSON API on SQLite and PostgreSQL: CRUD, the configurator's rules as 422,
roles, masking of secrets."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from convodesk.domain.config_model import SystemConfig
from convodesk.runtime import Runtime
from convodesk.services import configuration
from convodesk.storage import db
from convodesk.storage.crypto import load_secret_box
from convodesk.storage.db import transaction
from convodesk.storage.tables import MessagingServiceRow, ServiceCredentialRow
from convodesk.web.app import create_app
from tests.support.apps import (
    APP_EU,
    APP_EU2,
    APP_US,
    client_for,
    make_token,
    queue_body,
    service_body,
)


def test_health_and_readiness(admin: TestClient) -> None:
    assert admin.get("/healthz").json() == {"status": "ok"}
    assert admin.get("/readyz").status_code == 200


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    runtime = Runtime(
        config=SystemConfig(data_dir=str(tmp_path)),
        engine=engine,
        sessions=db.make_session_factory(engine),
        box=load_secret_box(tmp_path, {"CONVODESK_SECRET_KEY": "k"}),
    )
    with TestClient(create_app(runtime)) as client:
        answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "not_ready"


def test_requests_without_a_valid_token_are_401(runtime: Runtime) -> None:
    with client_for(runtime) as anonymous:
        answer = anonymous.get("/api/v1/queues")
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
    with client_for(runtime, "cdk_not-a-real-token") as stranger:
        assert stranger.get("/api/v1/queues").status_code == 401


def test_agent_tokens_get_403_on_admin_endpoints(runtime: Runtime, admin: TestClient) -> None:
    admin.post("/api/v1/messaging-services", json=service_body())
    admin.post("/api/v1/queues", json=queue_body())
    answer = admin.post(
        "/api/v1/agents", json={"login": "anna", "display_name": "Anna", "queues": ["support"]}
    )
    assert answer.status_code == 201, answer.text
    with client_for(runtime, make_token(runtime, "agent", "anna")) as agent:
        me = agent.get("/api/v1/me").json()
        assert (me["role"], me["agent"], me["queues"]) == ("agent", "anna", ["support"])
        for method, path in [
            ("GET", "/api/v1/messaging-services"),
            ("POST", "/api/v1/queues"),
            ("GET", "/api/v1/agents/anna"),
            ("PUT", "/api/v1/chat-settings"),
            ("DELETE", "/api/v1/queues/support"),
        ]:
            answer = agent.request(method, path, json={})
            assert answer.status_code == 403, (method, path)
    assert admin.get("/api/v1/queues/support").status_code == 200


def test_service_crud_masks_secrets(admin: TestClient, runtime: Runtime) -> None:
    created = admin.post("/api/v1/messaging-services", json=service_body())
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "sinch-eu"
    assert "key-secret-value-1" not in created.text
    assert "webhook-secret-value-1" not in created.text
    assert [a["password"] for a in body["authentication"]] == ["********", "********"]

    listed = admin.get("/api/v1/messaging-services").json()
    assert [s["name"] for s in listed] == ["sinch-eu"]
    assert admin.get("/api/v1/messaging-services/sinch-eu").json() == body

    # Sending the masks back keeps the stored secrets; other fields change.
    update = dict(body, authentication=[*body["authentication"]])
    update["authentication"][-1] = dict(update["authentication"][-1], triggers=["MESSAGE_INBOUND"])
    replaced = admin.put("/api/v1/messaging-services/sinch-eu", json=update)
    assert replaced.status_code == 200, replaced.text
    with transaction(runtime.sessions) as session:
        stored = configuration.stored_config(runtime, session).messaging_services[0]
    assert stored.inbound.triggers == ("MESSAGE_INBOUND",)
    assert stored.inbound.secret.reveal() == "webhook-secret-value-1"
    assert stored.outbound[0].secret.reveal() == "key-secret-value-1"

    assert admin.delete("/api/v1/messaging-services/sinch-eu").status_code == 204
    assert admin.get("/api/v1/messaging-services/sinch-eu").status_code == 404


def test_secrets_are_encrypted_in_the_database(admin: TestClient, runtime: Runtime) -> None:
    admin.post("/api/v1/messaging-services", json=service_body())
    with runtime.engine.connect() as conn:
        rows = [
            *conn.execute(select(MessagingServiceRow.__table__)).all(),
            *conn.execute(select(ServiceCredentialRow.__table__)).all(),
        ]
    dump = repr(rows)
    assert "webhook-secret-value-1" not in dump
    assert "key-secret-value-1" not in dump
    if runtime.engine.dialect.name == "sqlite":
        assert runtime.engine.url.database is not None
        db_file = Path(runtime.engine.url.database)
        raw = b"".join(p.read_bytes() for p in db_file.parent.glob(db_file.name + "*"))
        assert b"webhook-secret-value-1" not in raw
        assert b"key-secret-value-1" not in raw


def test_invalid_service_is_422_with_paths_and_changes_nothing(admin: TestClient) -> None:
    bad = service_body(apps=(APP_EU.lower(),), triggers=("MESSAGE_DELIVERY", "NOPE"))
    bad["service_connection"] = "https://example.com/v1/projects/x/messages:send"
    answer = admin.post("/api/v1/messaging-services", json=bad)
    assert answer.status_code == 422
    errors = answer.json()["errors"]
    paths = {e["path"] for e in errors}
    assert "service_connection" in paths
    assert any(p.startswith("authentication[0]") for p in paths)
    assert any(APP_EU in e["message"] for e in errors)  # the corrected upper-case app id
    assert any("MESSAGE_INBOUND" in e["message"] for e in errors)
    assert admin.get("/api/v1/messaging-services").json() == []


def test_queue_address_rules(admin: TestClient) -> None:
    admin.post("/api/v1/messaging-services", json=service_body())
    lower = queue_body("support", f"{APP_EU.lower()}@whatsapp.sinchconversation.com")
    answer = admin.post("/api/v1/queues", json=lower)
    assert answer.status_code == 422
    [error] = [e for e in answer.json()["errors"] if e["path"] == "addresses[0]"]
    assert f"{APP_EU}@whatsapp.sinchconversation.com" in error["message"]

    unknown_app = queue_body("support", f"{APP_EU2}@whatsapp.sinchconversation.com")
    answer = admin.post("/api/v1/queues", json=unknown_app)
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["path"].startswith("addresses[0]")

    assert admin.post("/api/v1/queues", json=queue_body()).status_code == 201
    again = admin.post("/api/v1/queues", json=queue_body("other"))
    assert again.status_code == 422  # the address belongs to "support" already
    assert admin.post("/api/v1/queues", json=queue_body()).status_code == 409


def test_us_sms_queue_needs_a_sender_id(admin: TestClient) -> None:
    admin.post(
        "/api/v1/messaging-services", json=service_body("sinch-us", region="us", apps=(APP_US,))
    )
    sms = queue_body("sms-us", f"{APP_US}@sms.sinchconversation.com")
    answer = admin.post("/api/v1/queues", json=sms)
    assert answer.status_code == 422
    assert "sms_sender_id" in answer.text
    sms["sms_sender_id"] = "+12025550143"
    assert admin.post("/api/v1/queues", json=sms).status_code == 201


def test_deleting_a_service_that_queues_use_is_refused(admin: TestClient) -> None:
    admin.post("/api/v1/messaging-services", json=service_body())
    admin.post("/api/v1/queues", json=queue_body())
    answer = admin.delete("/api/v1/messaging-services/sinch-eu")
    assert answer.status_code == 422
    assert any(e["path"].startswith("queues[0].addresses[0]") for e in answer.json()["errors"])
    assert admin.get("/api/v1/messaging-services/sinch-eu").status_code == 200


def test_deleting_a_queue_removes_it_from_its_agents(admin: TestClient) -> None:
    admin.post("/api/v1/messaging-services", json=service_body())
    admin.post("/api/v1/queues", json=queue_body())
    admin.post(
        "/api/v1/agents", json={"login": "anna", "display_name": "Anna", "queues": ["support"]}
    )
    assert admin.delete("/api/v1/queues/support").status_code == 204
    assert admin.get("/api/v1/agents/anna").json()["queues"] == []


def test_agents_passwords_are_never_returned(admin: TestClient) -> None:
    answer = admin.post(
        "/api/v1/agents",
        json={
            "login": "boss",
            "display_name": "Boss",
            "role": "admin",
            "password": "correct horse",
        },
    )
    assert answer.status_code == 201, answer.text
    assert "correct horse" not in answer.text
    assert "password" not in answer.json() or answer.json()["password"] == "********"
    assert (
        admin.post("/api/v1/agents", json={"login": "Bad Login", "display_name": ""}).status_code
        == 422
    )


def test_rename_and_unknown_resources(admin: TestClient) -> None:
    admin.post("/api/v1/messaging-services", json=service_body())
    renamed = admin.put("/api/v1/messaging-services/sinch-eu", json=service_body("other"))
    assert renamed.status_code == 409
    assert admin.put("/api/v1/queues/nope", json=queue_body("nope")).status_code == 404
    assert admin.delete("/api/v1/agents/nobody").status_code == 404


def test_chat_settings(admin: TestClient) -> None:
    settings = admin.get("/api/v1/chat-settings").json()
    assert settings.get("offer_timeout_seconds", 120) == 120
    answer = admin.put("/api/v1/chat-settings", json={"offer_timeout_seconds": 45})
    assert answer.status_code == 200, answer.text
    assert answer.json()["offer_timeout_seconds"] == 45
    bad = admin.put("/api/v1/chat-settings", json={"offer_timeout_seconds": -1, "bogus": 1})
    assert bad.status_code == 422
    paths = {e["path"] for e in bad.json()["errors"]}
    assert {"offer_timeout_seconds", "bogus"} <= paths
    assert admin.get("/api/v1/chat-settings").json()["offer_timeout_seconds"] == 45


def test_non_object_bodies_are_422(admin: TestClient) -> None:
    answer = admin.post(
        "/api/v1/queues", content=b"[1, 2]", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422
    assert answer.json()["errors"]


def test_openapi_describes_the_admin_api(admin: TestClient) -> None:
    spec = admin.get("/openapi.json").json()
    for path in (
        "/api/v1/messaging-services",
        "/api/v1/queues/{name}",
        "/api/v1/agents/{login}",
        "/api/v1/chat-settings",
    ):
        assert path in spec["paths"], path
