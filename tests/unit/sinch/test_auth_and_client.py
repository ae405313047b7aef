"""Tokens and the client against a fake Sinch on httpx.MockTransport: caching, proactive
refresh, single-flight, the 401-expired retry, and the permanent/transient mapping."""

from __future__ import annotations

import asyncio
import base64
import json
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from convodesk.sinch import errors
from convodesk.sinch.auth import TokenCache, TokenProvider
from convodesk.sinch.client import ConversationClient, SendResult, project_url
from convodesk.sinch.send_request import build_send_request

TOKEN_URL = "https://auth.example.test/oauth2/token"
PROJECT = "5b6c2a1e-8d4f-4c3b-9a7e-1f2d3c4b5a69"
SEND_URL = f"https://eu.conversation.example.test/v1/projects/{PROJECT}/messages:send"
APP = "01HZX4K7QW8E2R5T9Y3V6M1N0P"
KEY_ID, KEY_SECRET = "KEY-ID", "KEY-SECRET"
EXPIRED = {"www-authenticate": 'Bearer error="invalid_token", error_description="Jwt expired"'}
REQUEST = build_send_request(
    app_id=APP,
    channel="WHATSAPP",
    identity="46701234567",
    identity_app_id=None,
    text="Hej! Ditt paket är på väg.",
    agent_name="Anna",
    metadata="msg-1",
)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeSinch:
    """Issues tokens T1, T2, ...; accepts sends with a valid bearer token."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.issued: list[str] = []
        self.expired: set[str] = set()
        self.token_answers: deque[httpx.Response | Exception] = deque()
        self.api_answers: deque[httpx.Response | Exception] = deque()
        self.token_json: dict[str, Any] = {"token_type": "bearer", "expires_in": 3600}
        self.token_delay = 0.0

    @property
    def token_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == "/oauth2/token"]

    @property
    def api_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path != "/oauth2/token"]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/oauth2/token":
            if self.token_delay:
                await asyncio.sleep(self.token_delay)
            if self.token_answers:
                return self._answer(self.token_answers.popleft())
            token = f"T{len(self.issued) + 1}"
            self.issued.append(token)
            return httpx.Response(200, json={"access_token": token, **self.token_json})
        if self.api_answers:
            return self._answer(self.api_answers.popleft())
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token in self.expired:
            return httpx.Response(401, headers=EXPIRED, json=sinch_error(401, "UNAUTHENTICATED"))
        if token not in self.issued:
            return httpx.Response(401, json=sinch_error(401, "UNAUTHENTICATED"))
        if request.url.path.endswith("/messages:send"):
            return httpx.Response(
                200, json={"message_id": f"M{len(self.api_requests)}", "accepted_time": ACCEPTED}
            )
        return httpx.Response(200, json={"id": APP, "webhooks": [{"id": "H1"}]})

    @staticmethod
    def _answer(answer: httpx.Response | Exception) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer


ACCEPTED = "2024-06-10T06:15:02.331Z"


def sinch_error(code: int, status: str, message: str = "nope") -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, "details": []}}


@asynccontextmanager
async def setup(
    fake: FakeSinch, clock: Clock | None = None, **cache_args: Any
) -> AsyncIterator[tuple[ConversationClient, TokenCache]]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as http:
        cache = TokenCache(http, clock=clock or Clock(), **cache_args)
        yield ConversationClient(http, cache), cache


async def send(client: ConversationClient, **overrides: Any) -> SendResult:
    args: dict[str, Any] = {
        "url": SEND_URL,
        "token_url": TOKEN_URL,
        "key_id": KEY_ID,
        "key_secret": KEY_SECRET,
    }
    args.update(overrides)
    return await client.send(REQUEST, **args)


# ------------------------------------------------------------------------------ sending


def test_send_posts_exactly_the_built_body_with_a_bearer_token() -> None:
    fake = FakeSinch()

    async def go() -> None:
        async with setup(fake) as (client, _cache):
            result = await send(client)
        assert result == SendResult(
            message_id="M1", accepted_time=datetime(2024, 6, 10, 6, 15, 2, 331000, tzinfo=UTC)
        )

    run(go())
    (token_request,) = fake.token_requests
    assert str(token_request.url) == TOKEN_URL
    assert parse_qs(token_request.content.decode()) == {"grant_type": ["client_credentials"]}
    basic = base64.b64encode(f"{KEY_ID}:{KEY_SECRET}".encode()).decode()
    assert token_request.headers["authorization"] == f"Basic {basic}"
    (sent,) = fake.api_requests
    assert sent.method == "POST"
    assert str(sent.url) == SEND_URL
    assert sent.headers["authorization"] == "Bearer T1"
    assert sent.headers["content-type"] == "application/json"
    assert json.loads(sent.content) == REQUEST.to_json()
    assert "Ditt paket är på väg" in sent.content.decode("utf-8")  # UTF-8, not \\u escapes


def test_timeouts_are_explicit() -> None:
    fake = FakeSinch()

    async def go() -> None:
        async with setup(fake) as (client, _cache):
            await send(client)

    run(go())
    expected = {"connect": 5.0, "read": 15.0, "write": 15.0, "pool": 15.0}
    for request in fake.requests:
        assert request.extensions["timeout"] == expected


def test_token_is_cached_across_sends() -> None:
    fake = FakeSinch()

    async def go() -> None:
        async with setup(fake) as (client, cache):
            for _ in range(5):
                await send(client)
            assert cache.provider(TOKEN_URL, KEY_ID, KEY_SECRET).fetches == 1

    run(go())
    assert len(fake.token_requests) == 1
    assert len(fake.api_requests) == 5


@pytest.mark.parametrize(
    ("accepted_time", "expected"),
    [
        (None, None),
        ("yesterday", None),
        (42, None),
        ("2022-02-07T20:01:09.892757478Z", datetime(2022, 2, 7, 20, 1, 9, 892757, tzinfo=UTC)),
        ("2024-06-10T06:15:02", datetime(2024, 6, 10, 6, 15, 2, tzinfo=UTC)),
    ],
)
def test_accepted_time_is_read_when_possible(accepted_time: Any, expected: Any) -> None:
    fake = FakeSinch()
    body: dict[str, Any] = {"message_id": "M1"}
    if accepted_time is not None:
        body["accepted_time"] = accepted_time
    fake.api_answers.append(httpx.Response(200, json=body))

    async def go() -> None:
        async with setup(fake) as (client, _cache):
            assert (await send(client)).accepted_time == expected

    run(go())


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"accepted_time": ACCEPTED}),
        httpx.Response(200, json={"message_id": ""}),
        httpx.Response(200, json={"message_id": 7}),
        httpx.Response(200, json=["M1"]),
        httpx.Response(200, content=b"<html>ok</html>"),
        httpx.Response(204),
    ],
)
def test_2xx_without_message_id_is_a_transient_protocol_violation(answer: httpx.Response) -> None:
    fake = FakeSinch()
    fake.api_answers.append(answer)

    async def go() -> None:
        async with setup(fake) as (client, _cache):
            with pytest.raises(errors.ProtocolViolationError) as caught:
                await send(client)
        assert not caught.value.permanent
        assert caught.value.maybe_accepted

    run(go())


@pytest.mark.parametrize(
    ("answer", "error_cls", "permanent"),
    [
        (
            httpx.Response(400, json=sinch_error(400, "INVALID_ARGUMENT", "Invalid recipient")),
            errors.BadRequestError,
            True,
        ),
        (
            httpx.Response(403, json=sinch_error(403, "PERMISSION_DENIED")),
            errors.ForbiddenError,
            True,
        ),
        (httpx.Response(404, json=sinch_error(404, "NOT_FOUND")), errors.NotFoundError, True),
        (httpx.Response(409, json=sinch_error(409, "ALREADY_EXISTS")), errors.ClientError, True),
        (
            httpx.Response(401, json=sinch_error(401, "UNAUTHENTICATED")),
            errors.AuthenticationError,
            True,
        ),
        (httpx.Response(429, headers={"retry-after": "3"}), errors.RateLimitedError, False),
        (httpx.Response(500, json=sinch_error(500, "INTERNAL")), errors.ServerError, False),
        (httpx.Response(503, json=sinch_error(503, "UNAVAILABLE")), errors.ServerError, False),
        (
            httpx.Response(302, headers={"location": "https://x"}),
            errors.UnexpectedResponseError,
            True,
        ),
        (httpx.ConnectError("refused"), errors.ConnectionFailedError, False),
        (httpx.ReadTimeout("slow"), errors.SinchTimeoutError, False),
        (httpx.RemoteProtocolError("Server disconnected"), errors.ConnectionFailedError, False),
    ],
)
def test_failures_map_to_permanent_or_transient_errors(
    answer: httpx.Response | Exception, error_cls: type[errors.SinchError], permanent: bool
) -> None:
    fake = FakeSinch()
    fake.api_answers.append(answer)

    async def go() -> None:
        async with setup(fake) as (client, _cache):
            with pytest.raises(errors.SinchError) as caught:
                await send(client)
        assert type(caught.value) is error_cls
        assert caught.value.permanent is permanent
        if isinstance(answer, Exception):
            assert caught.value.__cause__ is answer
        else:
            assert caught.value.http_status == answer.status_code

    run(go())
    assert len(fake.api_requests) == 1  # no retries in the client
    assert len(fake.token_requests) == 1


def test_sinch_message_and_retry_after_reach_the_caller() -> None:
    fake = FakeSinch()
    fake.api_answers.append(
        httpx.Response(
            429,
            headers={"retry-after": "2"},
            json=sinch_error(429, "RESOURCE_EXHAUSTED", "Too many requests for app"),
        )
    )

    async def go() -> None:
        async with setup(fake) as (client, _cache):
            with pytest.raises(errors.RateLimitedError) as caught:
                await send(client)
        error = caught.value
        assert (error.retry_after, error.status, error.message) == (
            2.0,
            "RESOURCE_EXHAUSTED",
            "Too many requests for app",
        )

    run(go())


def test_errors_never_show_the_token_or_secret() -> None:
    fake = FakeSinch()
    fake.api_answers.append(httpx.LocalProtocolError("Illegal header value b'Bearer T1 '"))

    async def go() -> None:
        async with setup(fake) as (client, cache):
            with pytest.raises(errors.InvalidRequestError) as caught:
                await send(client)
            assert "T1" not in str(caught.value)
            assert KEY_SECRET not in repr(cache.provider(TOKEN_URL, KEY_ID, KEY_SECRET))

    run(go())


# ------------------------------------------------------------------------ 401 expired


def test_expired_token_is_refreshed_once_and_the_send_retried() -> None:
    fake = FakeSinch()

    async def go() -> None:
        async with setup(fake) as (client, _cache):
            await send(client)
            fake.expired.add("T1")
            result = await send(client)
            assert result.message_id == "M3"

    run(go())
    assert len(fake.token_requests) == 2
    assert [r.headers["authorization"] for r in fake.api_requests] == [
        "Bearer T1",
        "Bearer T1",
        "Bearer T2",
    ]
    assert fake.api_requests[1].content == fake.api_requests[2].content


def test_many_callers_seeing_the_same_expired_token_refresh_once() -> None:
    fake = FakeSinch()
    fake.token_delay = 0.01

    async def go() -> None:
        async with setup(fake) as (client, _cache):
            await send(client)
            fake.expired.add("T1")
            results = await asyncio.gather(*(send(client) for _ in range(20)))
            assert len({r.message_id for r in results}) == 20

    run(go())
    assert len(fake.token_requests) == 2
    assert fake.issued == ["T1", "T2"]


def test_expired_again_after_refresh_is_transient_and_not_retried_twice() -> None:
    fake = FakeSinch()
    expired = httpx.Response(401, headers=EXPIRED, json=sinch_error(401, "UNAUTHENTICATED"))
    fake.api_answers.extend([expired, expired])

    async def go() -> None:
        async with setup(fake) as (client, _cache):
            with pytest.raises(errors.TokenExpiredError) as caught:
                await send(client)
            assert not caught.value.permanent
            await send(client)  # starts from a fresh token, not the one called expired

    run(go())
    assert len(fake.api_requests) == 3
    assert fake.issued == ["T1", "T2", "T3"]
    assert fake.api_requests[2].headers["authorization"] == "Bearer T3"


def test_401_without_expired_is_permanent_and_not_retried() -> None:
    fake = FakeSinch()
    fake.api_answers.append(
        httpx.Response(401, headers={"www-authenticate": 'Bearer realm="sinch"'})
    )

    async def go() -> None:
        async with setup(fake) as (client, _cache):
            with pytest.raises(errors.AuthenticationError):
                await send(client)

    run(go())
    assert len(fake.api_requests) == 1
    assert len(fake.token_requests) == 1


# -------------------------------------------------------------------- token endpoint


@pytest.mark.parametrize(
    ("answer", "error_cls"),
    [
        (
            httpx.Response(
                401,
                json={
                    "error": "invalid_client",
                    "error_description": "Client authentication failed",
                },
            ),
            errors.AuthenticationError,
        ),
        (httpx.Response(401, headers=EXPIRED), errors.AuthenticationError),
        (
            httpx.Response(400, json={"error": "unsupported_grant_type"}),
            errors.BadRequestError,
        ),
        (httpx.Response(429, headers={"retry-after": "1"}), errors.RateLimitedError),
        (httpx.Response(503), errors.ServerError),
        (httpx.ConnectTimeout("slow"), errors.SinchTimeoutError),
        (httpx.Response(200, json={"token_type": "bearer"}), errors.ProtocolViolationError),
        (httpx.Response(200, content=b"not json"), errors.ProtocolViolationError),
        (
            httpx.Response(200, json={"access_token": "T", "token_type": "mac"}),
            errors.ProtocolViolationError,
        ),
        (
            httpx.Response(200, json={"access_token": "has space", "token_type": "bearer"}),
            errors.ProtocolViolationError,
        ),
    ],
)
def test_token_endpoint_failures_are_mapped(
    answer: httpx.Response | Exception, error_cls: type[errors.SinchError]
) -> None:
    fake = FakeSinch()
    fake.token_answers.append(answer)

    async def go() -> None:
        async with setup(fake) as (client, _cache):
            with pytest.raises(errors.SinchError) as caught:
                await send(client)
        assert type(caught.value) is error_cls
        assert KEY_SECRET not in str(caught.value)

    run(go())
    assert fake.api_requests == []


def test_bad_credentials_name_the_key_id_and_are_permanent() -> None:
    fake = FakeSinch()
    fake.token_answers.append(
        httpx.Response(
            401,
            json={"error": "invalid_client", "error_description": "Client authentication failed"},
        )
    )

    async def go() -> None:
        async with setup(fake) as (client, _cache):
            with pytest.raises(errors.AuthenticationError) as caught:
                await send(client)
        error = caught.value
        assert error.permanent
        assert error.status == "invalid_client"
        assert error.message == (
            "The token endpoint refused access key KEY-ID: Client authentication failed"
        )

    run(go())


@pytest.mark.parametrize("token_type", ["Bearer", "bearer", "BEARER", None])
def test_token_type_is_compared_case_insensitively(token_type: str | None) -> None:
    fake = FakeSinch()
    fake.token_json = {} if token_type is None else {"token_type": token_type}

    async def go() -> None:
        async with setup(fake) as (client, _cache):
            await send(client)

    run(go())


# ------------------------------------------------------------------ proactive refresh


@pytest.mark.parametrize(
    ("token_json", "margin", "still_cached_at", "refreshed_at"),
    [
        ({"expires_in": 3600}, 60, 3539.9, 3540.0),
        ({"expires_in": 3600}, 10, 3539.9, 3540.0),  # the margin is at least 60 s
        ({"expires_in": 3600}, 300, 3299.9, 3300.0),
        ({"expires_in": "3599"}, 60, 3538.9, 3539.0),
        ({}, 60, 3539.9, 3540.0),  # no expires_in: Sinch's 3600
        ({"expires_in": 0}, 60, 3539.9, 3540.0),  # nonsense: 3600
        ({"expires_in": 100}, 60, 49.9, 50.0),  # short-lived: at half its life
    ],
)
def test_token_is_refreshed_ahead_of_expiry(
    token_json: dict[str, Any], margin: float, still_cached_at: float, refreshed_at: float
) -> None:
    fake = FakeSinch()
    fake.token_json = {"token_type": "bearer", **token_json}
    clock = Clock()
    start = clock.now

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(fake)) as http:
            provider = TokenProvider(
                http, TOKEN_URL, KEY_ID, KEY_SECRET, clock=clock, refresh_margin=margin
            )
            assert await provider.get() == "T1"
            clock.now = start + still_cached_at
            assert await provider.get() == "T1"
            clock.now = start + refreshed_at
            assert await provider.get() == "T2"
            assert await provider.get() == "T2"
            assert provider.fetches == 2

    run(go())


def test_twenty_concurrent_callers_share_one_token_request() -> None:
    fake = FakeSinch()
    fake.token_delay = 0.02

    async def go() -> None:
        async with setup(fake) as (client, cache):
            provider = cache.provider(TOKEN_URL, KEY_ID, KEY_SECRET)
            tokens = await asyncio.gather(*(provider.get() for _ in range(20)))
            assert set(tokens) == {"T1"}
            results = await asyncio.gather(*(send(client) for _ in range(20)))
            assert len(results) == 20

    run(go())
    assert len(fake.token_requests) == 1


def test_twenty_concurrent_sends_on_a_cold_cache_fetch_one_token() -> None:
    fake = FakeSinch()
    fake.token_delay = 0.02

    async def go() -> None:
        async with setup(fake) as (client, _cache):
            await asyncio.gather(*(send(client) for _ in range(20)))

    run(go())
    assert len(fake.token_requests) == 1
    assert len(fake.api_requests) == 20


def test_concurrent_callers_during_a_proactive_refresh_share_it() -> None:
    fake = FakeSinch()
    fake.token_delay = 0.02
    clock = Clock()

    async def go() -> None:
        async with setup(fake, clock) as (_client, cache):
            provider = cache.provider(TOKEN_URL, KEY_ID, KEY_SECRET)
            await provider.get()
            clock.now += 3550
            tokens = await asyncio.gather(*(provider.get() for _ in range(20)))
            assert set(tokens) == {"T2"}

    run(go())
    assert len(fake.token_requests) == 2


def test_failed_proactive_refresh_keeps_using_the_valid_token() -> None:
    fake = FakeSinch()
    clock = Clock()
    start = clock.now

    async def go() -> None:
        async with setup(fake, clock) as (_client, cache):
            provider = cache.provider(TOKEN_URL, KEY_ID, KEY_SECRET)
            assert await provider.get() == "T1"
            fake.token_answers.extend([httpx.Response(503), httpx.Response(503)])
            clock.now = start + 3550  # in the refresh window, 50 s of life left
            assert await provider.get() == "T1"
            clock.now = start + 3552  # within the backoff: no new attempt
            assert await provider.get() == "T1"
            assert provider.fetches == 2
            clock.now = start + 3556  # backoff over: tries again, fails, still T1
            assert await provider.get() == "T1"
            assert provider.fetches == 3
            clock.now = start + 3596  # 4 s left: too close, the failure shows
            fake.token_answers.append(httpx.Response(503))
            with pytest.raises(errors.ServerError):
                await provider.get()
            assert await provider.get() == "T2"

    run(go())


def test_failed_proactive_refresh_with_a_permanent_error_raises() -> None:
    fake = FakeSinch()
    clock = Clock()

    async def go() -> None:
        async with setup(fake, clock) as (_client, cache):
            provider = cache.provider(TOKEN_URL, KEY_ID, KEY_SECRET)
            await provider.get()
            fake.token_answers.append(httpx.Response(401, json={"error": "invalid_client"}))
            clock.now += 3550
            with pytest.raises(errors.AuthenticationError):
                await provider.get()

    run(go())


def test_invalidate_ignores_a_token_that_is_no_longer_current() -> None:
    fake = FakeSinch()

    async def go() -> None:
        async with setup(fake) as (_client, cache):
            provider = cache.provider(TOKEN_URL, KEY_ID, KEY_SECRET)
            assert await provider.get() == "T1"
            await provider.invalidate("T1")
            assert await provider.get() == "T2"
            await provider.invalidate("T1")  # a late caller that also saw T1 fail
            assert await provider.get() == "T2"

    run(go())
    assert len(fake.token_requests) == 2


# ------------------------------------------------------------------------ token cache


def test_token_cache_keys_by_token_url_and_key_id() -> None:
    fake = FakeSinch()

    async def go() -> None:
        async with setup(fake) as (client, cache):
            p1 = cache.provider(TOKEN_URL, KEY_ID, KEY_SECRET)
            assert cache.provider(TOKEN_URL, KEY_ID, KEY_SECRET) is p1
            assert cache.provider(TOKEN_URL, "OTHER", "S") is not p1
            assert cache.provider("https://other.test/oauth2/token", KEY_ID, KEY_SECRET) is not p1
            rotated = cache.provider(TOKEN_URL, KEY_ID, "NEW-SECRET")
            assert rotated is not p1
            assert cache.provider(TOKEN_URL, KEY_ID, "NEW-SECRET") is rotated
            assert len(cache) == 3
            await send(client, key_id="A", key_secret="a")
            await send(client, key_id="B", key_secret="b")
            await send(client, key_id="A", key_secret="a")

    run(go())
    assert len(fake.token_requests) == 2


def test_provider_needs_key_id_and_secret() -> None:
    async def go() -> None:
        async with httpx.AsyncClient() as http:
            with pytest.raises(ValueError, match="key id"):
                TokenProvider(http, TOKEN_URL, KEY_ID, "")

    run(go())


# --------------------------------------------------------------------- reads for doctor


def test_get_app_and_list_webhooks() -> None:
    fake = FakeSinch()

    async def go() -> None:
        async with setup(fake) as (client, _cache):
            creds: dict[str, str] = {
                "url": SEND_URL,
                "token_url": TOKEN_URL,
                "key_id": KEY_ID,
                "key_secret": KEY_SECRET,
            }
            app = await client.get_app(app_id=APP, **creds)
            assert app["id"] == APP
            assert await client.list_webhooks(app_id=APP, **creds) == [{"id": "H1"}]

    run(go())
    paths = [r.url.path for r in fake.api_requests]
    assert paths == [
        f"/v1/projects/{PROJECT}/apps/{APP}",
        f"/v1/projects/{PROJECT}/apps/{APP}/webhooks",
    ]
    assert all(r.method == "GET" and "content-type" not in r.headers for r in fake.api_requests)


def test_project_url() -> None:
    assert project_url(SEND_URL) == f"https://eu.conversation.example.test/v1/projects/{PROJECT}"
    with pytest.raises(ValueError, match="messages:send"):
        project_url("https://eu.conversation.example.test/v1/projects/P")
