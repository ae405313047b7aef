"""Running the emulator: as a process (the CLI's entry point) and on a background thread."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from convodesk.emulator.config import EmulatorConfig, EmulatorConfigError
from convodesk.emulator.server import running_emulator, serve_forever

from .conftest import KEY_ID, KEY_SECRET, PROJECT, SMS_NUMBER, config_dict, send_body


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_forever_serves_and_exits_cleanly_on_signals(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    config = tmp_path / "emulator.yaml"
    config.write_text(yaml.safe_dump(config_dict("http://127.0.0.1:9")))
    port = _free_port()
    code = (
        "from convodesk.emulator.server import serve_forever; "
        f"serve_forever({str(config)!r}, '127.0.0.1', {port})"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 15
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            while True:
                try:
                    answer = client.post(
                        "/oauth2/token",
                        data={"grant_type": "client_credentials"},
                        auth=(KEY_ID, KEY_SECRET),
                    )
                    break
                except httpx.TransportError:
                    assert process.poll() is None, process.communicate()
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            token = answer.json()["access_token"]
            sent = client.post(
                f"/eu/v1/projects/{PROJECT}/messages:send",
                json=send_body(SMS_NUMBER, "SMS"),
                headers={"authorization": f"Bearer {token}"},
            )
            assert sent.status_code == 200
        process.send_signal(stop_signal)
        _out, err = process.communicate(timeout=10)
        assert process.returncode == 0, err
        assert b"Traceback" not in err
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_serve_forever_refuses_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "emulator.yaml"
    config.write_text("projects: []\n")
    with pytest.raises(EmulatorConfigError, match="projects"):
        serve_forever(str(config), "127.0.0.1", 0)


def test_running_emulator_yields_base_url_and_stops(receiver: Any) -> None:
    config = EmulatorConfig.from_dict(config_dict(receiver.url))
    seen: list[dict[str, Any]] = []
    with running_emulator(config) as running:
        assert running.base_url.startswith("http://127.0.0.1:")
        assert running.region_url("eu") == running.base_url + "/eu"
        remove = running.add_send_listener(seen.append)
        with httpx.Client(base_url=running.base_url) as client:
            answer = client.post(
                f"/eu/v1/projects/{PROJECT}/messages:send",
                json=send_body(SMS_NUMBER, "SMS"),
                auth=(KEY_ID, KEY_SECRET),
            )
            assert answer.status_code == 200
            assert [s["message_id"] for s in seen] == [answer.json()["message_id"]]
            assert (
                seen[0]["request"]["recipient"]["identified_by"]["channel_identities"][0][
                    "identity"
                ]
                == SMS_NUMBER
            )
            remove()
            client.post(
                f"/eu/v1/projects/{PROJECT}/messages:send",
                json=send_body(SMS_NUMBER, "SMS"),
                auth=(KEY_ID, KEY_SECRET),
            )
            assert len(seen) == 1
        port = int(running.base_url.rsplit(":", 1)[1])
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more


def test_a_failing_listener_does_not_break_sends(receiver: Any) -> None:
    config = EmulatorConfig.from_dict(config_dict(receiver.url))

    def broken(_record: dict[str, Any]) -> None:
        raise RuntimeError("listener bug")

    with running_emulator(config) as running, httpx.Client(base_url=running.base_url) as client:
        running.add_send_listener(broken)
        answer = client.post(
            f"/eu/v1/projects/{PROJECT}/messages:send",
            json=send_body(SMS_NUMBER, "SMS"),
            auth=(KEY_ID, KEY_SECRET),
        )
        assert answer.status_code == 200
