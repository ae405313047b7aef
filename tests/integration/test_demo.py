"""`convodesk demo` starts everything, customers' messages reach their queues, Ctrl-C stops it.

The simulated customers come every second here (``--customer-interval 1``); the first one's
message must become a conversation, as must one written by hand through the emulator.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from convodesk.demo import APP_EU, APP_US
from convodesk.demo.scripts import PERSONAS
from tests.integration.test_cli import free_port


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "CONVODESK_SECRET_KEY"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "convodesk",
            "demo",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "d"),
            "--customer-interval",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    stdout = proc.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while not any("Ctrl-C stops everything" in line for line in lines):
            assert proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        output = "".join(lines)
        emulator = re.search(r"Sinch emulator (http://\S+)", output)
        token = re.search(r"admin token\s+(cdk_\S+)", output)
        assert emulator, output
        assert token, output
        assert "demo-anna-pass" in output
        assert "customers      simulated" in output
        base = f"http://127.0.0.1:{port}"
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        sent = httpx.post(
            f"{emulator.group(1)}/_emulator/inbound",
            json={
                "app_id": APP_EU,
                "channel": "WHATSAPP",
                "identity": "46701234567",
                "text": "Hej!",
            },
        )
        assert sent.status_code == 202, sent.text
        headers = {"Authorization": f"Bearer {token.group(1)}"}
        queues = {"WHATSAPP": "whatsapp-support", "MESSENGER": "messenger-support"}
        personas = {p.identity: p.channel for p in PERSONAS}
        while True:
            items = httpx.get(f"{base}/api/v1/conversations", headers=headers).json()["items"]
            mine = [c for c in items if c["identity"] == "46701234567"]
            simulated = [c for c in items if c["identity"] in personas]
            if mine and simulated:
                break
            assert time.monotonic() < deadline, f"no conversations yet: {items}"
            time.sleep(0.1)
        assert mine[0]["queue"] == "whatsapp-support"
        customer = simulated[0]
        assert customer["channel"] == personas[customer["identity"]]
        assert customer["queue"] == queues.get(customer["channel"], "sms-support")
        assert customer["app_id"] == (APP_US if customer["channel"] == "SMS" else APP_EU)
        messages = httpx.get(
            f"{base}/api/v1/conversations/{customer['id']}/messages", headers=headers
        ).json()["items"]
        assert messages[0]["direction"] == "inbound"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        reader.join(timeout=5)
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert "simulated customers stop" in output
    assert "Traceback" not in output
    assert "customer stopped" not in output  # no customer was refused by the emulator
