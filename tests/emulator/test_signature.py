"""Sinch callback signatures: the SDK vectors and ours reproduce bit-exact; verify refuses well."""

from __future__ import annotations

import hashlib

import pytest

from convodesk.sinch import signature
from convodesk.sinch.ids import is_ulid
from convodesk.sinch.signature import (
    MissingHeaderError,
    SignatureMismatchError,
    StaleTimestampError,
    UnsupportedAlgorithmError,
    compute_signature,
    sign_headers,
    verify,
)

SDK_SECRET = "foo_secret1234"
SDK_NONCE = "01FJA8B4A7BM43YGWSG9GBV067"
SDK_TIMESTAMP = "1634579353"
# sinch-sdk-python tests/unit/domains/conversation/v1/sinch_events/test_conversation_sinch_event.py
PY_SDK_BODY = (
    b'{"app_id":"01EB37HMH1M6SV18BSNS3G135H","accepted_time":"2020-11-17T15:09:11.659Z",'
    b'"project_id":"c36f3d3d-1513-2edd-ae42-11995557ff61",'
    b'"message_delivery_report":{"message_id":"01EQBC1A3BEK731GY4YXEN0C2R",'
    b'"conversation_id":"01EPYATA64TMNZ1FV02JKF12JF","status":"QUEUED_ON_CHANNEL",'
    b'"contact_id":"01EXA07N79THJ20WSN6AS30TMW"}}'
)
# The Java, Node and .NET SDK tests (CONTACT_CREATE notification).
OTHER_SDKS_BODY = (
    b'{"app_id":"","accepted_time":"2021-10-18T17:49:13.813615Z",'
    b'"project_id":"e2df3a34-a71b-4448-9db5-a8d2baad28e4","contact_create_notification":'
    b'{"contact":{"id":"01FJA8B466Y0R2GNXD78MD9SM1","channel_identities":'
    b'[{"channel":"SMS","identity":"48123456789","app_id":""}],"display_name":'
    b'"New Test Contact","email":"new.contact@email.com","external_id":"",'
    b'"metadata":"","language":"EN_US"}},"message_metadata":""}'
)
# Reference section 1.5, our own vector.
OUR_SECRET = "cc-connector-test-secret-2024"
OUR_NONCE = "01J9Z3W6Q8T2N4B7C5D1E0F9GH"
OUR_TIMESTAMP = "1718000000"
OUR_BODY = (
    b'{"app_id":"01HZX4K7QW8E2R5T9Y3V6M1N0P","accepted_time":"2024-06-10T06:13:19.512Z",'
    b'"event_time":"2024-06-10T06:13:18.900Z","project_id":"5b6c2a1e-8d4f-4c3b-9a7e-1f2d3c4b5a69",'
    b'"message":{"id":"01J0A1B2C3D4E5F6G7H8J9K0MN","direction":"TO_APP","contact_message":'
    b'{"text_message":{"text":"Hej! Where is my order?"}},"channel_identity":{"channel":"WHATSAPP",'
    b'"identity":"46701234567","app_id":""},"conversation_id":"","contact_id":"","metadata":"",'
    b'"accept_time":"2024-06-10T06:13:19.498Z","sender_id":"46700000000",'
    b'"processing_mode":"DISPATCH","injected":false},"message_metadata":"","correlation_id":""}'
)


def test_python_sdk_vector() -> None:
    assert compute_signature(SDK_SECRET, PY_SDK_BODY, SDK_NONCE, SDK_TIMESTAMP) == (
        "Yc+3R1pIS78xLASybulhs8BsSo9BPB3Pr92QCUoczfk="
    )


def test_java_node_dotnet_sdk_vector() -> None:
    assert compute_signature(SDK_SECRET, OTHER_SDKS_BODY, SDK_NONCE, SDK_TIMESTAMP) == (
        "6bpJoRmFoXVjfJIVglMoJzYXxnoxRujzR4k2GOXewOE="
    )


def test_our_reference_vector_is_bit_exact() -> None:
    assert len(OUR_BODY) == 596
    assert hashlib.sha256(OUR_BODY).hexdigest() == (
        "c9ae027fba909c443629889337ce32ca04e5c35d8a51e2e108e9be1d1b08b8e0"
    )
    signed = OUR_BODY + f".{OUR_NONCE}.{OUR_TIMESTAMP}".encode()
    assert len(signed) == 634
    assert compute_signature(OUR_SECRET, OUR_BODY, OUR_NONCE, OUR_TIMESTAMP) == (
        "iYZKoYUiEcF+B9BB2otN8vHpE1t2NEKA0YXrnc52Xqk="
    )


def test_non_ascii_variant_signs_the_utf8_bytes() -> None:
    # The reference doc gives ZCDQ8tKXujCTP61d0dLf5d84z3HdlnNgwYP34OsmEos= for this variant,
    # but neither we, `openssl dgst -hmac` nor the Sinch SDK reproduce it for the body the doc
    # describes (nor for NFD, \u-escaped or double-encoded forms): the doc value is wrong.
    # This value is what openssl and the SDK compute over the UTF-8 bytes.
    body = OUR_BODY.replace(b"Hej! Where is my order?", "Hej! Var är min order? 👋".encode())
    expected = "cleXQRZj8I68w0pQ6MaELESnXLjf/YGXyOUFle0dNfY="
    assert compute_signature(OUR_SECRET, body, OUR_NONCE, OUR_TIMESTAMP) == expected
    headers = {
        "x-sinch-webhook-signature": expected,
        "x-sinch-webhook-signature-nonce": OUR_NONCE,
        "x-sinch-webhook-signature-timestamp": OUR_TIMESTAMP,
    }
    verify(OUR_SECRET, body, headers, now=1718000000)


