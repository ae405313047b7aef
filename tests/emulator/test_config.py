from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from convodesk.emulator.config import EmulatorConfig, EmulatorConfigError, load_emulator_config

from .conftest import APP, PROJECT, config_dict

ISSUE_EXAMPLE = f"""
projects:
  - id: {PROJECT}
    region: eu                      # eu | us | br
    access_keys: [{{key_id: KEY-ID, key_secret: KEY-SECRET}}]
    rate_limit: 800                 # requests/s for the project
    apps:
      - id: {APP}
        processing_mode: DISPATCH   # or CONVERSATION
        channels: [WHATSAPP, SMS, MESSENGER]
        rate_limit: 20              # sends/s for the app
        webhooks:
          - target: http://127.0.0.1:8000/sms/sinchconversation/sinch-eu
            secret: WEBHOOK-SECRET
            triggers: [MESSAGE_INBOUND, MESSAGE_DELIVERY]
"""


def test_the_issue_example_loads(tmp_path: Path) -> None:
    path = tmp_path / "emulator.yaml"
    path.write_text(ISSUE_EXAMPLE)
    config = load_emulator_config(path)
    (project,) = config.projects
    assert project.region == "eu"
    assert project.rate_limit == 800
    (app,) = project.apps
    assert app.channels == ("WHATSAPP", "SMS", "MESSENGER")
    assert app.webhooks[0].secret == "WEBHOOK-SECRET"
    assert config.callback_retry.max_attempts == 6
    assert config.delivery_delays.read == 200
    assert config.token_ttl_seconds == 3600
    assert "WEBHOOK-SECRET" not in repr(config)
    assert "KEY-SECRET" not in repr(config)


def _problems(data: Any) -> list[tuple[str, str]]:
    with pytest.raises(EmulatorConfigError) as caught:
        EmulatorConfig.from_dict(data)
    return caught.value.problems


def test_errors_name_the_path_and_the_expected_form() -> None:
    data = config_dict("http://127.0.0.1:9")
    data["projects"][0]["apps"][1]["id"] = ""
    data["projects"][0]["apps"][0]["channels"] = ["WHATSAPP", "FAX"]
    data["projects"][0]["region"] = "ap"
    data["projects"][0]["apps"][0]["webhooks"][0]["triggers"] = []
    data["callback_retry"]["max_attempts"] = 0
    problems = dict(_problems(data))
    assert "projects[0].apps[1].id" in problems
    assert "expected" in problems["projects[0].apps[1].id"]
    assert "WHATSAPP" in problems["projects[0].apps[0].channels[1]"]
    assert problems["projects[0].region"] == "expected one of: eu, us, br"
    assert "projects[0].apps[0].webhooks[0].triggers" in problems
    assert "callback_retry.max_attempts" in problems


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda d: d.pop("projects"), "projects"),
        (lambda d: d["projects"][0].update(id="not-a-uuid"), "projects[0].id"),
        (lambda d: d["projects"][0].update(access_keys=[]), "projects[0].access_keys"),
        (lambda d: d["projects"][0].update(colour="red"), "projects[0].colour"),
        (
            lambda d: d["projects"][0]["apps"][0].update(processing_mode="BATCH"),
            "projects[0].apps[0].processing_mode",
        ),
        (
            lambda d: d["projects"][0]["apps"][0]["webhooks"][0].update(target="ftp://x"),
            "projects[0].apps[0].webhooks[0].target",
        ),
        (lambda d: d["projects"][1].update(id=PROJECT), "projects[1].id"),
        (lambda d: d["projects"][0]["apps"][1].update(id=APP), "projects[0].apps[1].id"),
        (lambda d: d["projects"][0].update(rate_limit="fast"), "projects[0].rate_limit"),
        (lambda d: d.update(delivery_delays_ms={"queued": -1}), "delivery_delays_ms.queued"),
    ],
)
def test_each_bad_line_is_reported_at_its_path(mutate: Any, path: str) -> None:
    data = config_dict("http://127.0.0.1:9")
    mutate(data)
    assert path in dict(_problems(data))


def test_the_message_lists_every_problem() -> None:
    data = config_dict("http://127.0.0.1:9")
    data["projects"][0]["region"] = "xx"
    data["projects"][1]["region"] = "yy"
    with pytest.raises(EmulatorConfigError) as caught:
        EmulatorConfig.from_dict(data)
    assert "projects[0].region: expected one of" in str(caught.value)
    assert "projects[1].region: expected one of" in str(caught.value)


def test_not_a_mapping_and_not_yaml(tmp_path: Path) -> None:
    assert _problems([1, 2]) == [("", "expected a mapping")]
    bad = tmp_path / "bad.yaml"
    bad.write_text("projects: [\n")
    with pytest.raises(EmulatorConfigError, match="not valid YAML at line"):
        load_emulator_config(bad)
    with pytest.raises(EmulatorConfigError, match="cannot read"):
        load_emulator_config(tmp_path / "missing.yaml")
