"""The Sinch emulator's own ceiling, so later benchmarks know it is not their bottleneck.

The emulator runs in its own process (``serve_forever``, as ``convodesk emulator`` runs it);
the load comes from this process. Rows:

- sends/s accepted, keep-alive raw HTTP/1.1 clients: the emulator's ceiling (the client side
  costs little CPU, so on a 2-core machine the emulator's core is the limit);
- sends/s accepted, httpx.AsyncClient: what a Python client built on httpx sees (client-bound);
- callbacks/s delivered to a minimal local receiver while sends go on (2 callbacks per SMS send:
  QUEUED_ON_CHANNEL and DELIVERED, each signed).

Each figure is the median of a few repetitions.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

PROJECT = "5b6c2a1e-8d4f-4c3b-9a7e-1f2d3c4b5a69"
PLAIN_APP = "01HZX4K7QW8E2R5T9Y3V6M1N0P"
HOOKED_APP = "01HZX4K7QW8E2R5T9Y3V6M1N0Q"
KEY_ID, KEY_SECRET = "bench-key", "bench-secret"
REPETITIONS = 3
SEND_SECONDS = 3.0
RAW_CONNECTIONS = 32
HTTPX_CLIENTS = 8
HTTPX_PER_CLIENT = 4
CALLBACK_SENDS = 2000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _config(receiver_port: int) -> dict[str, Any]:
    app = {"processing_mode": "DISPATCH", "channels": ["SMS", "WHATSAPP"], "rate_limit": 1e6}
    return {
        "delivery_delays_ms": {"queued": 0, "delivered": 0, "read": 0},
        "callback_retry": {"max_attempts": 2, "initial_backoff_ms": 50, "timeout_ms": 5000},
        "history_limit": 20000,
        "projects": [
            {
                "id": PROJECT,
                "region": "eu",
                "access_keys": [{"key_id": KEY_ID, "key_secret": KEY_SECRET}],
                "rate_limit": 1e6,
                "apps": [
                    {**app, "id": PLAIN_APP},
                    {
                        **app,
                        "id": HOOKED_APP,
                        "webhooks": [
                            {
                                "target": f"http://127.0.0.1:{receiver_port}/callbacks",
                                "secret": "bench-webhook-secret",
                                "triggers": ["MESSAGE_DELIVERY"],
                            }
                        ],
                    },
                ],
            }
        ],
    }


def _send_body(app_id: str, n: int = 0) -> bytes:
    body = {
        "app_id": app_id,
        "recipient": {
            "identified_by": {
                "channel_identities": [{"channel": "SMS", "identity": f"4670{n % 10_000_000:07d}"}]
            }
        },
        "message": {"text_message": {"text": "Your order has shipped."}},
        "channel_properties": {"SMS_SENDER": "46700000000"},
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _raw_request(port: int, token: str, body: bytes) -> bytes:
    head = (
        f"POST /eu/v1/projects/{PROJECT}/messages:send HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _read_answer(reader: asyncio.StreamReader) -> int:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("emulator closed the connection")
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length:
        await reader.readexactly(length)
    return int(status_line.split()[1])


async def _raw_sends(port: int, request: bytes, seconds: float) -> tuple[int, int]:
    stop_at = time.perf_counter() + seconds
    totals = [0, 0]

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at:
                writer.write(request)
                status = await _read_answer(reader)
                totals[0 if status == 200 else 1] += 1
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(worker() for _ in range(RAW_CONNECTIONS)))
    return totals[0], totals[1]


async def _httpx_sends(base_url: str, token: str, seconds: float) -> tuple[int, int]:
    stop_at = time.perf_counter() + seconds
    totals = [0, 0]
    url = f"/eu/v1/projects/{PROJECT}/messages:send"
    body = _send_body(PLAIN_APP)
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    # Several small pools: one httpx pool with many requests in flight slows down sharply.
    clients = [httpx.AsyncClient(base_url=base_url) for _ in range(HTTPX_CLIENTS)]

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop_at:
            answer = await client.post(url, content=body, headers=headers)
            totals[0 if answer.status_code == 200 else 1] += 1

    try:
        await asyncio.gather(*(worker(c) for c in clients for _ in range(HTTPX_PER_CLIENT)))
    finally:
        for client in clients:
            await client.aclose()
    return totals[0], totals[1]


class _Receiver:
    """A minimal keep-alive HTTP/1.1 callback receiver that answers 200 and counts."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.reached = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, port: int) -> None:
        self.port = port
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                length = 0
                while True:
                    header = await reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                if length:
                    await reader.readexactly(length)
                self.count += 1
                if self.count >= self.target:
                    self.reached.set()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Python 3.11's start_server callback logs a traceback for a cancelled handler
            # (task.exception() raises); ending quietly at shutdown is all we want here.
            return
        finally:
            writer.close()


