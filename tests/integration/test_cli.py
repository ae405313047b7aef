"""The command line, run as real subprocesses, against SQLite and PostgreSQL."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.apps import APP_EU, APP_US, PROJECT

SECRETS = {
    "SINCH_EU_KEY_SECRET": "eu-key-secret-plain",
    "SINCH_EU_WEBHOOK_SECRET": "eu-webhook-secret-plain",
    "ANNA_PASSWORD": "anna-password-plain",
}


def write_config(path: Path, database_url: str, data_dir: Path, **extra: object) -> Path:
    config = {
        "database_url": database_url,
        "data_dir": str(data_dir),
        "public_base_url": "https://cc.example.com",
        "messaging_services": [
            {
                "name": "sinch-eu",
                "type": "sinchconversation",
                "service_connection": f"https://eu.conversation.api.sinch.com/v1/projects/{PROJECT}/messages:send",
                "authentication": [
                    {"auth_id": f"KEY-ID@{APP_EU}", "password": "${SINCH_EU_KEY_SECRET}"},
                    {
                        "auth_id": "webhook",
                        "password": "${SINCH_EU_WEBHOOK_SECRET}",
                        "triggers": ["MESSAGE_INBOUND", "MESSAGE_DELIVERY"],
                    },
                ],
            }
        ],
        "queues": [
            {
                "name": "support",
                "type": "chat",
                "addresses": [f"{APP_EU}@whatsapp.sinchconversation.com"],
            }
        ],
        "agents": [
            {
                "login": "anna",
                "display_name": "Anna",
                "queues": ["support"],
                "password": "${ANNA_PASSWORD}",
            }
        ],
        **extra,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "CONVODESK_CONFIG"}
    full_env.update({"CONVODESK_SECRET_KEY": "cli-test-key", **SECRETS, **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "convodesk", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        for value in SECRETS.values():
            assert value not in text


def test_validate_accepts_a_valid_file(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", "sqlite:///x.db", tmp_path)
    result = run("config", "validate", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert_no_secrets(result.stdout, result.stderr)


def test_validate_prints_every_error_as_path_and_message(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "messaging_services": [
                    {
                        "name": "",
                        "type": "sms",
                        "service_connection": "https://example.com/v1/projects/p/messages:send",
                        "authentication": [{"auth_id": f"KEY@{APP_EU.lower()}", "password": "x"}],
                    }
                ],
                "queues": [
                    {
                        "name": "q",
                        "type": "voice",
                        "addresses": [f"{APP_US}@fax.sinchconversation.com"],
                    }
                ],
            }
        )
    )
    result = run("config", "validate", str(path))
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) >= 6
    for line in lines:
        path_part, sep, message = line.partition(": ")
        assert sep, line
        assert message, line
        assert path_part.startswith(("messaging_services[0]", "queues[0]")), line
    joined = "\n".join(lines)
    assert "messaging_services[0].name" in joined
    assert "messaging_services[0].type" in joined
    assert "messaging_services[0].service_connection" in joined
    assert APP_EU in joined  # the corrected app id
    assert "queues[0].type" in joined
    assert "queues[0].addresses[0]" in joined


def test_validate_names_an_unset_variable_and_yaml_position(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", "sqlite:///x.db", tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "SINCH_EU_KEY_SECRET"}
    result = subprocess.run(
        [sys.executable, "-m", "convodesk", "config", "validate", str(path)],
        capture_output=True,
        text=True,
        env={**env, "SINCH_EU_WEBHOOK_SECRET": "w", "ANNA_PASSWORD": "p" * 8},
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "SINCH_EU_KEY_SECRET" in result.stdout
    assert "messaging_services[0].authentication[0].password" in result.stdout

    broken = tmp_path / "broken.yaml"
    broken.write_text("queues:\n  - name: a\n    type: [chat\n")
    result = run("config", "validate", str(broken))
    assert result.returncode == 1
    assert "line" in result.stdout
    assert "column" in result.stdout


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("config", "validate").returncode == 2
    assert run("no-such-command").returncode == 2
    assert (
        run("token", "create", "--role", "root", "--config", str(tmp_path / "c.yaml")).returncode
        == 2
    )


def test_missing_file_is_invalid_input(tmp_path: Path) -> None:
    result = run("config", "validate", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert "nope.yaml" in result.stdout + result.stderr


def test_apply_export_round_trip(database_url: str, tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", database_url, tmp_path / "data")
    first = run("config", "apply", str(path))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "added messaging_services: sinch-eu" in first.stdout
    assert "added agents: anna" in first.stdout
    second = run("config", "apply", str(path))
    assert second.returncode == 0
    assert second.stdout.strip() == "no changes"

    exported = run("config", "export", "--config", str(path))
    assert exported.returncode == 0, exported.stderr
    assert_no_secrets(exported.stdout, exported.stderr)
    assert "${SINCH_EU_KEY_SECRET}" in exported.stdout
    assert "${SINCH_EU_WEBHOOK_SECRET}" in exported.stdout

    masked = run("config", "export", "--config", str(path), "--secrets", "mask")
    assert "********" in masked.stdout
    assert_no_secrets(masked.stdout)

    # The export applies back as "no changes", with the variables or with the masks.
    again = tmp_path / "export.yaml"
    again.write_text(exported.stdout)
    assert run("config", "apply", str(again)).stdout.strip() == "no changes"
    again.write_text(masked.stdout)
    assert run("config", "apply", str(again)).stdout.strip() == "no changes"


def test_apply_reports_changes_and_dry_run(database_url: str, tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", database_url, tmp_path / "data")
    run("config", "apply", str(path))
    data = yaml.safe_load(path.read_text())
    data["queues"][0]["priority"] = 3
    path.write_text(yaml.safe_dump(data))
    dry = run("config", "apply", "--dry-run", str(path))
    assert "changed queues: support (priority)" in dry.stdout
    assert "1 would change" in dry.stdout
    real = run("config", "apply", str(path))
    assert "changed queues: support (priority)" in real.stdout
    assert run("config", "apply", str(path)).stdout.strip() == "no changes"


def test_token_create_prints_a_usable_token_last(database_url: str, tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", database_url, tmp_path / "data")
    run("config", "apply", str(path))
    admin = run("token", "create", "--role", "admin", "--config", str(path))
    assert admin.returncode == 0, admin.stderr
    token = admin.stdout.strip().splitlines()[-1]
    assert token.startswith("cdk_")
    assert " " not in token
    agent = run("token", "create", "--role", "agent", "--agent", "anna", "--config", str(path))
    assert agent.returncode == 0
    assert run("token", "create", "--role", "agent", "--config", str(path)).returncode == 2
    unknown = run("token", "create", "--role", "agent", "--agent", "ghost", "--config", str(path))
    assert unknown.returncode == 1
    assert "ghost" in unknown.stderr


def test_config_from_environment_variable(database_url: str, tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", database_url, tmp_path / "data")
    result = run("db", "upgrade", env={"CONVODESK_CONFIG": str(path)})
    assert result.returncode == 0, result.stderr
    assert "database at" in result.stdout
    # ./convodesk.yaml is the last fallback
    (tmp_path / "convodesk.yaml").write_text(path.read_text())
    assert run("db", "upgrade", cwd=tmp_path).returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_serve_answers_and_never_logs_secrets(database_url: str, tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.yaml", database_url, tmp_path / "data")
    run("config", "apply", str(path))
    token = (
        run("token", "create", "--role", "admin", "--config", str(path))
        .stdout.strip()
        .splitlines()[-1]
    )
    port = free_port()
    env = {**os.environ, "CONVODESK_SECRET_KEY": "cli-test-key", **SECRETS}
    proc = subprocess.Popen(
        [sys.executable, "-m", "convodesk", "serve", "--config", str(path), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, "serve exited"
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        assert httpx.get(f"{base}/readyz").status_code == 200
        headers = {"Authorization": f"Bearer {token}"}
        services = httpx.get(f"{base}/api/v1/messaging-services", headers=headers)
        assert services.status_code == 200
        assert_no_secrets(services.text)
        bad = httpx.post(
            f"{base}/api/v1/messaging-services",
            headers=headers,
            json={
                "name": "x",
                "authentication": [{"auth_id": "webhook", "password": "logged-secret?"}],
            },
        )
        assert bad.status_code == 422
        assert "logged-secret?" not in bad.text
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert_no_secrets(output)
    assert "logged-secret?" not in output
