"""The outbound boundary to the Conversation API: ``messages:send`` and a few reads.

:class:`ConversationClient` wraps an injected ``httpx.AsyncClient`` (tests pass one with an
``httpx.MockTransport``) and a :class:`~convodesk.sinch.auth.TokenCache`. Each call:

1. takes the access key's bearer token from the cache (fetching it if needed);
2. makes the request with explicit timeouts (connect 5 s, read 15 s by default);
3. on a 401 whose ``www-authenticate`` says ``expired`` (what every Sinch SDK keys on):
   invalidates that token, takes a fresh one and retries once; a second "expired" raises a
   transient :class:`~convodesk.sinch.errors.TokenExpiredError`;
4. maps any other failure, transport or HTTP, to a :class:`~convodesk.sinch.errors.SinchError`
   and raises it ``from`` the original.

There are no other retries: retries and backoff (and ``Retry-After``) belong to the outbox
worker, which knows the message's age and attempts.

A 2xx to ``messages:send`` without a ``message_id`` is a
:class:`~convodesk.sinch.errors.ProtocolViolationError`: transient, since Sinch's contract
says a 2xx carries the id, and with ``maybe_accepted`` set, since Sinch may have queued the
message anyway (a retry may then send it twice; Sinch has no idempotency key).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from convodesk.sinch import errors
from convodesk.sinch.auth import TokenCache
from convodesk.sinch.send_request import SendRequest

DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
SEND_SUFFIX = "/messages:send"


@dataclass(frozen=True, kw_only=True)
class SendResult:
    """Sinch accepted the message: its id, and when (None if Sinch did not say or we could
    not read it; the send succeeded either way)."""

    message_id: str
    accepted_time: datetime | None


def project_url(send_url: str) -> str:
    """The project's API root from a service connection URL (``.../projects/P/messages:send``
    -> ``.../projects/P``)."""
    if not send_url.endswith(SEND_SUFFIX):
        raise ValueError(f"a service connection URL ends with {SEND_SUFFIX}")
    return send_url.removesuffix(SEND_SUFFIX)


class ConversationClient:
    """Sends agent replies to Sinch; see the module docstring for the contract.

    ``url`` arguments are the messaging service's service connection URL
    (``https://{region}.conversation.api.sinch.com/v1/projects/{project}/messages:send``);
    ``token_url``, ``key_id`` and ``key_secret`` name the access key (the ``KEYID`` of the
    outbound ``KEYID@APPID`` entry and its secret).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        tokens: TokenCache,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self._http = http
        self._tokens = tokens
        self._timeout = timeout

    async def send(
        self,
        request: SendRequest,
        *,
        url: str,
        token_url: str,
        key_id: str,
        key_secret: str,
    ) -> SendResult:
        """POST ``request`` to ``messages:send``; the accepted message, or a SinchError."""
        body = json.dumps(
            request.to_json(), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode("utf-8")
        response = await self._call(
            "POST", url, body=body, token_url=token_url, key_id=key_id, key_secret=key_secret
        )
        data = _json_object(response)
        message_id = data.get("message_id") if data is not None else None
        if not isinstance(message_id, str) or not message_id.strip():
            raise errors.ProtocolViolationError(
                "Sinch accepted the request but gave no message_id",
                http_status=response.status_code,
                maybe_accepted=True,
            )
        assert data is not None
        return SendResult(
            message_id=message_id, accepted_time=_parse_time(data.get("accepted_time"))
        )

    async def get_app(
        self, *, url: str, app_id: str, token_url: str, key_id: str, key_secret: str
    ) -> dict[str, Any]:
        """The app resource (``GET .../apps/{app_id}``), as Sinch returns it."""
        response = await self._call(
            "GET",
            f"{project_url(url)}/apps/{quote(app_id, safe='')}",
            token_url=token_url,
            key_id=key_id,
            key_secret=key_secret,
        )
        return _require_object(response)

    async def list_webhooks(
        self, *, url: str, app_id: str, token_url: str, key_id: str, key_secret: str
    ) -> list[dict[str, Any]]:
        """The app's webhooks (``GET .../apps/{app_id}/webhooks``), as Sinch returns them."""
        response = await self._call(
            "GET",
            f"{project_url(url)}/apps/{quote(app_id, safe='')}/webhooks",
            token_url=token_url,
            key_id=key_id,
            key_secret=key_secret,
        )
        hooks = _require_object(response).get("webhooks", [])
        if not isinstance(hooks, list) or not all(isinstance(h, dict) for h in hooks):
            raise errors.ProtocolViolationError(
                "Sinch's webhook list is not a list of objects", http_status=response.status_code
            )
        return hooks

    async def _call(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        token_url: str,
        key_id: str,
        key_secret: str,
    ) -> httpx.Response:
        """One API call with the token dance; a 2xx response, or raise a SinchError."""
        provider = self._tokens.provider(token_url, key_id, key_secret)
        token = await provider.get()
        response = await self._request(method, url, body, token)
        if errors.is_token_expired(response):
            await provider.invalidate(token)
            token = await provider.get()
            response = await self._request(method, url, body, token)
            if errors.is_token_expired(response):
                # Let the next attempt start from a fresh token too.
                await provider.invalidate(token)
        if not response.is_success:
            raise errors.error_from_response(response)
        return response

    async def _request(
        self, method: str, url: str, body: bytes | None, token: str
    ) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}", "accept": "application/json"}
        if body is not None:
            headers["content-type"] = "application/json"
        try:
            return await self._http.request(
                method, url, content=body, headers=headers, timeout=self._timeout
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise errors.error_from_transport(exc) from exc


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        data = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _require_object(response: httpx.Response) -> dict[str, Any]:
    data = _json_object(response)
    if data is None:
        raise errors.ProtocolViolationError(
            "Sinch answered without a JSON object", http_status=response.status_code
        )
    return data


def _parse_time(value: object) -> datetime | None:
    """An RFC 3339 time such as ``2024-06-10T06:15:02.331Z``; None if absent or unreadable.

    Python 3.11 reads ``Z`` and more than six fractional digits (Sinch sends nanoseconds in
    some places); a time without an offset is taken as UTC.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
