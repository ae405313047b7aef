"""The top-level settings of the intake and the sender: defaults, ranges, round trip."""

from __future__ import annotations

import pytest

from convodesk.domain import configurator


def test_defaults() -> None:
    config = configurator.validate({}).config
    assert config is not None
    assert (config.callback_tolerance_seconds, config.callback_max_bytes) == (300, 1024 * 1024)
    assert (config.send_rate_per_app, config.send_rate_per_project) == (20, 800)
    assert (config.send_max_attempts, config.send_ttl_seconds, config.sqlite_synchronous) == (
        12,
        None,
        "NORMAL",
    )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("callback_tolerance_seconds", 5),
        ("callback_max_bytes", 10),
        ("sqlite_synchronous", "OFF"),
        ("send_rate_per_app", 0),
        ("send_rate_per_project", "fast"),
        ("send_max_attempts", 0),
        ("send_max_age_seconds", 1),
        ("send_ttl_seconds", 2),
    ],
)
def test_out_of_range_values_name_their_key(key: str, value: object) -> None:
    validation = configurator.validate({key: value})
    assert validation.config is None
    assert [p.path for p in validation.errors] == [key]


def test_round_trip_of_non_default_settings() -> None:
    raw = {
        "send_rate_per_app": 5,
        "send_ttl_seconds": 600,
        "sqlite_synchronous": "FULL",
        "callback_max_bytes": 65536,
    }
    config = configurator.validate(raw).config
    assert config is not None
    dumped = configurator.dump(config, secrets="reveal")
    assert {k: dumped[k] for k in raw} == raw
    assert configurator.validate(dumped).config == config
