"""Sinch's own API as the emulator serves it: OAuth2, messages:send, apps and webhooks."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import (
    APP,
    CONV_APP,
    KEY_ID,
    KEY_SECRET,
    PROJECT,
    SEND_PATH,
    US_APP,
    US_KEY_ID,
    US_KEY_SECRET,
    US_PROJECT,
    WA_NUMBER,
    Harness,
    config_dict,
    send_body,
)


def assert_sinch_error(answer: Any, code: int, status: str, *words: str) -> None:
    assert answer.status_code == code, answer.text
    body = answer.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "status", "details"}
    assert body["error"]["code"] == code
    assert body["error"]["status"] == status
    assert isinstance(body["error"]["details"], list)
    for word in words:
        assert word in body["error"]["message"]


# ------------------------------------------------------------------ OAuth2


def test_token_with_basic_credentials(emu: Harness) -> None:
    answer = emu.http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(KEY_ID, KEY_SECRET)
    )
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["expires_in"] == 3600
    assert body["token_type"].lower() == "bearer"
    _header, payload, _sig = body["access_token"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    assert claims["exp"] - claims["iat"] == 3600


def test_token_ttl_is_configurable(make_emulator: Callable[..., Harness]) -> None:
    harness = make_emulator(token_ttl_seconds=120)
    assert (
        harness.http.post(
            "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(KEY_ID, KEY_SECRET)
        ).json()["expires_in"]
        == 120
    )


@pytest.mark.parametrize(
    ("auth", "data", "status", "error"),
    [
        ((KEY_ID, "wrong"), {"grant_type": "client_credentials"}, 401, "invalid_client"),
        (("nobody", "x"), {"grant_type": "client_credentials"}, 401, "invalid_client"),
        (None, {"grant_type": "client_credentials"}, 401, "invalid_client"),
        ((KEY_ID, KEY_SECRET), {"grant_type": "password"}, 400, "unsupported_grant_type"),
        ((KEY_ID, KEY_SECRET), {}, 400, "invalid_request"),
    ],
)
def test_token_refusals_use_oauth2_errors(
    emu: Harness, auth: Any, data: dict[str, str], status: int, error: str
) -> None:
    answer = emu.http.post("/oauth2/token", data=data, auth=auth)
    assert answer.status_code == status
    assert answer.json()["error"] == error
    assert answer.json()["error_description"]
    assert KEY_SECRET not in answer.text


def test_token_accepts_form_client_credentials(emu: Harness) -> None:
    answer = emu.http.post(
        "/oauth2/token",
        data={"grant_type": "client_credentials", "client_id": KEY_ID, "client_secret": KEY_SECRET},
    )
    assert answer.status_code == 200


# ------------------------------------------------------------------ sends


def test_send_answers_message_id_and_accepted_time(emu: Harness) -> None:
    answer = emu.send_raw(send_body())
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"message_id", "accepted_time"}
    assert len(body["message_id"]) == 26
    assert body["accepted_time"].endswith("Z")


def test_send_with_basic_auth(emu: Harness) -> None:
    answer = emu.http.post(SEND_PATH, json=send_body(), auth=(KEY_ID, KEY_SECRET))
    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({}, ["missing"]),
        ({"authorization": "Bearer not.a.token"}, ["not valid"]),
        ({"authorization": "Basic " + base64.b64encode(b"KEY-ID:nope").decode()}, ["wrong"]),
        ({"authorization": "Digest abc"}, ["missing"]),
    ],
)
def test_send_refuses_bad_credentials(
    emu: Harness, headers: dict[str, str], words: list[str]
) -> None:
    answer = emu.http.post(SEND_PATH, json=send_body(), headers=headers)
    assert_sinch_error(answer, 401, "UNAUTHENTICATED", *words)


def test_expired_token_answers_401_with_expired_in_www_authenticate(emu: Harness) -> None:
    token = emu.token()
    emu.clock.advance(3601)
    answer = emu.http.post(
        SEND_PATH, json=send_body(), headers={"authorization": f"Bearer {token}"}
    )
    assert_sinch_error(answer, 401, "UNAUTHENTICATED", "expired")
    assert "expired" in answer.headers["www-authenticate"].lower()


def test_control_plane_can_expire_every_token(emu: Harness) -> None:
    token = emu.token()
    assert emu.http.post("/_emulator/tokens/expire").status_code == 200
    answer = emu.http.post(
        SEND_PATH, json=send_body(), headers={"authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 401
    assert "expired" in answer.headers["www-authenticate"]
    fresh = emu.http.post(
        "/oauth2/token", data={"grant_type": "client_credentials"}, auth=(KEY_ID, KEY_SECRET)
    ).json()["access_token"]
    answer = emu.http.post(
        SEND_PATH, json=send_body(), headers={"authorization": f"Bearer {fresh}"}
    )
    assert answer.status_code == 200


def test_unknown_project_app_and_foreign_region_are_404(emu: Harness) -> None:
    other = "11111111-2222-3333-4444-555555555555"
    answer = emu.http.post(
        f"/eu/v1/projects/{other}/messages:send", json=send_body(), headers=emu.auth()
    )
    assert_sinch_error(answer, 404, "NOT_FOUND", other)
    assert_sinch_error(
        emu.send_raw(send_body(app_id="01UNKNOWNAPP0000000000000")), 404, "NOT_FOUND"
    )
    # the same project's app, called under another region's prefix
    answer = emu.http.post(
        f"/us/v1/projects/{PROJECT}/messages:send", json=send_body(), headers=emu.auth()
    )
    assert_sinch_error(answer, 404, "NOT_FOUND", APP)


def test_another_projects_credentials_are_403(emu: Harness) -> None:
    answer = emu.http.post(
        f"/us/v1/projects/{US_PROJECT}/messages:send",
        json=send_body(app_id=US_APP, channel="SMS"),
        auth=(KEY_ID, KEY_SECRET),
    )
    assert_sinch_error(answer, 403, "PERMISSION_DENIED")
    answer = emu.http.post(
        f"/us/v1/projects/{US_PROJECT}/messages:send",
        json=send_body("15551234567", "SMS", app_id=US_APP),
        auth=(US_KEY_ID, US_KEY_SECRET),
    )
    assert answer.status_code == 200


def test_prefix_less_paths_need_a_single_region(
    make_emulator: Callable[..., Harness], emu: Harness, receiver: Any
) -> None:
    answer = emu.http.post(
        f"/v1/projects/{PROJECT}/messages:send", json=send_body(), headers=emu.auth()
    )
    assert_sinch_error(answer, 404, "NOT_FOUND", "region")
    data = config_dict(receiver.url)
    data["projects"].pop()
    single = make_emulator(data)
    answer = single.http.post(
        f"/v1/projects/{PROJECT}/messages:send", json=send_body(), headers=single.auth()
    )
    assert answer.status_code == 200
    answer = single.http.post(
        f"/xx/v1/projects/{PROJECT}/messages:send", json=send_body(), headers=single.auth()
    )
    assert_sinch_error(answer, 404, "NOT_FOUND", "region")


def _without(path: str) -> dict[str, Any]:
    body = send_body()
    node: Any = body
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    del node[last]
    return body


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_without("app_id"), "app_id"),
        (_without("recipient"), "recipient"),
        (_without("message"), "message"),
        ({**send_body(), "app_id": 42}, "app_id"),
        ({**send_body(), "recipient": {}}, "recipient"),
        (
            {**send_body(), "recipient": {"identified_by": {"channel_identities": []}}},
            "recipient.identified_by.channel_identities",
        ),
        (
            {
                **send_body(),
                "recipient": {
                    "identified_by": {"channel_identities": [{"channel": "FAX", "identity": "1"}]}
                },
            },
            "recipient.identified_by.channel_identities[0].channel",
        ),
        (
            {
                **send_body(),
                "recipient": {"identified_by": {"channel_identities": [{"channel": "SMS"}]}},
            },
            "recipient.identified_by.channel_identities[0].identity",
        ),
        ({**send_body(), "message": {}}, "message"),
        ({**send_body(), "message": {"text_message": {"text": 5}}}, "message.text_message.text"),
        (
            {
                **send_body(),
                "message": {"text_message": {"text": "a"}, "media_message": {"url": "x"}},
            },
            "message",
        ),
        ({**send_body(), "message": {"media_message": {}}}, "message.media_message.url"),
        ({**send_body(), "message": {"sticker": {}}}, "message.sticker"),
        (
            {
                **send_body(),
                "message": {"template_message": {"channel_template": {"WHATSAPP": {}}}},
            },
            "message.template_message.channel_template.WHATSAPP.template_id",
        ),
        ({**send_body(), "channel_priority_order": ["SMS", "PAGER"]}, "channel_priority_order[1]"),
        ({**send_body(), "channel_properties": {"SMS_SENDER": 1}}, "channel_properties.SMS_SENDER"),
        ({**send_body(), "message_metadata": "x" * 1025}, "message_metadata"),
        ({**send_body(), "correlation_id": "x" * 129}, "correlation_id"),
        ({**send_body(), "ttl": "soon"}, "ttl"),
        ({**send_body(), "ttl": "1s"}, "ttl"),
        ({**send_body(), "queue": "URGENT"}, "queue"),
        ({**send_body(), "colour": "blue"}, "colour"),
        ([1, 2], "body"),
    ],
)
def test_malformed_sends_are_400_naming_the_field(emu: Harness, body: Any, field: str) -> None:
    answer = emu.send_raw(body)
    assert_sinch_error(answer, 400, "INVALID_ARGUMENT", f"'{field}'")
    assert emu.sent() == []


def test_contact_id_on_a_dispatch_app_is_400(emu: Harness) -> None:
    body = {**send_body(), "recipient": {"contact_id": "01J09ZZ0N1M2K3J4H5G6F7E8D9"}}
    assert_sinch_error(emu.send_raw(body), 400, "INVALID_ARGUMENT", "DISPATCH")
    body["app_id"] = CONV_APP
    assert emu.send_raw(body).status_code == 200


def test_priority_channel_not_on_the_app_is_400(emu: Harness) -> None:
    answer = emu.send_raw({**send_body(), "channel_priority_order": ["WHATSAPP", "TELEGRAM"]})
    assert_sinch_error(answer, 400, "INVALID_ARGUMENT", "TELEGRAM")


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b"{not json", {}),
        (b"", {}),
        (b"\xff\xfe", {}),
    ],
)
def test_malformed_json_is_400(emu: Harness, content: bytes, headers: dict[str, str]) -> None:
    answer = emu.http.post(SEND_PATH, content=content, headers={**emu.auth(), **headers})
    assert_sinch_error(answer, 400, "INVALID_ARGUMENT", "JSON")


def test_oversized_body_is_413(emu: Harness) -> None:
    answer = emu.http.post(SEND_PATH, content=b"{" + b" " * (1 << 20) + b"}", headers=emu.auth())
    assert_sinch_error(answer, 413, "INVALID_ARGUMENT")


def test_unknown_paths_and_methods_get_sinch_errors(emu: Harness) -> None:
    assert_sinch_error(emu.http.get(f"/eu/v1/projects/{PROJECT}/contacts"), 404, "NOT_FOUND")
    assert_sinch_error(emu.http.get("/"), 404, "NOT_FOUND")
    assert_sinch_error(emu.http.get("/_emulator/nothing"), 404, "NOT_FOUND")
    answer = emu.http.get(SEND_PATH, headers=emu.auth())
    assert_sinch_error(answer, 405, "UNIMPLEMENTED")
    assert answer.headers["allow"] == "POST"
    assert_sinch_error(emu.http.put("/oauth2/token"), 405, "UNIMPLEMENTED")


def test_app_send_rate_is_enforced_with_429(
    make_emulator: Callable[..., Harness], receiver: Any
) -> None:
    data = config_dict(receiver.url)
    data["projects"][0]["apps"][0]["rate_limit"] = 3
    harness = make_emulator(data)
    codes = [harness.send_raw(send_body()).status_code for _ in range(6)]
    assert codes[:3] == [200, 200, 200]
    assert 429 in codes[3:]
    answer = harness.send_raw(send_body())
    assert_sinch_error(answer, 429, "RESOURCE_EXHAUSTED", APP)
    assert int(answer.headers["retry-after"]) >= 1
    # the other app of the project has its own bucket
    assert harness.send_raw(send_body(app_id=CONV_APP)).status_code == 200
    accepted = len(harness.sent())
    assert accepted == codes.count(200) + 1


def test_project_rate_covers_every_api_call(
    make_emulator: Callable[..., Harness], receiver: Any
) -> None:
    data = config_dict(receiver.url)
    data["projects"][0]["rate_limit"] = 4
    harness = make_emulator(data)
    auth = harness.auth()
    codes = [
        harness.http.get(f"/eu/v1/projects/{PROJECT}/apps", headers=auth).status_code
        for _ in range(4)
    ]
    assert codes == [200] * 4
    answer = harness.send_raw(send_body())
    assert_sinch_error(answer, 429, "RESOURCE_EXHAUSTED", PROJECT)


# ------------------------------------------------------------ apps, webhooks


def test_apps_list_and_get(emu: Harness) -> None:
    answer = emu.http.get(f"/eu/v1/projects/{PROJECT}/apps", headers=emu.auth())
    assert answer.status_code == 200
    apps = {a["id"]: a for a in answer.json()["apps"]}
    assert set(apps) == {APP, CONV_APP}
    app = emu.http.get(f"/eu/v1/projects/{PROJECT}/apps/{APP}", headers=emu.auth()).json()
    assert app["processing_mode"] == "DISPATCH"
    assert [c["channel"] for c in app["channel_credentials"]] == [
        "WHATSAPP",
        "SMS",
        "MESSENGER",
        "SINCH_CHAT",
    ]
    assert app["rate_limits"]["outbound"] == 200
    assert apps[CONV_APP]["processing_mode"] == "CONVERSATION"
    assert emu.http.get(f"/us/v1/projects/{PROJECT}/apps", headers=emu.auth()).json() == {
        "apps": []
    }
    assert_sinch_error(
        emu.http.get(f"/us/v1/projects/{PROJECT}/apps/{APP}", headers=emu.auth()), 404, "NOT_FOUND"
    )


def test_webhooks_resource_round_trip(emu: Harness) -> None:
    base = f"/eu/v1/projects/{PROJECT}"
    listed = emu.http.get(f"{base}/apps/{APP}/webhooks", headers=emu.auth()).json()["webhooks"]
    assert len(listed) == 1
    assert listed[0]["secret"] == "WEBHOOK-SECRET"
    assert listed[0]["triggers"] == ["MESSAGE_INBOUND", "MESSAGE_DELIVERY"]
    created = emu.http.post(
        f"{base}/webhooks",
        headers=emu.auth(),
        json={
            "app_id": APP,
            "target": "http://127.0.0.1:1/new",
            "triggers": ["MESSAGE_DELIVERY"],
            "secret": "s2",
        },
    )
    assert created.status_code == 200, created.text
    hook = created.json()
    assert hook["target_type"] == "HTTP"
    got = emu.http.get(f"{base}/webhooks/{hook['id']}", headers=emu.auth()).json()
    assert got == hook
    patched = emu.http.patch(
        f"{base}/webhooks/{hook['id']}",
        params={"update_mask": "target"},
        headers=emu.auth(),
        json={"target": "http://127.0.0.1:2/moved", "triggers": ["EVENT_INBOUND"]},
    ).json()
    assert patched["target"] == "http://127.0.0.1:2/moved"
    assert patched["triggers"] == ["MESSAGE_DELIVERY"]  # not in the mask
    assert emu.http.delete(f"{base}/webhooks/{hook['id']}", headers=emu.auth()).json() == {}
    assert_sinch_error(
        emu.http.get(f"{base}/webhooks/{hook['id']}", headers=emu.auth()), 404, "NOT_FOUND"
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"target": "http://x/y", "triggers": ["MESSAGE_INBOUND"]}, "app_id"),
        ({"app_id": APP, "triggers": ["MESSAGE_INBOUND"]}, "target"),
        ({"app_id": APP, "target": "mailto:x", "triggers": ["MESSAGE_INBOUND"]}, "target"),
        ({"app_id": APP, "target": "http://x/y", "triggers": []}, "triggers"),
        ({"app_id": APP, "target": "http://x/y", "triggers": ["NOPE"]}, "triggers[0]"),
        ({"app_id": APP, "target": "http://x/y", "triggers": ["MESSAGE_INBOUND"], "x": 1}, "x"),
    ],
)
def test_bad_webhooks_are_400(emu: Harness, body: dict[str, Any], field: str) -> None:
    answer = emu.http.post(f"/eu/v1/projects/{PROJECT}/webhooks", headers=emu.auth(), json=body)
    assert_sinch_error(answer, 400, "INVALID_ARGUMENT", f"'{field}'")


def test_at_most_five_webhooks_per_app(emu: Harness) -> None:
    body = {"app_id": APP, "target": "http://127.0.0.1:1/x", "triggers": ["MESSAGE_INBOUND"]}
    codes = [
        emu.http.post(
            f"/eu/v1/projects/{PROJECT}/webhooks", headers=emu.auth(), json=body
        ).status_code
        for _ in range(5)
    ]
    assert codes == [200, 200, 200, 200, 400]


def test_webhook_target_changes_take_effect_at_once(emu: Harness) -> None:
    receiver = emu.receiver
    base = f"/eu/v1/projects/{PROJECT}"
    (hook,) = emu.http.get(f"{base}/apps/{APP}/webhooks", headers=emu.auth()).json()["webhooks"]
    emu.http.patch(
        f"{base}/webhooks/{hook['id']}",
        headers=emu.auth(),
        json={"target": f"{receiver.url}/moved"},
    )
    emu.inbound(text="after the move")
    items = receiver.wait_for(lambda items: len(items) >= 1)
    assert items[0].path == "/moved"
    assert WA_NUMBER in items[0].body.decode()
