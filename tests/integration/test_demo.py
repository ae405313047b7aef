"""`convodesk demo` starts everything, a customer message reaches a queue, Ctrl-C stops it."""

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

from convodesk.demo import APP_EU
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
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    lines: list[str] = []
    reader = threading.Thread(
        target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True
    )  # type: ignore[union-attr]
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
        while True:
            items = httpx.get(f"{base}/api/v1/conversations", headers=headers).json()["items"]
            if items:
                break
            assert time.monotonic() < deadline, "the message never became a conversation"
            time.sleep(0.1)
        assert items[0]["queue"] == "whatsapp-support"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        reader.join(timeout=5)
    assert proc.returncode == 0, "".join(lines)
