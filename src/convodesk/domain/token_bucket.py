"""Token-bucket arithmetic for the send rate limits, as a pure function (no clock, no I/O).

`take` is the whole rule; `storage.rate_limits` keeps one bucket per key in the database and
calls it under a row lock, so that every worker process shares the same buckets.

Parameters of a bucket (`Bucket`):

- ``rate`` is the *limit*: no window of one second may see more than ``rate`` sends.
- ``burst`` is the bucket's capacity: how many sends may go back to back after a quiet spell.
  Default 1 (sends evenly spaced).

The bucket does **not** refill at ``rate``. A bucket of capacity ``b`` refilled at ``q``
tokens a second lets ``b`` sends through at once and then ``q`` a second, so one second can
see nearly ``b + q`` of them: Sinch's own buckets (and the emulator's) have capacity = rate,
and a client copying that design would send up to twice the limit in one second. Here::

    A = floor(rate)          the allowance: the most sends a 1-second window may hold
    q = A + 1 - burst        the refill, tokens per second  (1 <= burst <= A)

For ``rate < 1`` there is no whole send per second to allow; such a bucket has ``burst`` 1
and ``q = rate``, and the guarantee reads "at most one send in any ``1/rate`` seconds".

Guarantee: **any half-open window [s, s + 1) of one second holds at most floor(rate)
grants** (so never more than ``rate``), and any window of length T fewer than
``burst + q·T``.

Proof. Let N grants happen at times t1 <= ... <= tN inside a window of length T. Before the
first, the level is at most ``burst`` (the cap). Between t1 and tN the bucket gains at most
``q·(tN - t1)`` (the cap only ever removes tokens), and it loses one token per grant. The
N-th grant needs a whole token still there::

    1 <= burst - (N - 1) + q·(tN - t1)   =>   N <= burst + q·(tN - t1) < burst + q·T

since tN - t1 < T and q > 0. With T = 1 and q = A + 1 - burst: N < A + 1, so N <= A <= rate.
(For rate < 1, T = 1/rate: N < 2.) The times are *effective* times, max(now, stored
updated_at), which never go backwards, so a clock that steps back (or a node whose clock is
behind another's) only delays grants. A change of rate or burst applies from the next call.

Throughput. With burst 1 the bucket sustains ``A`` sends a second, and nothing better is
possible: over a long run the average number of sends per one-second window equals the send
rate, so a rate above A would put more than A sends into some window. A non-integer limit
therefore loses its fraction (2.5/s runs at 2/s), and every unit of burst above 1 costs one
send a second of sustained rate (rate 20, burst 5: 16/s). Integer limits and burst 1, the
defaults, lose nothing.

Floating point. Two guards keep rounding on the safe side. The refill runs a hair slow,
``q·(1 - 1e-9)``, so the bound holds with a margin: an extra grant (N = A + 1 in under a
second) would need a rounding error of about ``q·1e-9`` tokens, while each addition errs by
about 1e-16 of the level. And a refused caller is told to wait 1 µs longer than the exact
deficit, so that its retry at ``now + wait``, rounded to a float timestamp (epoch seconds
have a resolution of about 0.24 µs), finds the whole token. The throughput cost is 1 part in
a billion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, NamedTuple

DEFAULT_APP_RATE: Final = 20.0
"""Sends per second per Sinch app (Sinch drains each app's queue at 20 msg/s by default)."""
DEFAULT_PROJECT_RATE: Final = 800.0
"""Requests per second per Sinch project."""

SLOWDOWN: Final = 1e-9
"""The refill runs at refill_rate·(1 - SLOWDOWN), so rounding cannot let an extra send through."""
WAIT_PAD: Final = 1e-6
"""Seconds added to every wait, so that a retry at exactly ``now + wait`` succeeds."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """One limit: at most ``rate`` sends in any second for ``key``, ``burst`` back to back.

    ``key`` names the shared bucket, for example ``app:{app_id}`` or
    ``project:{project_id}`` (see `send_buckets`).
    """

    key: str
    rate: float
    burst: float = 1.0

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("a bucket needs a key")
        refill_rate(self.rate, self.burst)  # validates

    @property
    def refill(self) -> float:
        return refill_rate(self.rate, self.burst)


class Take(NamedTuple):
    """The outcome of `take`: the bucket's new state, and how long to wait if refused."""

    granted: bool
    tokens: float
    updated_at: float
    wait: float


def refill_rate(rate: float, burst: float) -> float:
    """Tokens per second for a bucket whose 1-second windows may hold at most ``rate`` sends.

    ``floor(rate) + 1 - burst``, or ``rate`` itself below 1/s (module docstring). Raises
    ValueError for a rate that is not a positive number or a burst outside 1..floor(rate).
    """
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"rate must be a positive number, not {rate!r}")
    if not math.isfinite(burst):
        raise ValueError(f"burst must be a number, not {burst!r}")
    if rate < 1:
        if burst != 1:
            raise ValueError(f"a rate below 1/s ({rate}) allows no burst above 1")
        return rate
    allowance = math.floor(rate)
    if not 1 <= burst <= allowance:
        raise ValueError(f"burst must be between 1 and floor(rate) = {allowance}, not {burst}")
    return allowance + 1 - burst


def take(tokens: float, updated_at: float, now: float, rate: float, burst: float) -> Take:
    """Take one token from a bucket holding ``tokens`` as of ``updated_at``, at time ``now``.

    Steps:

    1. The effective time is ``max(now, updated_at)``: the bucket's clock never goes back.
    2. Refill for the time since ``updated_at`` at ``refill_rate(rate, burst)`` (a hair
       slower, see the module docstring), capped at ``burst``.
    3. A whole token there: take it; ``granted`` is True and ``wait`` 0.0. Otherwise take
       nothing; ``wait`` is the number of seconds, counted from ``now``, after which a token
       will be there if nobody else takes it first.

    The returned state (``tokens``, ``updated_at``) is the bucket after the call, refused or
    not; storing it or keeping the old state after a refusal are equivalent.
    """
    refill = refill_rate(rate, burst) * (1.0 - SLOWDOWN)
    effective = max(now, updated_at)
    level = min(burst, tokens + (effective - updated_at) * refill)
    if level >= 1.0:
        return Take(True, level - 1.0, effective, 0.0)
    wait = (effective - now) + (1.0 - level) / refill + WAIT_PAD
    return Take(False, level, effective, wait)


def send_buckets(
    app_id: str,
    project_id: str,
    *,
    app_rate: float = DEFAULT_APP_RATE,
    project_rate: float = DEFAULT_PROJECT_RATE,
) -> tuple[Bucket, Bucket]:
    """The two buckets one send to Sinch must take a token from: its app's and its project's."""
    return Bucket(f"app:{app_id}", app_rate), Bucket(f"project:{project_id}", project_rate)
