"""The browser side of a web session: the cookie, the CSRF token and the login throttle.

- The cookie ``convodesk_session`` holds the session token (services/web_sessions.py); it is
  HttpOnly, SameSite=Lax, Path=/, and Secure when the request came over HTTPS or the
  configured `public_base_url` is https.
- Every unsafe request (POST, PUT, PATCH, DELETE) that the cookie authenticates must carry
  the CSRF token, in the ``X-CSRF-Token`` header (the pages' JavaScript) or the
  ``csrf_token`` form field (the logout form). The token is an HMAC-SHA256 of the session
  token's digest under a key derived from the server's secret key: bound to the session,
  the same on every node, never stored. Bearer-authenticated requests need none, since a
  browser never adds an Authorization header by itself.
- Failed logins are counted in memory, per login and client address, per login, and per
  address, over a sliding window; past a limit, logins from there are refused for a while
  without the password being checked. Each process counts for itself: with N `serve` nodes
  an attacker gets up to N times the limit, which still makes guessing impractical.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

from convodesk.runtime import Runtime

COOKIE_NAME = "convodesk_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_KEY_PURPOSE = "web-session-csrf"


def csrf_token(key: bytes, session_token: str) -> str:
    digest = hashlib.sha256(session_token.encode("utf-8")).digest()
    mac = hmac.new(key, b"csrf:" + digest, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")


def csrf_valid(key: bytes, session_token: str, given: str | None) -> bool:
    if not given:
        return False
    return hmac.compare_digest(csrf_token(key, session_token), given.strip())


def cookie_secure(request: Request, runtime: Runtime) -> bool:
    base = runtime.config.public_base_url or ""
    return request.url.scheme == "https" or base.startswith("https://")


def safe_next(target: str | None) -> str:
    """Where to go after the login: a path on this site only (no ``//host`` or scheme)."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 32 for c in target)
    ):
        return "/"
    return target


@dataclass(frozen=True, kw_only=True)
class ThrottleLimits:
    window_seconds: float = 15 * 60
    per_login_and_address: int = 5
    per_login: int = 20
    per_address: int = 50


class LoginThrottle:
    """Sliding-window counts of failed logins; thread-safe, in memory."""

    MAX_KEYS = 10_000

    def __init__(
        self,
        limits: ThrottleLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits or ThrottleLimits()
        self._clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._lock = threading.Lock()

    def _keys(self, login: str, address: str) -> list[tuple[tuple[str, str], int]]:
        login = login.strip().lower()
        return [
            (("pair", f"{login}\n{address}"), self.limits.per_login_and_address),
            (("login", login), self.limits.per_login),
            (("address", address), self.limits.per_address),
        ]

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.limits.window_seconds:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, login: str, address: str) -> int:
        """Seconds until a login from `address` for `login` may be tried; 0 if now."""
        now = self._clock()
        wait = 0.0
        with self._lock:
            for key, limit in self._keys(login, address):
                times = self._recent(key, now)
                if len(times) >= limit:
                    # the oldest failure that keeps the count at the limit must leave the window
                    oldest = times[len(times) - limit]
                    wait = max(wait, oldest + self.limits.window_seconds - now)
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, login: str, address: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) > self.MAX_KEYS:  # many addresses: forget the stale ones
                for key in list(self._failures):
                    self._recent(key, now)
            for key, _limit in self._keys(login, address):
                self._recent(key, now)
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, login: str, address: str) -> None:
        """A right password clears the count for this login from this address."""
        with self._lock:
            self._failures.pop(self._keys(login, address)[0][0], None)
