"""`send_concurrency` and `send_lease_seconds`: defaults, ranges, round trip."""

from __future__ import annotations

import pytest

from convodesk.domain import configurator


def test_defaults() -> None:
    config = configurator.validate({}).config
    assert config is not None
    assert (config.send_concurrency, config.send_lease_seconds) == (300, 60)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("send_concurrency", 0),
        ("send_concurrency", 1001),
        ("send_concurrency", "many"),
        ("send_lease_seconds", 4),
        ("send_lease_seconds", 3601),
        ("send_lease_seconds", 2.5),
    ],
)
def test_out_of_range_values_name_their_key(key: str, value: object) -> None:
    validation = configurator.validate({key: value})
    assert validation.config is None
    assert [p.path for p in validation.errors] == [key]


@pytest.mark.parametrize(
    "raw", [{"send_concurrency": 1, "send_lease_seconds": 5}, {"send_concurrency": 1000}]
)
def test_round_trip(raw: dict[str, int]) -> None:
    config = configurator.validate(raw).config
    assert config is not None
    dumped = configurator.dump(config, secrets="reveal")
    assert {k: dumped[k] for k in raw} == raw
    assert configurator.validate(dumped).config == config
    assert "send_lease_seconds" not in configurator.dump(
        configurator.validate({}).config or config, secrets="reveal"
    )
