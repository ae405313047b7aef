"""The pieces of a web session that need no server: CSRF tokens, the login throttle, the
after-login redirect, and the derived key."""

from __future__ import annotations

import pytest

from convodesk.storage.crypto import SecretBox
from convodesk.web import sessions
from convodesk.web.sessions import LoginThrottle, ThrottleLimits


def test_csrf_token_is_bound_to_the_session_and_the_key() -> None:
    key, other_key = b"k" * 32, b"x" * 32
    token = sessions.csrf_token(key, "cds_session-one")
    assert token == sessions.csrf_token(key, "cds_session-one")
    assert token != sessions.csrf_token(key, "cds_session-two")
    assert token != sessions.csrf_token(other_key, "cds_session-one")
    assert "cds_session-one" not in token
    assert sessions.csrf_valid(key, "cds_session-one", token)
    assert sessions.csrf_valid(key, "cds_session-one", f" {token} ")
    for given in (None, "", token[:-1], sessions.csrf_token(key, "cds_session-two")):
        assert not sessions.csrf_valid(key, "cds_session-one", given)


def test_derived_key_is_stable_per_secret_and_purpose() -> None:
    box, same, other = SecretBox(["passphrase"]), SecretBox(["passphrase", "old"]), SecretBox(["x"])
    key = box.derive_key("web-session-csrf")
    assert len(key) == 32
    assert key == same.derive_key("web-session-csrf")  # every node with the key agrees
    assert key != box.derive_key("something-else")
    assert key != other.derive_key("web-session-csrf")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/admin/queues?x=1", "/admin/queues?x=1"),
        ("/", "/"),
        (None, "/"),
        ("", "/"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/ok\r\nSet-Cookie: x", "/"),
    ],
)
def test_only_local_paths_are_followed_after_the_login(target: str | None, expected: str) -> None:
    assert sessions.safe_next(target) == expected


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_blocks_a_login_and_address_pair_for_the_rest_of_the_window() -> None:
    clock = Clock()
    throttle = LoginThrottle(ThrottleLimits(window_seconds=600, per_login_and_address=3), clock)
    for _ in range(3):
        assert throttle.retry_after("ada", "10.0.0.1") == 0
        throttle.failed("ADA ", "10.0.0.1")  # the login is compared case-blind
        clock.now += 10
    assert throttle.retry_after("ada", "10.0.0.1") == 570  # now 1030; the first leaves at 1600
    assert throttle.retry_after("ada", "10.0.0.2") == 0  # another address may still try
    assert throttle.retry_after("bob", "10.0.0.1") == 0
    clock.now = 1600.5
    assert throttle.retry_after("ada", "10.0.0.1") == 0


def test_throttle_limits_per_login_across_addresses_and_per_address() -> None:
    clock = Clock()
    limits = ThrottleLimits(
        window_seconds=60, per_login_and_address=100, per_login=4, per_address=6
    )
    throttle = LoginThrottle(limits, clock)
    for n in range(4):
        throttle.failed("ada", f"10.0.0.{n}")
    assert throttle.retry_after("ada", "10.9.9.9") == 60
    for n in range(6):
        throttle.failed(f"user{n}", "10.1.1.1")
    assert throttle.retry_after("someone", "10.1.1.1") == 60
    assert throttle.retry_after("someone", "10.1.1.2") == 0


def test_success_clears_the_pair_but_not_the_login_count() -> None:
    clock = Clock()
    limits = ThrottleLimits(window_seconds=60, per_login_and_address=2, per_login=3)
    throttle = LoginThrottle(limits, clock)
    throttle.failed("ada", "10.0.0.1")
    throttle.failed("ada", "10.0.0.1")
    assert throttle.retry_after("ada", "10.0.0.1") > 0
    throttle.succeeded("ada", "10.0.0.1")
    assert throttle.retry_after("ada", "10.0.0.1") == 0
    throttle.failed("ada", "10.0.0.2")
    assert throttle.retry_after("ada", "10.0.0.3") > 0  # three failures for ada in the window


def test_throttle_forgets_stale_addresses_when_it_grows() -> None:
    clock = Clock()
    throttle = LoginThrottle(ThrottleLimits(window_seconds=10), clock)
    throttle.MAX_KEYS = 30
    for n in range(20):
        throttle.failed("x", f"10.0.{n}.1")
    clock.now += 11
    throttle.failed("y", "10.9.9.9")
    assert len(throttle._failures) == 3  # only y's three keys are left
