"""The error mapping is complete: every httpx exception and every HTTP status has its error."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convodesk.sinch import errors

REQUEST = httpx.Request("POST", "https://eu.conversation.api.sinch.com/v1/projects/P/messages:send")

# Every httpx exception class we know, and what it becomes. A new httpx class fails
# test_every_httpx_exception_is_decided until someone adds it here (and to errors.py).
EXPECTED_TRANSPORT: dict[type[httpx.HTTPError], tuple[type[errors.SinchError], bool]] = {
    httpx.HTTPError: (errors.ConnectionFailedError, True),
    httpx.RequestError: (errors.ConnectionFailedError, True),
    httpx.TransportError: (errors.ConnectionFailedError, True),
    httpx.TimeoutException: (errors.SinchTimeoutError, True),
    httpx.ConnectTimeout: (errors.SinchTimeoutError, False),
    httpx.ReadTimeout: (errors.SinchTimeoutError, True),
    httpx.WriteTimeout: (errors.SinchTimeoutError, False),
    httpx.PoolTimeout: (errors.SinchTimeoutError, False),
    httpx.NetworkError: (errors.ConnectionFailedError, True),
    httpx.ReadError: (errors.ConnectionFailedError, True),
    httpx.WriteError: (errors.ConnectionFailedError, False),
    httpx.ConnectError: (errors.ConnectionFailedError, False),
    httpx.CloseError: (errors.ConnectionFailedError, True),
    httpx.ProxyError: (errors.ConnectionFailedError, False),
    httpx.UnsupportedProtocol: (errors.InvalidRequestError, False),
    httpx.ProtocolError: (errors.ConnectionFailedError, True),
    httpx.LocalProtocolError: (errors.InvalidRequestError, False),
    httpx.RemoteProtocolError: (errors.ConnectionFailedError, True),
    httpx.DecodingError: (errors.ProtocolViolationError, True),
    httpx.TooManyRedirects: (errors.UnexpectedResponseError, False),
    httpx.HTTPStatusError: (errors.ServerError, False),  # built below with a 503 response
}


def all_subclasses(cls: type[Any]) -> list[type[Any]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(all_subclasses(sub))
    return out


HTTPX_CLASSES = sorted(set(all_subclasses(httpx.HTTPError)), key=lambda c: c.__name__)


def make_exception(cls: type[httpx.HTTPError]) -> httpx.HTTPError:
    if issubclass(cls, httpx.HTTPStatusError):
        response = httpx.Response(503, request=REQUEST)
        return cls("503", request=REQUEST, response=response)
    if issubclass(cls, httpx.RequestError):
        return cls("boom", request=REQUEST)
    return cls("boom")


def response(
    status: int, body: Any = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = b"" if body is None else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers=headers, request=REQUEST)


def sinch_error(status: int, sinch_status: str, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": sinch_status, "details": []}}


# ------------------------------------------------------------------------- transport


@pytest.mark.parametrize("cls", HTTPX_CLASSES, ids=lambda c: c.__name__)
def test_every_httpx_exception_maps_to_a_sinch_error(cls: type[httpx.HTTPError]) -> None:
    mapped = errors.error_from_transport(make_exception(cls))
    assert isinstance(mapped, errors.SinchError)
    assert isinstance(mapped, errors.TransientError | errors.PermanentError)
    assert mapped.permanent == isinstance(mapped, errors.PermanentError)
    assert mapped.message


def test_every_httpx_exception_is_decided() -> None:
    unknown = [c.__name__ for c in HTTPX_CLASSES if c not in EXPECTED_TRANSPORT]
    assert not unknown, f"new httpx exception classes: decide their mapping: {unknown}"


@pytest.mark.parametrize(
    ("cls", "expected"), list(EXPECTED_TRANSPORT.items()), ids=lambda v: getattr(v, "__name__", "")
)
def test_httpx_exception_maps_to_the_decided_class(
    cls: type[httpx.HTTPError], expected: tuple[type[errors.SinchError], bool]
) -> None:
    error_cls, maybe_accepted = expected
    mapped = errors.error_from_transport(make_exception(cls))
    assert type(mapped) is error_cls
    assert mapped.maybe_accepted is maybe_accepted
    assert mapped.http_status == (503 if cls is httpx.HTTPStatusError else None)


def test_an_unknown_httpx_subclass_maps_as_its_nearest_base() -> None:
    class WeirdTimeout(httpx.ReadTimeout):
        pass

    mapped = errors.error_from_transport(WeirdTimeout("slow", request=REQUEST))
    assert type(mapped) is errors.SinchTimeoutError
    assert mapped.maybe_accepted


def test_invalid_url_is_a_permanent_invalid_request() -> None:
    with pytest.raises(httpx.InvalidURL) as caught:
        httpx.URL("http://[::1")
    mapped = errors.error_from_transport(caught.value)
    assert isinstance(mapped, errors.InvalidRequestError)
    assert mapped.permanent


def test_transport_messages_never_quote_a_header_value() -> None:
    # h11 quotes the offending header value; that value can be our bearer token.
    exc = httpx.LocalProtocolError("Illegal header value b'Bearer SECRET-TOKEN '", request=REQUEST)
    mapped = errors.error_from_transport(exc)
    assert "SECRET-TOKEN" not in str(mapped)
    assert "SECRET-TOKEN" not in repr(mapped)
    proxy = httpx.ProxyError("http://user:PASSWORD@proxy:3128 refused", request=REQUEST)
    assert "PASSWORD" not in str(errors.error_from_transport(proxy))


def test_connect_error_keeps_the_reason() -> None:
    mapped = errors.error_from_transport(
        httpx.ConnectError("[Errno 111] Connection refused", request=REQUEST)
    )
    assert str(mapped) == "Could not reach Sinch (connection refused, reset or lost) " + (
        "(ConnectError: [Errno 111] Connection refused)"
    )
    assert not mapped.permanent


# ---------------------------------------------------------------------------- statuses


def expected_class(status: int) -> type[errors.SinchError]:
    table: dict[int, type[errors.SinchError]] = {
        400: errors.BadRequestError,
        401: errors.AuthenticationError,
        403: errors.ForbiddenError,
        404: errors.NotFoundError,
        408: errors.SinchTimeoutError,
        425: errors.RetryLaterError,
        429: errors.RateLimitedError,
    }
    if status in table:
        return table[status]
    if 400 <= status < 500:
        return errors.ClientError
    if 500 <= status < 600:
        return errors.ServerError
    if 200 <= status < 300:
        return errors.ProtocolViolationError
    return errors.UnexpectedResponseError


@pytest.mark.parametrize("status", range(400, 600))
def test_every_error_status_maps_to_its_class(status: int) -> None:
    mapped = errors.error_from_response(response(status))
    assert type(mapped) is expected_class(status)
    assert mapped.http_status == status
    transient = status >= 500 or status in (408, 425, 429)
    assert mapped.permanent is not transient


@given(st.integers(min_value=100, max_value=999))
def test_any_status_maps_to_a_sinch_error(status: int) -> None:
    mapped = errors.error_from_response(response(status))
    assert type(mapped) is expected_class(status)
    assert isinstance(mapped, errors.TransientError | errors.PermanentError)


def test_expired_401_is_a_transient_token_expired_error() -> None:
    expired = response(
        401,
        sinch_error(401, "UNAUTHENTICATED", "token expired"),
        {"www-authenticate": 'Bearer error="invalid_token", error_description="Jwt EXPIRED"'},
    )
    mapped = errors.error_from_response(expired)
    assert type(mapped) is errors.TokenExpiredError
    assert not mapped.permanent
    other = response(401, None, {"www-authenticate": 'Bearer realm="sinch"'})
    assert type(errors.error_from_response(other)) is errors.AuthenticationError


def test_sinch_error_body_gives_status_and_message() -> None:
    mapped = errors.error_from_response(
        response(400, sinch_error(400, "INVALID_ARGUMENT", "Invalid argument: recipient"))
    )
    assert isinstance(mapped, errors.BadRequestError)
    assert mapped.status == "INVALID_ARGUMENT"
    assert mapped.message == "Invalid argument: recipient"
    assert str(mapped) == "Invalid argument: recipient (HTTP 400 INVALID_ARGUMENT)"
    assert mapped.retry_after is None


def test_oauth_error_body_gives_status_and_message() -> None:
    body = {"error": "invalid_client", "error_description": "Client authentication failed"}
    mapped = errors.error_from_response(response(401, body))
    assert isinstance(mapped, errors.AuthenticationError)
    assert (mapped.status, mapped.message) == ("invalid_client", "Client authentication failed")


@pytest.mark.parametrize(
    "content",
    [b"", b"<html>Bad gateway</html>", b"[1, 2]", b'{"error": 5}', b"\xff\xfe", b"null"],
)
def test_unreadable_error_bodies_get_the_default_message(content: bytes) -> None:
    mapped = errors.error_from_response(httpx.Response(502, content=content, request=REQUEST))
    assert isinstance(mapped, errors.ServerError)
    assert mapped.message == "Sinch had a server error; try again later"
    assert mapped.status is None


def test_long_messages_with_control_characters_are_cleaned() -> None:
    text = "line one\nline two\x00" + "x" * 1000
    mapped = errors.error_from_response(response(400, sinch_error(400, "INVALID_ARGUMENT", text)))
    assert "\n" not in mapped.message
    assert "\x00" not in mapped.message
    assert len(mapped.message) == errors.MAX_MESSAGE_LENGTH
    assert mapped.message.startswith("line one line two")


def test_unread_streaming_response_maps_without_body() -> None:
    streamed = httpx.Response(503, stream=httpx.ByteStream(b"{}"), request=REQUEST)
    mapped = errors.error_from_response(streamed)
    assert isinstance(mapped, errors.ServerError)


# -------------------------------------------------------------------------- retry-after


def test_rate_limited_error_carries_retry_after_seconds() -> None:
    mapped = errors.error_from_response(
        response(429, sinch_error(429, "RESOURCE_EXHAUSTED", "slow down"), {"retry-after": "2"})
    )
    assert isinstance(mapped, errors.RateLimitedError)
    assert mapped.retry_after == 2.0
    assert mapped.status == "RESOURCE_EXHAUSTED"


def test_retry_after_as_http_date() -> None:
    now = datetime(2024, 6, 10, 6, 15, 0, tzinfo=UTC)
    mapped = errors.error_from_response(
        response(503, None, {"retry-after": "Mon, 10 Jun 2024 06:15:30 GMT"}), now=lambda: now
    )
    assert mapped.retry_after == 30.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("  5 ", 5.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("Mon, 10 Jun 2024 06:14:00 GMT", 0.0),  # in the past: now
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    now = datetime(2024, 6, 10, 6, 15, 0, tzinfo=UTC)
    assert errors.parse_retry_after(header, now=lambda: now) == expected


def test_default_messages_come_from_the_docstrings() -> None:
    assert str(errors.NotFoundError()) == (
        "Sinch does not know this project or app (or it is in another region)"
    )
    assert errors.PermanentError.permanent
    assert not errors.TransientError.permanent
