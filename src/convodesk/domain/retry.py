"""When to try a failed send again: a small pure policy, tested on its own.

Exponential backoff with full jitter: attempt n (1-based) waits a random time in
``[base * 2**(n-1) / 2, base * 2**(n-1)]``, capped at `cap`. A server that says
``Retry-After`` is obeyed (never less than what it asked). After `max_attempts` attempts, or
once the message is older than `max_age_seconds`, the message goes to the dead letters
instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    base_seconds: float = 1.0
    cap_seconds: float = 300.0
    max_attempts: int = 12
    max_age_seconds: float = 24 * 3600.0

    def delay(
        self, attempts: int, *, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Seconds to wait after the `attempts`-th failed attempt."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** max(0, attempts - 1))
        jittered = (rng or random).uniform(ceiling / 2, ceiling)
        if retry_after is not None and retry_after > 0:
            return retry_after
        return jittered

    def gives_up(self, attempts: int, *, age_seconds: float, next_delay: float) -> bool:
        """True when another attempt is not allowed: too many, or it would come too late."""
        return attempts >= self.max_attempts or age_seconds + next_delay > self.max_age_seconds
