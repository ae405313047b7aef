from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from convodesk.domain.retry import RetryPolicy

policy = RetryPolicy(base_seconds=1.0, cap_seconds=60.0, max_attempts=5, max_age_seconds=600)


@given(attempts=st.integers(1, 40), seed=st.integers(0, 1000))
def test_delay_grows_within_the_jitter_band_and_the_cap(attempts: int, seed: int) -> None:
    delay = policy.delay(attempts, rng=random.Random(seed))
    ceiling = min(60.0, 2.0 ** (attempts - 1))
    assert ceiling / 2 <= delay <= ceiling


@given(retry_after=st.floats(0.001, 3600), attempts=st.integers(1, 10))
def test_retry_after_is_never_undercut(retry_after: float, attempts: int) -> None:
    assert policy.delay(attempts, retry_after=retry_after) >= retry_after


def test_gives_up_after_max_attempts_or_age() -> None:
    assert not policy.gives_up(4, age_seconds=10, next_delay=8)
    assert policy.gives_up(5, age_seconds=10, next_delay=8)
    assert policy.gives_up(2, age_seconds=595, next_delay=8)
