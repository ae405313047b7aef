"""Wrap-up codes in the configuration: `chat_settings.wrapup_codes`."""

from __future__ import annotations

from typing import Any

import pytest

from convodesk.domain import configurator
from tests.unit.domain.test_configurator import error_at, sample, valid


def with_codes(codes: Any) -> dict[str, Any]:
    raw = sample()
    raw["chat_settings"] = {"wrapup_codes": codes}
    return raw


def test_codes_are_read_in_order_and_dumped_back() -> None:
    config = valid(with_codes(["resolved", "follow-up", "Sale closed"]))
    assert config.chat_settings.wrapup_codes == ("resolved", "follow-up", "Sale closed")
    dumped = configurator.dump(config, secrets="reveal")
    assert dumped["chat_settings"]["wrapup_codes"] == ["resolved", "follow-up", "Sale closed"]
    assert valid(dumped).chat_settings == config.chat_settings


def test_no_codes_by_default() -> None:
    raw = sample()
    raw.pop("chat_settings", None)
    assert valid(raw).chat_settings.wrapup_codes == ()
    assert "wrapup_codes" not in configurator.dump(valid(raw), secrets="reveal").get(
        "chat_settings", {}
    )


@pytest.mark.parametrize(
    ("codes", "path", "message"),
    [
        ("resolved", "chat_settings.wrapup_codes", "expected a list of wrap-up codes (texts)"),
        (["ok", 3], "chat_settings.wrapup_codes[1]", "expected a non-empty text, got 3"),
        (["ok", "  "], "chat_settings.wrapup_codes[1]", "expected a non-empty text, got '  '"),
        (
            [" padded"],
            "chat_settings.wrapup_codes[0]",
            "expected at most 100 characters without leading or trailing spaces, got ' padded'",
        ),
        (["ok", "ok"], "chat_settings.wrapup_codes[1]", "'ok' is listed twice"),
    ],
)
def test_bad_codes_name_their_path(codes: Any, path: str, message: str) -> None:
    assert error_at(with_codes(codes), path).startswith(message)


def test_a_code_of_more_than_100_characters_is_refused() -> None:
    message = error_at(with_codes(["x" * 101]), "chat_settings.wrapup_codes[0]")
    assert message.startswith("expected at most 100 characters")
