"""The token-bucket rule: no one-second window over the limit, whatever the arrivals."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from convodesk.domain.token_bucket import (
    DEFAULT_APP_RATE,
    DEFAULT_PROJECT_RATE,
    Bucket,
    refill_rate,
    send_buckets,
    take,
)

# Times live in [1000, 2000) or around today's epoch: any two of them are within a factor of
# two of each other, so their float difference is exact and the window check below is too.
BASES = st.sampled_from([1000.0, 1_764_000_000.0]) | st.floats(1000.0, 1900.0)
RATES = (
    st.sampled_from([DEFAULT_APP_RATE, DEFAULT_PROJECT_RATE, 1.0, 2.5, 0.5, 0.3, 20.000001])
    | st.floats(0.05, 1000.0)
    | st.integers(1, 1000).map(float)
)


@st.composite
def limits(draw: st.DrawFn) -> tuple[float, float]:
    rate = draw(RATES)
    if rate < 1:
        return rate, 1.0
    allowance = math.floor(rate)
    burst = draw(st.sampled_from([1.0, float(allowance)]) | st.floats(1.0, float(allowance)))
    return rate, burst


def window(rate: float) -> tuple[float, int]:
    """The window length and the most grants it may hold."""
    return (1.0, math.floor(rate)) if rate >= 1 else (1.0 / rate, 1)


def max_in_window(times: list[float], length: float) -> int:
    """The most of ``times`` (sorted) inside any half-open window [s, s + length)."""
    best, first = 0, 0
    for last, t in enumerate(times):
        while t - times[first] >= length:
            first += 1
        best = max(best, last - first + 1)
    return best


def run(rate: float, burst: float, arrivals: list[float]) -> list[float]:
    """Feed arrival times to a full bucket; return the times of the grants."""
    tokens, updated = burst, 0.0
    granted = []
    for now in arrivals:
        result = take(tokens, updated, now, rate, burst)
        assert result.updated_at >= updated
        tokens, updated = result.tokens, result.updated_at
        assert 0.0 <= tokens <= burst
        if result.granted:
            granted.append(result.updated_at)
    return granted


def greedy(rate: float, burst: float, start: float, seconds: float) -> list[float]:
    """One caller that retries exactly when told to; every retry must succeed."""
    tokens, updated, now = burst, 0.0, start
    granted = []
    while now < start + seconds:
        result = take(tokens, updated, now, rate, burst)
        tokens, updated = result.tokens, result.updated_at
        if result.granted:
            granted.append(now)
        else:
            retry = take(tokens, updated, now + result.wait, rate, burst)
            assert retry.granted, (now, result)
            now += result.wait
    return granted


@st.composite
def arrivals(draw: st.DrawFn, rate: float) -> list[float]:
    """Arrival times, sorted: bursts, random gaps, and gaps of about one send's spacing."""
    spacing = 1.0 / rate
    factors = st.lists(
        st.just(0.0)
        | st.just(1.0)
        | st.floats(0.0, 1.5)
        | st.floats(0.99, 1.01)
        | st.floats(0.0, 0.1)
        | st.floats(0.0, 50.0),
        min_size=1,
        max_size=400,
    )
    start = now = draw(BASES)
    times = []
    for factor in draw(factors):
        now += factor * spacing
        if now >= 1.9 * start:  # every pair within a factor of two: exact differences
            break
        times.append(now)
    return times


@settings(max_examples=300)
@given(limit=limits(), data=st.data())
def test_no_window_holds_more_than_the_limit(
    limit: tuple[float, float], data: st.DataObject
) -> None:
    rate, burst = limit
    check_windows(rate, burst, data.draw(arrivals(rate)))


