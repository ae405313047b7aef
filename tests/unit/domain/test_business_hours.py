"""Queue opening hours: `domain.business_hours.is_open`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from convodesk.domain.business_hours import is_open
from convodesk.domain.config_model import BusinessHours

STOCKHOLM = BusinessHours(
    timezone="Europe/Stockholm",
    weekly={"mon": ((8 * 60, 12 * 60), (13 * 60, 17 * 60)), "sat": ((10 * 60, 24 * 60),)},
    closed_dates=("2024-06-10",),
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2024-06-17T08:00:00+02:00", True),  # Monday, opening minute
        ("2024-06-17T07:59:59+02:00", False),
        ("2024-06-17T12:00:00+02:00", False),  # lunch: the end is not included
        ("2024-06-17T13:30:00+02:00", True),
        ("2024-06-17T06:30:00+00:00", True),  # 08:30 in Stockholm (summer time)
        ("2024-06-18T10:00:00+02:00", False),  # Tuesday: not listed, closed
        ("2024-06-22T23:59:00+02:00", True),  # Saturday until midnight
        ("2024-06-10T09:00:00+02:00", False),  # a closed date (a Monday)
        ("2024-01-15T07:30:00+00:00", True),  # 08:30 in winter (UTC+1)
    ],
)
def test_is_open(when: str, expected: bool) -> None:
    assert is_open(STOCKHOLM, at(when)) is expected


def test_no_business_hours_is_always_open() -> None:
    assert is_open(None, at("2024-06-18T03:00:00+00:00"))


def test_a_closed_date_is_the_local_date() -> None:
    # 23:30 UTC on the 9th is already the 10th in Stockholm: closed
    hours = BusinessHours(
        timezone="Europe/Stockholm",
        weekly=dict.fromkeys(("mon", "sun"), ((0, 24 * 60),)),
        closed_dates=("2024-06-10",),
    )
    assert not is_open(hours, at("2024-06-09T23:30:00+00:00"))
    assert is_open(hours, at("2024-06-09T21:30:00+00:00"))
