"""Sinch callback fixtures (tests/fixtures/sinch): load the exact bytes, never re-serialised.

A fixture is named ``{trigger_lowercase}__{variant}.json``; the part before the double
underscore is the trigger in lower case (``message_inbound__text`` is a MESSAGE_INBOUND).
The bytes are what a test signs and posts, so :func:`load_fixture` returns them untouched, after
checking they are JSON (a broken fixture fails here, not as a puzzling 400 later).
"""

from __future__ import annotations

import json
from pathlib import Path

FIXTURE_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "sinch"
SEPARATOR = "__"


class FixtureError(Exception):
    """An unknown fixture name, or a fixture file that is not valid JSON."""


def all_fixture_names() -> list[str]:
    """Every fixture, sorted, without the ``.json`` suffix."""
    return sorted(path.stem for path in FIXTURE_DIR.glob("*.json"))


def load_fixture(name: str) -> bytes:
    """The raw bytes of fixture ``name`` (with or without ``.json``)."""
    stem = name.removesuffix(".json")
    path = FIXTURE_DIR / f"{stem}.json"
    if SEPARATOR not in stem or "/" in stem or not path.is_file():
        raise FixtureError(
            f"no Sinch fixture {name!r}; available: {', '.join(all_fixture_names())}"
        )
    raw = path.read_bytes()
    try:
        json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FixtureError(f"fixture {stem} is not valid JSON: {exc}") from exc
    return raw


def fixture_trigger(name: str) -> str:
    """The trigger a fixture's name declares: ``message_delivery__read`` -> MESSAGE_DELIVERY."""
    prefix, separator, variant = name.removesuffix(".json").partition(SEPARATOR)
    if not separator or not prefix or not variant:
        raise FixtureError(f"fixture name {name!r} is not trigger__variant")
    return prefix.upper()
