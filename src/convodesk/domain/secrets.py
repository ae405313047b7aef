"""A string type for secrets that never shows its value by accident.

`Secret` keeps the plain value for the code that needs it (`reveal()`), and masks it in
`repr`, `str` and f-strings, so a secret that slips into a log line or an exception message
shows as ``********``. `env_var` remembers the ``${VAR}`` a value came from, so that
`config export` can write the same reference back instead of the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MASK = "********"


@dataclass(frozen=True, slots=True)
class Secret:
    _value: str = field(repr=False)
    env_var: str | None = None

    def reveal(self) -> str:
        return self._value

    @property
    def is_mask(self) -> bool:
        """True when the value is the mask itself: "keep the secret that is stored"."""
        return self._value == MASK

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __bool__(self) -> bool:
        return bool(self._value)


class EnvStr(str):
    """A string that came from a ``${VAR}`` reference in the config file."""

    env_var: str

    def __new__(cls, value: str, env_var: str) -> EnvStr:
        obj = super().__new__(cls, value)
        obj.env_var = env_var
        return obj