@pytest.mark.parametrize(
    ("rate", "burst", "gap", "count"),
    [
        (20.0, 1.0, 0.05, 100),
        (2.5, 1.0, 0.4, 30),
        (2.5, 1.0, 0.4 + 1e-6, 30),
        (20.0, 20.0, 0.0, 30),
        (800.0, 1.0, 1 / 800 + 1e-7, 3000),
        (0.5, 1.0, 2.0 + 1e-6, 10),
    ],
)
def test_no_window_holds_more_than_the_limit_at_even_spacing(
    rate: float, burst: float, gap: float, count: int
) -> None:
    check_windows(rate, burst, [1000.0 + i * gap for i in range(count)])
    check_windows(rate, burst, [1000.0 + (i // 30) * 1.0 + i * gap for i in range(count)])


def check_windows(rate: float, burst: float, times: list[float]) -> None:
    granted = run(rate, burst, times)
    length, allowed = window(rate)
    assert max_in_window(granted, length) <= allowed <= max(rate, 1.0)


@settings(max_examples=100)
@given(limit=limits(), base=BASES)
@example(limit=(DEFAULT_PROJECT_RATE, 1.0), base=1_764_000_000.0)
@example(limit=(DEFAULT_APP_RATE, 1.0), base=1_764_000_000.0)
def test_a_caller_that_waits_as_told_gets_the_full_rate_and_no_more(
    limit: tuple[float, float], base: float
) -> None:
    rate, burst = limit
    seconds = max(3.0, 3.0 / rate)
    granted = greedy(rate, burst, base, seconds)
    length, allowed = window(rate)
    assert max_in_window(granted, length) <= allowed
    # burst at once, then refill_rate a second (less the 1 µs pad on each wait)
    expected = burst + refill_rate(rate, burst) * seconds
    assert len(granted) >= math.floor(expected * 0.99) - 1


@given(
    limit=limits(),
    level=st.floats(0.0, 1.0),
    updated=st.floats(1000.0, 1900.0),
    offset=st.floats(-10.0, 10.0),
)
def test_a_refusal_says_how_long_to_wait_and_that_is_enough(
    limit: tuple[float, float], level: float, updated: float, offset: float
) -> None:
    rate, burst = limit
    now = updated + offset
    result = take(level, updated, now, rate, burst)
    assume(not result.granted)
    assert result.wait > 0
    assert result.updated_at == max(now, updated)
    assert result.tokens < 1.0
    if now <= updated:
        assert result.tokens == level
    # the retry works on the stored state whether or not the refusal was written back
    assert take(level, updated, now + result.wait, rate, burst).granted
    assert take(result.tokens, result.updated_at, now + result.wait, rate, burst).granted
    # and not much earlier
    if result.wait > 1e-3:
        assert not take(level, updated, now + result.wait - 1e-3, rate, burst).granted


def test_evenly_spaced_by_default() -> None:
    t = 1000.0
    first = take(1.0, 0.0, t, 20.0, 1.0)
    assert first.granted
    assert first.tokens == 0.0
    refused = take(first.tokens, first.updated_at, t + 0.01, 20.0, 1.0)
    assert not refused.granted
    assert refused.wait == pytest.approx(0.04, abs=1e-5)
    assert take(first.tokens, first.updated_at, t + 0.05 + 1e-6, 20.0, 1.0).granted


def test_a_clock_that_steps_back_waits_and_never_rewinds_the_bucket() -> None:
    result = take(0.0, 2000.0, 1999.0, 20.0, 1.0)
    assert not result.granted
    assert result.updated_at == 2000.0
    assert result.wait == pytest.approx(1.05, abs=1e-5)


def test_a_full_bucket_lets_burst_through_at_once() -> None:
    tokens, updated = 5.0, 0.0
    grants = 0
    for _ in range(10):
        result = take(tokens, updated, 1000.0, 20.0, 5.0)
        tokens, updated = result.tokens, result.updated_at
        grants += result.granted
    assert grants == 5
    assert refill_rate(20.0, 5.0) == 16.0


def test_a_level_above_a_lowered_burst_is_capped() -> None:
    result = take(20.0, 1000.0, 1000.0, 20.0, 1.0)
    assert result.granted
    assert result.tokens == 0.0


@pytest.mark.parametrize(
    ("rate", "burst", "refill"),
    [(20.0, 1.0, 20.0), (800.0, 1.0, 800.0), (2.5, 1.0, 2.0), (20.0, 20.0, 1.0), (0.5, 1.0, 0.5)],
)
def test_refill_rate(rate: float, burst: float, refill: float) -> None:
    assert refill_rate(rate, burst) == refill


@pytest.mark.parametrize(
    ("rate", "burst"),
    [
        (0.0, 1.0),
        (-1.0, 1.0),
        (math.nan, 1.0),
        (math.inf, 1.0),
        (20.0, 0.5),
        (20.0, 21.0),
        (20.0, math.nan),
        (0.5, 2.0),
    ],
)
def test_bad_limits_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match=r"rate|burst"):
        Bucket("app:x", rate, burst)


def test_the_send_buckets() -> None:
    app, project = send_buckets("01APP", "p-1")
    assert app == Bucket("app:01APP", DEFAULT_APP_RATE, 1.0)
    assert project == Bucket("project:p-1", DEFAULT_PROJECT_RATE, 1.0)
    assert DEFAULT_APP_RATE == 20.0
    assert DEFAULT_PROJECT_RATE == 800.0
    with pytest.raises(ValueError, match="key"):
        Bucket("", 1.0)
