from __future__ import annotations

import pytest

from convodesk.emulator.ratelimit import TokenBucket
from convodesk.sinch.ids import is_ulid, new_ulid, ulid_time


def test_ulid_is_26_crockford_chars_with_its_time_prefix() -> None:
    ulid = new_ulid(1718000000.123)
    assert len(ulid) == 26
    assert is_ulid(ulid)
    assert ulid_time(ulid) == pytest.approx(1718000000.123)
    assert len({new_ulid() for _ in range(1000)}) == 1000


def test_ulid_time_decodes_sinch_examples() -> None:
    # reference section 8: the prefix of Sinch's example message id is its accepted_time
    assert ulid_time("01EQBC1A3BEK731GY4YXEN0C2R") == pytest.approx(1605625751.659)
    with pytest.raises(ValueError, match="not a ULID"):
        ulid_time("not-a-ulid")


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = FakeMonotonic()
    bucket = TokenBucket(10, clock=clock)
    assert [bucket.take() for _ in range(10)] == [0.0] * 10
    wait = bucket.take()
    assert wait == pytest.approx(0.1)
    clock.now += 0.1
    assert bucket.take() == 0.0
    assert bucket.take() > 0
    clock.now += 5
    assert sum(1 for _ in range(20) if bucket.take() == 0.0) == 10


def test_token_bucket_refuses_a_non_positive_rate() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0)
