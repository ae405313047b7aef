"""OAuth2 client-credentials access tokens for the Conversation API (reference section 5).

One access key (key id + key secret) gets one bearer token, fetched from the token endpoint
(``POST https://auth.sinch.com/oauth2/token``, form ``grant_type=client_credentials``, HTTP
Basic ``key_id:key_secret``) and shared by every send made with that key:

* cached until less than ``max(60 s, refresh_margin)`` of its life is left, then refreshed
  ahead of expiry (for tokens that live shorter than twice that, at half their life);
* one refresh in flight at a time: concurrent callers wait for the same refresh (an
  ``asyncio.Lock`` with a second look at the cache once it is held);
* when a proactive refresh fails transiently while the cached token still has more than
  ``_MIN_REMAINING`` seconds to live, that token is used for ``_REFRESH_BACKOFF`` seconds more
  before the next attempt, so a short auth outage does not fail sends;
* :meth:`TokenProvider.invalidate` drops a token Sinch called expired, only if it is still the
  cached one, so a burst of 401s leads to one refresh, not one per caller.

Token endpoint failures map to :mod:`convodesk.sinch.errors`: a 401 (unknown key id, wrong
secret) is a permanent :class:`~convodesk.sinch.errors.AuthenticationError`, a 400 a permanent
:class:`~convodesk.sinch.errors.BadRequestError`, 429 and 5xx are transient. No retries here:
the outbox worker owns retries.

:class:`TokenCache` holds one provider per (token URL, key id). Nothing here logs or shows the
key secret or a token; ``repr`` shows the key id only.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from convodesk.sinch import errors

DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
MIN_REFRESH_MARGIN = 60.0  # seconds of life left when a token is refreshed, at least
DEFAULT_EXPIRES_IN = 3600.0  # Sinch's documented token lifetime, when expires_in is missing
_MIN_REMAINING = 5.0  # a token this close to expiry is not used after a failed refresh
_REFRESH_BACKOFF = 5.0  # seconds between refresh attempts while the old token is still used

Clock = Callable[[], float]


@dataclass(frozen=True, kw_only=True)
class _Token:
    value: str
    expires_at: float  # clock time
    refresh_at: float  # clock time


class TokenProvider:
    """The bearer token of one access key: cached, refreshed ahead of expiry, single-flight.

    ``clock`` is monotonic seconds (injected for tests). A token's life is counted from the
    moment its request was sent, so a slow token endpoint can only make us refresh early.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        token_url: str,
        key_id: str,
        key_secret: str,
        *,
        clock: Clock = time.monotonic,
        refresh_margin: float = MIN_REFRESH_MARGIN,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        if not key_id or not key_secret:
            raise ValueError("an access key needs a key id and a key secret")
        self._client = client
        self.token_url = token_url
        self.key_id = key_id
        self._key_secret = key_secret
        self._auth = httpx.BasicAuth(key_id, key_secret)
        self._clock = clock
        self._margin = max(MIN_REFRESH_MARGIN, refresh_margin)
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self._token: _Token | None = None
        self._next_attempt_at = -math.inf
        self._fetches = 0

    def __repr__(self) -> str:
        return f"TokenProvider(token_url={self.token_url!r}, key_id={self.key_id!r})"

    @property
    def fetches(self) -> int:
        """How many times a token was requested from the token endpoint (for metrics, tests)."""
        return self._fetches

    def has_secret(self, key_secret: str) -> bool:
        return hmac.compare_digest(self._key_secret.encode(), key_secret.encode())

    async def get(self) -> str:
        """A valid bearer token, from the cache or freshly fetched. Raises a SinchError."""
        token = self._token
        if token is not None and self._clock() < token.refresh_at:
            return token.value
        async with self._lock:
            token = self._token  # another caller may have refreshed while we waited
            now = self._clock()
            if token is not None and now < token.refresh_at:
                return token.value
            usable = token is not None and now < token.expires_at - _MIN_REMAINING
            if token is not None and usable and now < self._next_attempt_at:
                return token.value
            try:
                fresh = await self._fetch()
            except errors.TransientError:
                if token is not None and usable:
                    self._next_attempt_at = now + _REFRESH_BACKOFF
                    return token.value
                raise
            self._token = fresh
            self._next_attempt_at = -math.inf
            return fresh.value

    async def invalidate(self, token: str) -> None:
        """Forget ``token`` (Sinch said it expired) if it is still the cached one."""
        async with self._lock:
            if self._token is not None and self._token.value == token:
                self._token = None

    async def _fetch(self) -> _Token:
        started = self._clock()
        self._fetches += 1
        try:
            response = await self._client.post(
                self.token_url,
                data={"grant_type": "client_credentials"},
                auth=self._auth,
                headers={"accept": "application/json"},
                timeout=self._timeout,
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise errors.error_from_transport(exc) from exc
        if response.status_code == 401:
            # At the token endpoint a 401 means the key id or secret is wrong, "expired" or not.
            failure = errors.error_from_response(response)
            raise errors.AuthenticationError(
                f"The token endpoint refused access key {self.key_id}: {failure.message}",
                http_status=401,
                status=failure.status,
            )
        if not response.is_success:
            raise errors.error_from_response(response)
        value, expires_in = _parse_token(response)
        # Refresh max(60 s, margin) before expiry; a token living less than twice that is
        # refreshed at half its life instead, so it is not refetched on every call.
        margin = min(self._margin, expires_in / 2)
        return _Token(
            value=value,
            expires_at=started + expires_in,
            refresh_at=started + expires_in - margin,
        )


def _parse_token(response: httpx.Response) -> tuple[str, float]:
    """``access_token`` and ``expires_in`` of a 2xx token answer; else ProtocolViolationError."""
    try:
        data: Any = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise errors.ProtocolViolationError(
            "The token endpoint answered without a JSON object", http_status=response.status_code
        )
    value = data.get("access_token")
    # The token goes into a header: printable ASCII without spaces, or httpx cannot send it.
    if not isinstance(value, str) or not value or not _is_header_safe(value):
        raise errors.ProtocolViolationError(
            "The token endpoint answered without a usable access_token",
            http_status=response.status_code,
        )
    token_type = data.get("token_type")
    # Sinch's docs show both "Bearer" and "bearer" (reference section 5).
    if token_type is not None and (
        not isinstance(token_type, str) or token_type.lower() != "bearer"
    ):
        raise errors.ProtocolViolationError(
            "The token endpoint issued a token that is not a bearer token",
            http_status=response.status_code,
        )
    return value, _expires_in(data.get("expires_in"))


def _expires_in(raw: object) -> float:
    """Seconds the token lives; missing, unreadable or non-positive means Sinch's 3600."""
    if isinstance(raw, bool):
        return DEFAULT_EXPIRES_IN
    if isinstance(raw, int | float):
        seconds = float(raw)
    elif isinstance(raw, str):
        try:
            seconds = float(raw)
        except ValueError:
            return DEFAULT_EXPIRES_IN
    else:
        return DEFAULT_EXPIRES_IN
    return seconds if math.isfinite(seconds) and seconds > 0 else DEFAULT_EXPIRES_IN


def _is_header_safe(value: str) -> bool:
    return value.isascii() and value.isprintable() and " " not in value


class TokenCache:
    """One :class:`TokenProvider` per (token URL, key id), so all sends of a key share a token.

    A different secret for a known key id (the key was rotated in the configuration) replaces
    the provider and its token.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        clock: Clock = time.monotonic,
        refresh_margin: float = MIN_REFRESH_MARGIN,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self._client = client
        self._clock = clock
        self._refresh_margin = refresh_margin
        self._timeout = timeout
        self._providers: dict[tuple[str, str], TokenProvider] = {}

    def provider(self, token_url: str, key_id: str, key_secret: str) -> TokenProvider:
        """The provider of this access key, created on first use. Never awaits: no races."""
        key = (token_url, key_id)
        provider = self._providers.get(key)
        if provider is None or not provider.has_secret(key_secret):
            provider = TokenProvider(
                self._client,
                token_url,
                key_id,
                key_secret,
                clock=self._clock,
                refresh_margin=self._refresh_margin,
                timeout=self._timeout,
            )
            self._providers[key] = provider
        return provider

    async def get(self, token_url: str, key_id: str, key_secret: str) -> str:
        return await self.provider(token_url, key_id, key_secret).get()

    def __len__(self) -> int:
        return len(self._providers)
