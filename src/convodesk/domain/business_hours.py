"""Whether a queue is open at a given moment (`BusinessHours` of the queue's configuration).

Ranges are minutes since midnight in the queue's time zone, start included, end excluded
(``24:00`` ends at midnight); a weekday without ranges is closed, and so is a date listed in
`closed_dates` (the local date). No business hours at all means always open.
"""

from __future__ import annotations

import functools
import zoneinfo
from datetime import datetime

from convodesk.domain.config_model import BusinessHours

WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


def is_open(hours: BusinessHours | None, when: datetime) -> bool:
    """`when` must be timezone-aware."""
    if hours is None:
        return True
    local = when.astimezone(_zone(hours.timezone))
    if local.date().isoformat() in hours.closed_dates:
        return False
    minute = local.hour * 60 + local.minute
    spans = hours.weekly.get(WEEKDAYS[local.weekday()], ())
    return any(start <= minute < end for start, end in spans)
