"""`convodesk doctor` against the emulator: each finding it exists for, and the CLI."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from convodesk.domain import configurator
from convodesk.domain.config_model import SystemConfig
from convodesk.emulator.config import EmulatorConfig
from convodesk.emulator.server import running_emulator
from convodesk.services.doctor import Finding, diagnose, exit_code
from tests.integration.test_cli import free_port
from tests.support.apps import APP_EU, APP_US, PROJECT

PROJECT_US = "9d0e1f2a-3b4c-4d5e-8f60-718293a4b5c6"
PUBLIC = "https://cc.example.test"
TRIGGERS = ["MESSAGE_INBOUND", "MESSAGE_DELIVERY"]


def emulator_dict() -> dict[str, Any]:
    def app(app_id: str, channels: list[str], service: str, secret: str) -> dict[str, Any]:
        return {
            "id": app_id,
            "processing_mode": "DISPATCH",
            "channels": channels,
            "webhooks": [
                {
                    "target": f"{PUBLIC}/sms/sinchconversation/{service}",
                    "secret": secret,
                    "triggers": list(TRIGGERS),
                }
            ],
        }

    return {
        "projects": [
            {
                "id": PROJECT,
                "region": "eu",
                "access_keys": [{"key_id": "KEY-EU", "key_secret": "key-secret-eu"}],
                "apps": [app(APP_EU, ["WHATSAPP", "MESSENGER"], "sinch-eu", "hook-secret-eu")],
            },
            {
                "id": PROJECT_US,
                "region": "us",
                "access_keys": [{"key_id": "KEY-US", "key_secret": "key-secret-us"}],
                "apps": [app(APP_US, ["SMS"], "all", "hook-secret-us")],
            },
        ]
    }


def convodesk_dict(emulator_url: str) -> dict[str, Any]:
    def service(name: str, region: str, project: str, key: str, app: str) -> dict[str, Any]:
        return {
            "name": name,
            "service_connection": f"{emulator_url}/{region}/v1/projects/{project}/messages:send",
            "authentication": [
                {"auth_id": f"{key}@{app}", "password": f"key-secret-{region}"},
                {"auth_id": "webhook", "password": f"hook-secret-{region}", "triggers": TRIGGERS},
            ],
        }

    return {
        "public_base_url": PUBLIC,
        "allow_custom_endpoints": True,
        "oauth_token_url": f"{emulator_url}/oauth2/token",
        "messaging_services": [
            service("sinch-eu", "eu", PROJECT, "KEY-EU", APP_EU),
            service("sinch-us", "us", PROJECT_US, "KEY-US", APP_US),
        ],
        "queues": [
            {"name": "whatsapp", "addresses": [f"{APP_EU}@whatsapp.sinchconversation.com"]},
            {
                "name": "sms-us",
                "addresses": [f"{APP_US}@sms.sinchconversation.com"],
                "sms_sender_id": "+12025550143",
            },
        ],
    }


@pytest.fixture
def emulator_url() -> Iterator[str]:
    """A running emulator; tests reconfigure what Sinch holds through `emulated`."""
    port = free_port()
    with running_emulator(EmulatorConfig.from_dict(emulator_dict()), port=port) as emulator:
        yield emulator.base_url


def run(raw: dict[str, Any]) -> list[Finding]:
    validation = configurator.validate(raw)
    assert validation.config is not None, validation.errors
    config: SystemConfig = validation.config
    return asyncio.run(diagnose(config))


def failures(findings: list[Finding]) -> list[str]:
    return [f"{f.subject}: {f.message}" for f in findings if f.level == "fail"]


def with_emulator(emulator: dict[str, Any]) -> Iterator[str]:
    port = free_port()
    with running_emulator(EmulatorConfig.from_dict(emulator), port=port) as running:
        yield running.base_url


def test_a_matching_configuration_passes(emulator_url: str) -> None:
    findings = run(convodesk_dict(emulator_url))
    assert failures(findings) == []
    assert exit_code(findings) == 0
    lines = [str(f) for f in findings]
    assert "ok    sinch-eu: access key KEY-EU gets a token" in lines
    assert f"ok    sinch-eu app {APP_EU}: exists ({APP_EU}), processing mode DISPATCH" in lines
    # The us app's webhook points at /all, which is us too.
    us_hooks = [line for line in lines if line.startswith(f"ok    sinch-us app {APP_US}: webhook")]
    assert len(us_hooks) == 1
    assert us_hooks[0].endswith("/sms/sinchconversation/all) has the service's secret and triggers")


def test_a_wrong_key_secret_fails_and_skips_that_key_s_apps(emulator_url: str) -> None:
    raw = convodesk_dict(emulator_url)
    raw["messaging_services"][0]["authentication"][0]["password"] = "not-the-secret"
    findings = run(raw)
    assert exit_code(findings) == 1
    found = failures(findings)
    assert any("access key KEY-EU" in f and "key id or key secret is wrong" in f for f in found)
    assert any(APP_EU in f and "its access key does not work" in f for f in found)
    assert not any("sinch-us" in f for f in found)
    assert not any("not-the-secret" in str(f) for f in findings)


def test_an_app_in_another_region_is_not_found(emulator_url: str) -> None:
    raw = convodesk_dict(emulator_url)
    # The eu key and project, but the us region: the app does not exist there.
    eu = raw["messaging_services"][0]
    eu["service_connection"] = eu["service_connection"].replace("/eu/", "/us/")
    found = failures(run(raw))
    assert found, "an app in the wrong region must fail"
    assert any(APP_EU in f for f in found)


def test_a_queue_address_on_a_channel_the_app_lacks_fails(emulator_url: str) -> None:
    raw = convodesk_dict(emulator_url)
    raw["queues"].append({"name": "line", "addresses": [f"{APP_EU}@line.sinchconversation.com"]})
    found = failures(run(raw))
    assert found == [
        f"sinch-eu app {APP_EU}: queue line address {APP_EU}@line.sinchconversation.com: "
        "the app has no LINE channel (its channels: MESSENGER, WHATSAPP)"
    ]


def test_webhook_secret_triggers_and_target_are_checked() -> None:
    emulator = emulator_dict()
    eu_hook = emulator["projects"][0]["apps"][0]["webhooks"][0]
    eu_hook["secret"] = "an-old-secret"
    eu_hook["triggers"] = ["MESSAGE_INBOUND", "CONTACT_CREATE"]
    emulator["projects"][1]["apps"][0]["webhooks"][0]["target"] = "https://elsewhere.test/hook"
    for url in with_emulator(copy.deepcopy(emulator)):
        findings = run(convodesk_dict(url))
    found = failures(findings)
    assert any("secret differs from the service's webhook secret" in f for f in found)
    assert any("lacks the configured triggers MESSAGE_DELIVERY" in f for f in found)
    assert any(
        f"sinch-us app {APP_US}: no webhook points at us" in f
        and f"expected {PUBLIC}/sms/sinchconversation/sinch-us" in f
        and "https://elsewhere.test/hook" in f
        for f in found
    )
    warnings = [f.message for f in findings if f.level == "warn"]
    assert any("also sends CONTACT_CREATE" in w for w in warnings)
    assert not any("an-old-secret" in str(f) or "hook-secret" in str(f) for f in findings)


def test_unreachable_sinch_fails_with_a_reason() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    found = failures(run(convodesk_dict(dead)))
    assert len(found) >= 2
    assert all("cannot reach Sinch" in f or "its access key does not work" in f for f in found)


def test_the_cli_prints_findings_and_exits_by_the_worst(emulator_url: str, tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(convodesk_dict(emulator_url)))
    env = {**os.environ, "CONVODESK_CONFIG": ""}
    cmd = [sys.executable, "-m", "convodesk", "doctor"]
    answer = subprocess.run(
        [*cmd, "--config", str(good)], capture_output=True, text=True, env=env, timeout=60
    )
    assert answer.returncode == 0, answer.stdout + answer.stderr
    assert "ok    sinch-eu: access key KEY-EU gets a token" in answer.stdout
    assert "0 failure(s)" in answer.stderr

    raw = convodesk_dict(emulator_url)
    raw["messaging_services"][1]["authentication"][1]["password"] = "changed-webhook-secret"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    answer = subprocess.run(
        [*cmd, "--config", str(bad), "--json"], capture_output=True, text=True, env=env, timeout=60
    )
    assert answer.returncode == 1
    findings = json.loads(answer.stdout)
    assert {"level", "subject", "message"} == set(findings[0])
    assert [f["subject"] for f in findings if f["level"] == "fail"] == [f"sinch-us app {APP_US}"]
    assert "changed-webhook-secret" not in answer.stdout + answer.stderr

    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("messaging_services: [{name: x}]\n")
    answer = subprocess.run(
        [*cmd, "--config", str(invalid)], capture_output=True, text=True, env=env, timeout=60
    )
    assert answer.returncode == 1
    assert "messaging_services[0]" in answer.stdout