def test_sdk_accepts_our_vectors() -> None:
    from sinch.domains.conversation.sinch_events.v1 import ConversationSinchEvent

    headers = sign_headers(OUR_SECRET, OUR_BODY, nonce=OUR_NONCE, timestamp=OUR_TIMESTAMP)
    assert headers["x-sinch-webhook-signature"] == "iYZKoYUiEcF+B9BB2otN8vHpE1t2NEKA0YXrnc52Xqk="
    assert ConversationSinchEvent(OUR_SECRET).validate_authentication_header(headers, OUR_BODY)
    assert not ConversationSinchEvent("other").validate_authentication_header(headers, OUR_BODY)


def test_sign_headers_defaults_fresh_ulid_nonce_and_epoch_seconds() -> None:
    headers = sign_headers("s", b"{}")
    assert set(headers) == {
        "x-sinch-webhook-signature",
        "x-sinch-webhook-signature-nonce",
        "x-sinch-webhook-signature-timestamp",
        "x-sinch-webhook-signature-algorithm",
    }
    assert headers["x-sinch-webhook-signature-algorithm"] == "HmacSHA256"
    assert is_ulid(headers["x-sinch-webhook-signature-nonce"])
    assert headers["x-sinch-webhook-signature-timestamp"].isdigit()
    assert (
        sign_headers("s", b"{}")["x-sinch-webhook-signature-nonce"]
        != (headers["x-sinch-webhook-signature-nonce"])
    )


def _headers(**changes: str) -> dict[str, str]:
    headers = sign_headers(OUR_SECRET, OUR_BODY, nonce=OUR_NONCE, timestamp=OUR_TIMESTAMP)
    headers.update(changes)
    return headers


def test_verify_accepts_and_reads_headers_case_insensitively() -> None:
    upper = {k.upper(): v for k, v in _headers().items()}
    verify(OUR_SECRET, OUR_BODY, upper, now=1718000100)


@pytest.mark.parametrize(
    "missing",
    [
        "x-sinch-webhook-signature",
        "x-sinch-webhook-signature-nonce",
        "x-sinch-webhook-signature-timestamp",
    ],
)
def test_verify_names_a_missing_header(missing: str) -> None:
    headers = _headers()
    del headers[missing]
    with pytest.raises(MissingHeaderError) as caught:
        verify(OUR_SECRET, OUR_BODY, headers, now=1718000000)
    assert caught.value.header == missing
    assert caught.value.reason == "missing_header"


def test_verify_refuses_another_algorithm() -> None:
    with pytest.raises(UnsupportedAlgorithmError):
        verify(
            OUR_SECRET,
            OUR_BODY,
            _headers(**{"x-sinch-webhook-signature-algorithm": "HmacSHA1"}),
            now=1718000000,
        )


@pytest.mark.parametrize("now", [1718000000 + 301, 1718000000 - 301])
def test_verify_refuses_a_stale_timestamp(now: int) -> None:
    with pytest.raises(StaleTimestampError):
        verify(OUR_SECRET, OUR_BODY, _headers(), now=now)
    verify(OUR_SECRET, OUR_BODY, _headers(), now=now, tolerance_seconds=400)


def test_verify_refuses_a_non_numeric_timestamp() -> None:
    headers = _headers(**{"x-sinch-webhook-signature-timestamp": "2024-06-10T06:13:19Z"})
    with pytest.raises(StaleTimestampError):
        verify(OUR_SECRET, OUR_BODY, headers, now=1718000000)


@pytest.mark.parametrize(
    ("secret", "body"),
    [
        ("wrong-secret", OUR_BODY),
        (OUR_SECRET, OUR_BODY + b" "),
        (OUR_SECRET, OUR_BODY.replace(b":", b": ")),  # re-serialised JSON does not verify
        ("", OUR_BODY),
    ],
)
def test_verify_refuses_a_mismatch_without_leaking_the_secret(secret: str, body: bytes) -> None:
    with pytest.raises(SignatureMismatchError) as caught:
        verify(secret, body, _headers(), now=1718000000)
    assert OUR_SECRET not in str(caught.value)
    assert "iYZKoYUiEcF" not in str(caught.value)


def test_verify_refuses_a_tampered_signature_header() -> None:
    with pytest.raises(SignatureMismatchError):
        verify(
            OUR_SECRET,
            OUR_BODY,
            _headers(
                **{"x-sinch-webhook-signature": "iYZKoYUiEcF+B9BB2otN8vHpE1t2NEKA0YXrnc52Xqk"}
            ),
            now=1718000000,
        )


def test_errors_share_one_base_class() -> None:
    for cls in (
        MissingHeaderError,
        UnsupportedAlgorithmError,
        StaleTimestampError,
        SignatureMismatchError,
    ):
        assert issubclass(cls, signature.SignatureError)
