"""ConversationClient against the real emulator: the bodies Sinch receives, token expiry
mid-run, and the errors it maps (429 with Retry-After, 503, unknown app, bad key)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from convodesk.sinch import errors
from convodesk.sinch.auth import TokenCache
from convodesk.sinch.client import ConversationClient, SendResult
from convodesk.sinch.send_request import SendRequest, Template, build_send_request
from tests.emulator.conftest import (
    APP,
    KEY_ID,
    KEY_SECRET,
    PROJECT,
    US_APP,
    US_KEY_ID,
    US_KEY_SECRET,
    US_PROJECT,
    WA_NUMBER,
    Harness,
)

MESSENGER_ID = "2790134121041234"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


@dataclass
class Sender:
    """A ConversationClient wired to the emulator, counting token requests."""

    client: ConversationClient
    base_url: str
    token_requests: list[str] = field(default_factory=list)

    async def send(
        self,
        request: SendRequest,
        *,
        region: str = "eu",
        project: str = PROJECT,
        key_id: str = KEY_ID,
        key_secret: str = KEY_SECRET,
    ) -> SendResult:
        return await self.client.send(
            request,
            url=f"{self.base_url}/{region}/v1/projects/{project}/messages:send",
            token_url=f"{self.base_url}/oauth2/token",
            key_id=key_id,
            key_secret=key_secret,
        )


@asynccontextmanager
async def sender(emu: Harness) -> AsyncIterator[Sender]:
    token_requests: list[str] = []

    async def record(request: httpx.Request) -> None:
        if request.url.path == "/oauth2/token":
            token_requests.append(request.url.path)

    async with httpx.AsyncClient(event_hooks={"request": [record]}) as http:
        client = ConversationClient(http, TokenCache(http))
        yield Sender(client, emu.running.base_url, token_requests)


def reply(**overrides: Any) -> SendRequest:
    fields: dict[str, Any] = {
        "app_id": APP,
        "channel": "WHATSAPP",
        "identity": WA_NUMBER,
        "identity_app_id": None,
        "text": "Hej! Ditt paket är på väg.",
        "agent_name": "Anna",
        "metadata": "cd-msg-1",
        "ttl_seconds": 86400,
    }
    fields.update(overrides)
    return build_send_request(**fields)


def sent_request(emu: Harness, message_id: str) -> dict[str, Any]:
    (record,) = emu.sent(message_id=message_id)
    body: dict[str, Any] = record["request"]
    return body


def test_whatsapp_text_after_inbound_arrives_as_built_and_is_read(emu: Harness) -> None:
    emu.inbound(WA_NUMBER, "WHATSAPP")  # opens the 24-hour window
    request = reply()

    async def go() -> None:
        async with sender(emu) as s:
            result = await s.send(request)
        assert result.accepted_time is not None
        assert sent_request(emu, result.message_id) == request.to_json()
        assert emu.wait_status(result.message_id, "READ")[-1] == "READ"

    run(go())


def test_whatsapp_template_arrives_as_built(emu: Harness) -> None:
    template = Template(name="order_update", language="sv_SE", parameters={"body[1]text": "42"})
    request = reply(text=None, template=template, identity="46701112233")

    async def go() -> None:
        async with sender(emu) as s:
            result = await s.send(request)
        assert sent_request(emu, result.message_id) == request.to_json()
        assert "READ" in emu.wait_status(result.message_id, "READ")  # no window needed

    run(go())


def test_sms_with_us_sender_id(emu: Harness) -> None:
    request = reply(app_id=US_APP, channel="SMS", identity="12015550123", sms_sender="12015550100")

    async def go() -> None:
        async with sender(emu) as s:
            result = await s.send(
                request,
                region="us",
                project=US_PROJECT,
                key_id=US_KEY_ID,
                key_secret=US_KEY_SECRET,
            )
        body = sent_request(emu, result.message_id)
        assert body == request.to_json()
        assert body["channel_properties"] == {"SMS_SENDER": "12015550100"}
        assert "agent" not in body["message"]

    run(go())


def test_messenger_app_scoped_identity(emu: Harness) -> None:
    request = reply(channel="MESSENGER", identity=MESSENGER_ID, identity_app_id=APP)

    async def go() -> None:
        async with sender(emu) as s:
            result = await s.send(request)
        body = sent_request(emu, result.message_id)
        assert body == request.to_json()
        identity = body["recipient"]["identified_by"]["channel_identities"][0]
        assert identity == {"channel": "MESSENGER", "identity": MESSENGER_ID, "app_id": APP}
        assert emu.wait_status(result.message_id, "READ")[-1] == "READ"

    run(go())


def test_token_expired_mid_run_refreshes_once(emu: Harness) -> None:
    emu.inbound(WA_NUMBER, "WHATSAPP")

    async def go() -> None:
        async with sender(emu) as s:
            await s.send(reply(metadata="m1"))
            await s.send(reply(metadata="m2"))
            assert len(s.token_requests) == 1
            assert emu.http.post("/_emulator/tokens/expire").status_code == 200
            results = await asyncio.gather(*(s.send(reply(metadata=f"x{i}")) for i in range(5)))
            assert len({r.message_id for r in results}) == 5
            assert len(s.token_requests) == 2

    run(go())
    assert len(emu.sent()) == 7


def test_injected_429_carries_retry_after(emu: Harness) -> None:
    faults = {"error_rate": 1, "error_statuses": [429], "retry_after_s": 2}
    assert emu.http.post("/_emulator/faults", json=faults).status_code == 200

    async def go() -> None:
        async with sender(emu) as s:
            with pytest.raises(errors.RateLimitedError) as caught:
                await s.send(reply())
        error = caught.value
        assert not error.permanent
        assert error.retry_after == 2.0
        assert error.http_status == 429
        assert error.status == "RESOURCE_EXHAUSTED"

    run(go())
    assert emu.sent() == []


def test_injected_503_is_a_transient_server_error(emu: Harness) -> None:
    faults = {"error_rate": 1, "error_statuses": [503]}
    assert emu.http.post("/_emulator/faults", json=faults).status_code == 200

    async def go() -> None:
        async with sender(emu) as s:
            with pytest.raises(errors.ServerError) as caught:
                await s.send(reply())
        assert not caught.value.permanent
        assert (caught.value.http_status, caught.value.status) == (503, "UNAVAILABLE")

    run(go())


def test_unknown_app_is_a_permanent_not_found(emu: Harness) -> None:
    async def go() -> None:
        async with sender(emu) as s:
            with pytest.raises(errors.NotFoundError) as caught:
                await s.send(reply(app_id="01HZX4K7QW8E2R5T9Y3V6M1N0Z"))
        error = caught.value
        assert error.permanent
        assert error.status == "NOT_FOUND"
        assert "01HZX4K7QW8E2R5T9Y3V6M1N0Z" in error.message

    run(go())


def test_app_in_the_wrong_region_is_a_permanent_not_found(emu: Harness) -> None:
    async def go() -> None:
        async with sender(emu) as s:
            with pytest.raises(errors.NotFoundError):
                await s.send(reply(), region="us")

    run(go())


def test_wrong_key_secret_is_a_permanent_authentication_error(emu: Harness) -> None:
    async def go() -> None:
        async with sender(emu) as s:
            with pytest.raises(errors.AuthenticationError) as caught:
                await s.send(reply(), key_secret="WRONG")
        error = caught.value
        assert error.permanent
        assert error.status == "invalid_client"
        assert "WRONG" not in str(error)

    run(go())


def test_key_of_another_project_is_forbidden(emu: Harness) -> None:
    async def go() -> None:
        async with sender(emu) as s:
            with pytest.raises(errors.ForbiddenError) as caught:
                await s.send(reply(), key_id=US_KEY_ID, key_secret=US_KEY_SECRET)
        assert caught.value.permanent

    run(go())


def test_get_app_and_list_webhooks(emu: Harness) -> None:
    async def go() -> None:
        async with sender(emu) as s:
            creds: dict[str, str] = {
                "url": f"{s.base_url}/eu/v1/projects/{PROJECT}/messages:send",
                "token_url": f"{s.base_url}/oauth2/token",
                "key_id": KEY_ID,
                "key_secret": KEY_SECRET,
            }
            app = await s.client.get_app(app_id=APP, **creds)
            assert app["id"] == APP
            hooks = await s.client.list_webhooks(app_id=APP, **creds)
            assert [h["app_id"] for h in hooks] == [APP]

    run(go())
