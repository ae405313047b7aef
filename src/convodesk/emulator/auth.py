"""OAuth2 access tokens and the API's Basic/Bearer authentication.

Tokens are JWT-shaped (HS256 over a per-process random key) like Sinch's, so clients that
decode ``exp`` (the Node SDK does) work. They are stateless apart from a small cache of
already-verified tokens and a revocation mark `expire_all` moves forward, which lets a test make
every token issued so far answer 401 "expired" without touching the clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from convodesk.emulator.config import AccessKey, EmulatorConfig
from convodesk.emulator.errors import ApiError

_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
_CACHE_LIMIT = 10_000


@dataclass(frozen=True, kw_only=True)
class Principal:
    """Who is calling: the access key and the project it belongs to."""

    key_id: str
    project_id: str
    expires_at: float | None = None
    serial: int = 0


class TokenIssuer:
    def __init__(
        self, config: EmulatorConfig, *, ttl_seconds: int, clock: Callable[[], float]
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._key = os.urandom(32)
        self._keys: dict[str, tuple[AccessKey, str]] = {
            key.key_id: (key, project.id)
            for project in config.projects
            for key in project.access_keys
        }
        self._serial = 0
        self._revoked_through = 0
        self._cache: dict[str, Principal] = {}
        self._lock = threading.Lock()

    def check_key(self, key_id: str, key_secret: str) -> Principal | None:
        entry = self._keys.get(key_id)
        if entry is None:
            return None
        key, project_id = entry
        if not hmac.compare_digest(key.key_secret.encode(), key_secret.encode()):
            return None
        return Principal(key_id=key_id, project_id=project_id)

    def issue(self, principal: Principal) -> tuple[str, int]:
        now = int(self._clock())
        with self._lock:
            self._serial += 1
            serial = self._serial
        claims = {
            "iss": "convodesk-emulator",
            "sub": principal.key_id,
            "project_id": principal.project_id,
            "iat": now,
            "exp": now + self.ttl_seconds,
            "jti": serial,
        }
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{_HEADER}.{payload}"
        signature = _b64(hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest())
        return f"{signing_input}.{signature}", self.ttl_seconds

    def expire_all(self) -> None:
        """Every token issued so far now answers 401 expired."""
        with self._lock:
            self._revoked_through = self._serial

    def verify(self, token: str) -> Principal:
        principal = self._cache.get(token)
        if principal is None:
            principal = self._decode(token)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[token] = principal
        now = self._clock()
        if (
            principal.expires_at is not None and now >= principal.expires_at
        ) or principal.serial <= self._revoked_through:
            raise ApiError(
                401,
                "Request had invalid authentication credentials: the access token has expired",
                headers={
                    "www-authenticate": 'Bearer error="invalid_token", '
                    'error_description="Jwt expired"'
                },
            )
        return principal

    def _decode(self, token: str) -> Principal:
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _HEADER:
            raise _invalid_token()
        signing_input = f"{parts[0]}.{parts[1]}"
        expected = _b64(hmac.new(self._key, signing_input.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected.encode(), parts[2].encode()):
            raise _invalid_token()
        try:
            claims = json.loads(_unb64(parts[1]))
            return Principal(
                key_id=str(claims["sub"]),
                project_id=str(claims["project_id"]),
                expires_at=float(claims["exp"]),
                serial=int(claims["jti"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise _invalid_token() from exc

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        """The caller of an API request: ``Bearer <token>`` or ``Basic key_id:key_secret``."""
        header = headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme == "bearer" and value:
            return self.verify(value)
        if scheme == "basic" and value:
            credentials = parse_basic(value)
            if credentials is not None:
                principal = self.check_key(*credentials)
                if principal is not None:
                    return principal
            raise ApiError(
                401,
                "Request had invalid authentication credentials: unknown key id or wrong secret",
                headers={"www-authenticate": 'Basic realm="sinch"'},
            )
        raise ApiError(
            401,
            "Request is missing required authentication credential: expected an "
            "'Authorization: Bearer <access token>' or 'Basic' header",
            headers={"www-authenticate": 'Bearer realm="sinch"'},
        )


def parse_basic(value: str) -> tuple[str, str] | None:
    try:
        decoded = base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    key_id, sep, secret = decoded.partition(":")
    return (key_id, secret) if sep and key_id else None


def _invalid_token() -> ApiError:
    return ApiError(
        401,
        "Request had invalid authentication credentials: the access token is not valid",
        headers={"www-authenticate": 'Bearer error="invalid_token"'},
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
