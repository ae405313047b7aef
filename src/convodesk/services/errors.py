"""Errors of the use-case layer. `web/errors.py` turns each into one HTTP answer; the CLI
turns each into a message and an exit code.

ServiceError
 +-- ForbiddenError         the caller may not do this (403)
 +-- NotFoundError          the named resource does not exist (404)
 +-- ConflictError          it exists already, or the request contradicts itself (409)
 +-- InvalidConfigError     the change breaks a configurator rule; carries the problems (422)
      +-- InvalidRequestError  a request body (a reply, a selection) is not valid (422)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from convodesk.domain.config_model import Problem


class ServiceError(Exception):
    """The request cannot be carried out. `data` holds named fields that the answer carries
    beside the message (e.g. the templates to send instead), JSON-ready."""

    def __init__(self, *args: object, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(*args)
        self.data = dict(data or {})


class ForbiddenError(ServiceError):
    """The caller may not do this (an action for agents, called with a token of no agent)."""


class NotFoundError(ServiceError):
    """The named resource does not exist."""


class ConflictError(ServiceError):
    """The resource exists already, or the request contradicts the path it was sent to."""


class InvalidConfigError(ServiceError):
    """The change would break a configurator rule."""

    def __init__(
        self,
        problems: list[Problem] | tuple[Problem, ...],
        *,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__("; ".join(str(p) for p in problems), data=data)
        self.problems = tuple(problems)


class InvalidRequestError(InvalidConfigError):
    """The request body is not valid; `problems` name its fields."""
