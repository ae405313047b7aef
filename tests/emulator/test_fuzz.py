"""Bad input to any emulator endpoint gets Sinch's error shape: never a 500, never a hang."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import APP, PROJECT, SMS_NUMBER, Harness, send_body

ENDPOINTS = [
    ("POST", f"/eu/v1/projects/{PROJECT}/messages:send"),
    ("POST", f"/eu/v1/projects/{PROJECT}/webhooks"),
    ("PATCH", f"/eu/v1/projects/{PROJECT}/webhooks/01NOPE"),
    ("POST", "/_emulator/inbound"),
    ("POST", "/_emulator/outcomes"),
    ("POST", "/_emulator/faults"),
    ("POST", "/oauth2/token"),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


def _mutations() -> st.SearchStrategy[Any]:
    """Valid-looking bodies with one part replaced by junk, plus arbitrary JSON."""
    base = send_body(SMS_NUMBER, "SMS")
    inbound = {"app_id": APP, "channel": "SMS", "identity": SMS_NUMBER, "text": "hi"}
    keys = st.sampled_from(
        ["app_id", "recipient", "message", "channel", "identity", "text", "ttl", "triggers"]
    )
    return st.one_of(
        json_values,
        st.builds(lambda k, v: {**base, k: v}, keys, json_values),
        st.builds(lambda k, v: {**inbound, k: v}, keys, json_values),
    )


def _check(answer: Any) -> None:
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        body = answer.json()
        if isinstance(body.get("error"), str):  # OAuth2's own error shape on /oauth2/token
            assert body["error_description"]
        else:
            assert set(body["error"]) == {"code", "message", "status", "details"}
            assert body["error"]["code"] == answer.status_code


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(endpoint=st.sampled_from(ENDPOINTS), body=_mutations())
def test_json_bodies_never_cause_a_500(emu: Harness, endpoint: tuple[str, str], body: Any) -> None:
    emu.http.post("/_emulator/faults", json={})
    method, path = endpoint
    answer = emu.http.request(
        method, path, content=json.dumps(body).encode(), headers=emu.auth(), timeout=5
    )
    _check(answer)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    raw=st.binary(max_size=64),
    content_type=st.sampled_from(
        ["application/json", "text/plain", "application/x-www-form-urlencoded"]
    ),
)
def test_raw_bytes_never_cause_a_500(
    emu: Harness, endpoint: tuple[str, str], raw: bytes, content_type: str
) -> None:
    method, path = endpoint
    answer = emu.http.request(
        method, path, content=raw, headers={**emu.auth(), "content-type": content_type}, timeout=5
    )
    _check(answer)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="?#%"),
        max_size=40,
    ),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
)
def test_any_path_gets_a_sinch_answer(emu: Harness, path: str, method: str) -> None:
    answer = emu.http.request(method, "/" + path, timeout=5)
    _check(answer)


def test_query_filters_with_odd_values(emu: Harness) -> None:
    for params in ({"identity": "+"}, {"app_id": ""}, {"message_id": "x" * 500}, {"state": "?"}):
        _check(emu.http.get("/_emulator/sent", params=params))
        _check(emu.http.get("/_emulator/callbacks", params=params))