async def _callbacks_run(port: int, token: str, receiver: _Receiver) -> tuple[float, int]:
    expected = receiver.count + 2 * CALLBACK_SENDS
    receiver.target = expected
    receiver.reached.clear()
    started = time.perf_counter()
    next_n = [0]

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while next_n[0] < CALLBACK_SENDS:
                next_n[0] += 1
                writer.write(_raw_request(port, token, _send_body(HOOKED_APP, next_n[0])))
                await _read_answer(reader)
        finally:
            writer.close()
            await writer.wait_closed()

    await asyncio.gather(*(worker() for _ in range(16)))
    try:
        await asyncio.wait_for(receiver.reached.wait(), timeout=60)
    except TimeoutError:
        pass  # reported below as fewer callbacks delivered than expected
    elapsed = time.perf_counter() - started
    delivered = receiver.count - (expected - 2 * CALLBACK_SENDS)
    return delivered / elapsed, delivered


async def _measure(base_url: str, port: int, token: str) -> list[dict[str, Any]]:
    request = _raw_request(port, token, _send_body(PLAIN_APP))
    await _raw_sends(port, request, 0.5)  # warm-up
    raw_rates, raw_errors = [], 0
    for _ in range(REPETITIONS):
        ok, errors = await _raw_sends(port, request, SEND_SECONDS)
        raw_rates.append(ok / SEND_SECONDS)
        raw_errors += errors
    httpx_rates = []
    for _ in range(REPETITIONS):
        ok, errors = await _httpx_sends(base_url, token, SEND_SECONDS)
        httpx_rates.append(ok / SEND_SECONDS)
        raw_errors += errors
    return [
        {
            "name": "sends accepted (raw keep-alive clients)",
            "value": round(statistics.median(raw_rates), 1),
            "unit": "sends/s",
            "notes": f"{RAW_CONNECTIONS} connections, {SEND_SECONDS:g}s x {REPETITIONS}, "
            f"runs {', '.join(f'{r:.0f}' for r in raw_rates)}; non-200 answers: {raw_errors}",
        },
        {
            "name": "sends accepted (httpx.AsyncClient)",
            "value": round(statistics.median(httpx_rates), 1),
            "unit": "sends/s",
            "notes": f"{HTTPX_CLIENTS} clients x {HTTPX_PER_CLIENT} in flight; client-bound "
            "(httpx's own CPU cost), "
            f"runs {', '.join(f'{r:.0f}' for r in httpx_rates)}",
        },
    ]


async def _measure_callbacks(port: int, token: str, receiver_port: int) -> dict[str, Any]:
    receiver = _Receiver()
    await receiver.start(receiver_port)
    try:
        rates = []
        delivered_total = 0
        for _ in range(REPETITIONS):
            rate, delivered = await _callbacks_run(port, token, receiver)
            rates.append(rate)
            delivered_total += delivered
    finally:
        await receiver.stop()
    return {
        "name": "callbacks delivered (signed, 2 per send)",
        "value": round(statistics.median(rates), 1),
        "unit": "callbacks/s",
        "notes": f"{CALLBACK_SENDS} SMS sends x {REPETITIONS}, delivered "
        f"{delivered_total}/{2 * CALLBACK_SENDS * REPETITIONS}; "
        f"runs {', '.join(f'{r:.0f}' for r in rates)}",
    }


def run() -> list[dict[str, Any]]:
    port, receiver_port = _free_port(), _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "emulator.yaml"
        config_path.write_text(yaml.safe_dump(_config(receiver_port)))
        code = (
            "from convodesk.emulator.server import serve_forever; "
            f"serve_forever({str(config_path)!r}, '127.0.0.1', {port})"
        )
        process = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ))
        base_url = f"http://127.0.0.1:{port}"
        try:
            token = _wait_and_get_token(base_url, process)
            rows = asyncio.run(_measure(base_url, port, token))
            rows.append(asyncio.run(_measure_callbacks(port, token, receiver_port)))
        finally:
            process.terminate()
            process.wait(timeout=15)
    return rows


def _wait_and_get_token(base_url: str, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 20
    with httpx.Client(base_url=base_url) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError("the emulator exited during start-up")
            try:
                answer = client.post(
                    "/oauth2/token",
                    data={"grant_type": "client_credentials"},
                    auth=(KEY_ID, KEY_SECRET),
                )
                token: str = answer.json()["access_token"]
                return token
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


if __name__ == "__main__":
    for row in run():
        print(row)
