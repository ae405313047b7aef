"""Token buckets for the per-project request rate and the per-app send rate."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens a second, holding at most ``burst`` (default: one second's worth).

    `take` spends one token and returns 0.0, or spends nothing and returns how many seconds
    until a token is there, which is what a 429's Retry-After should say.
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.capacity = max(1.0, burst if burst is not None else rate)
        self._clock = clock
        self._tokens = self.capacity
        self._stamp = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        with self._lock:
            now = self._clock()
            elapsed = now - self._stamp
            if elapsed > 0:
                self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)
                self._stamp = now
            if self._tokens >= 1.0 - 1e-9:  # float refills land a hair under whole tokens
                self._tokens = max(0.0, self._tokens - 1.0)
                return 0.0
            return (1.0 - self._tokens) / self.rate

    def refund(self) -> None:
        """Give back a token taken for a request that was refused for another reason."""
        with self._lock:
            self._tokens = min(self.capacity, self._tokens + 1.0)

    def reset(self) -> None:
        with self._lock:
            self._tokens = self.capacity
            self._stamp = self._clock()
