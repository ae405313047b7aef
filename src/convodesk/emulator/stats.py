"""Send counts per app and per project, measured where Sinch would measure them.

For every app and every project the emulator counts the ``messages:send`` calls it accepted
and those it answered 429, and checks the accepted ones against the configured limit (the
app's or project's ``rate_limit``) in two ways:

- ``max_in_any_second``: the most accepted sends in any one-second window, sliding (a
  half-open window ``[s, s + 1)`` starting anywhere): the figure the sender's token buckets
  promise to keep at or below ``floor(limit)`` (docs/reference/rate-limits.md);
- ``intervals_over_limit``: how many whole wall-clock seconds (``[k, k + 1)`` of the
  emulator's clock) held more accepted sends than the limit.

Cost per accepted send: an append and amortised O(1) pops on a deque holding the last second's
acceptance times, and a few integer operations; no allocation beyond the deque's. Everything
runs on the emulator's event loop, so nothing is locked.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Any


class Counter:
    """The counts of one app or one project."""

    __slots__ = (
        "_in_second",
        "_second",
        "_window",
        "accepted",
        "intervals_over_limit",
        "limit",
        "max_in_any_second",
        "rejected_429",
    )

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.accepted = 0
        self.rejected_429 = 0
        self.max_in_any_second = 0
        self.intervals_over_limit = 0
        self._window: deque[float] = deque()  # acceptance times of the last second
        self._second = -1  # the wall-clock second being counted, floor(now)
        self._in_second = 0  # accepted sends in it so far

    def accept(self, now: float) -> None:
        self.accepted += 1
        window = self._window
        window.append(now)
        edge = now - 1.0
        while window[0] <= edge:  # a time at least 1 s before now is outside [now - 1, now]
            window.popleft()
        if len(window) > self.max_in_any_second:
            self.max_in_any_second = len(window)
        second = math.floor(now)
        if second != self._second:
            self._second, self._in_second = second, 0
        self._in_second += 1
        # Counted once, when the second's count first goes over the limit.
        if self._in_second > self.limit >= self._in_second - 1:
            self.intervals_over_limit += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "limit": int(self.limit) if float(self.limit).is_integer() else self.limit,
            "accepted": self.accepted,
            "rejected_429": self.rejected_429,
            "max_in_any_second": self.max_in_any_second,
            "intervals_over_limit": self.intervals_over_limit,
        }


class SendStats:
    """`Counter`s for the configured apps and projects; unknown ids are ignored."""

    def __init__(
        self,
        apps: Iterable[tuple[str, str, float]],
        projects: Iterable[tuple[str, float]],
    ) -> None:
        """``apps`` as (app id, project id, limit), ``projects`` as (project id, limit)."""
        apps = list(apps)
        self._app_project = {app_id: project_id for app_id, project_id, _ in apps}
        self._app_limits = {app_id: limit for app_id, _, limit in apps}
        self._project_limits = dict(projects)
        self.reset()

    def reset(self) -> None:
        self.apps = {a: Counter(limit) for a, limit in self._app_limits.items()}
        self.projects = {p: Counter(limit) for p, limit in self._project_limits.items()}

    def accepted(self, app_id: str, project_id: str, now: float) -> None:
        """A send accepted at ``now`` (epoch seconds, the emulator's clock)."""
        self.apps[app_id].accept(now)
        self.projects[project_id].accept(now)

    def rejected(self, app_id: str | None, project_id: str) -> None:
        """A send answered 429; ``app_id`` None when the request named no known app."""
        project = self.projects.get(project_id)
        if project is not None:
            project.rejected_429 += 1
        if app_id is not None and self._app_project.get(app_id) == project_id:
            self.apps[app_id].rejected_429 += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "apps": {
                app_id: {"project_id": self._app_project[app_id], **counter.to_json()}
                for app_id, counter in self.apps.items()
            },
            "projects": {p: counter.to_json() for p, counter in self.projects.items()},
        }
