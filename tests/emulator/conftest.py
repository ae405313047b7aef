"""Fixtures for the emulator tests: a running emulator, a callback receiver, a settable clock."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from convodesk.emulator.config import EmulatorConfig
from convodesk.emulator.server import RunningEmulator, running_emulator

PROJECT = "5b6c2a1e-8d4f-4c3b-9a7e-1f2d3c4b5a69"
US_PROJECT = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
APP = "01HZX4K7QW8E2R5T9Y3V6M1N0P"  # DISPATCH
CONV_APP = "01HZX4K7QW8E2R5T9Y3V6M1N0Q"  # CONVERSATION
US_APP = "01HZX4K7QW8E2R5T9Y3V6M1N0R"
KEY_ID, KEY_SECRET = "KEY-ID", "KEY-SECRET"
US_KEY_ID, US_KEY_SECRET = "US-KEY-ID", "US-KEY-SECRET"
WEBHOOK_SECRET = "WEBHOOK-SECRET"
WA_NUMBER = "46701234567"
SMS_NUMBER = "46709876543"
SEND_PATH = f"/eu/v1/projects/{PROJECT}/messages:send"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


@dataclass
class Receiver:
    """A webhook target on a real socket; answers ``statuses`` in turn, then 200."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    statuses: deque[int] = field(default_factory=deque)
    delay_s: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, item: Received) -> int:
        with self.lock:
            self.received.append(item)
            return self.statuses.popleft() if self.statuses else 200

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def wait_for(
        self, predicate: Callable[[list[Received]], bool], timeout: float = 5.0
    ) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            items = self.snapshot()
            if predicate(items):
                return items
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver condition not met; got {len(items)} callbacks")
            time.sleep(0.01)

    def reports(self, message_id: str) -> list[dict[str, Any]]:
        out = []
        for item in self.snapshot():
            report = item.json().get("message_delivery_report")
            if report and report["message_id"] == message_id:
                out.append(report)
        return out

    def statuses_for(self, message_id: str) -> list[str]:
        return [r["status"] for r in self.reports(message_id)]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = receiver.record(Received(self.path, headers, body))
            if receiver.delay_s:
                time.sleep(receiver.delay_s)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            if self.path.startswith("/media/ok"):
                payload = b"\x89PNG\r\n\x1a\n" + b"0" * 64
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            else:
                self.send_response(404)
                self.send_header("content-length", "0")
                self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def serving_receiver() -> Iterator[Receiver]:
    target = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(target))
    server.daemon_threads = True
    target.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield target
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving_receiver() as target:
        yield target


class Clock:
    """Epoch seconds that tests can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def config_dict(receiver_url: str, **top: Any) -> dict[str, Any]:
    webhook = {
        "target": f"{receiver_url}/sms/sinchconversation/sinch-eu",
        "secret": WEBHOOK_SECRET,
        "triggers": ["MESSAGE_INBOUND", "MESSAGE_DELIVERY"],
    }
    return {
        "delivery_delays_ms": {"queued": 5, "delivered": 10, "read": 10},
        "callback_retry": {
            "max_attempts": 4,
            "initial_backoff_ms": 20,
            "max_backoff_ms": 100,
            "timeout_ms": 1000,
        },
        "media_fetch_timeout_ms": 1000,
        **top,
        "projects": [
            {
                "id": PROJECT,
                "region": "eu",
                "access_keys": [{"key_id": KEY_ID, "key_secret": KEY_SECRET}],
                "rate_limit": 800,
                "apps": [
                    {
                        "id": APP,
                        "processing_mode": "DISPATCH",
                        "channels": ["WHATSAPP", "SMS", "MESSENGER", "SINCH_CHAT"],
                        "rate_limit": 200,
                        "sender_ids": {"WHATSAPP": "46700000000", "SMS": "46700000001"},
                        "webhooks": [webhook],
                    },
                    {
                        "id": CONV_APP,
                        "processing_mode": "CONVERSATION",
                        "channels": ["WHATSAPP", "SMS"],
                        "rate_limit": 200,
                        "webhooks": [webhook],
                    },
                ],
            },
            {
                "id": US_PROJECT,
                "region": "us",
                "access_keys": [{"key_id": US_KEY_ID, "key_secret": US_KEY_SECRET}],
                "apps": [{"id": US_APP, "channels": ["SMS"]}],
            },
        ],
    }


class Harness:
    """A running emulator plus the calls most tests make."""

    def __init__(self, running: RunningEmulator, receiver: Receiver, clock: Clock) -> None:
        self.running = running
        self.receiver = receiver
        self.clock = clock
        self.http = httpx.Client(base_url=running.base_url, timeout=10)
        self._token: str | None = None

    def close(self) -> None:
        self.http.close()

    def token(self) -> str:
        if self._token is None:
            answer = self.http.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=(KEY_ID, KEY_SECRET),
            )
            assert answer.status_code == 200, answer.text
            self._token = answer.json()["access_token"]
        return self._token

    def advance(self, seconds: float) -> None:
        """Move the emulator's clock; the cached token may have expired, so drop it."""
        self.clock.advance(seconds)
        self._token = None

    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token()}"}

    def send_raw(self, body: Any, *, path: str = SEND_PATH) -> httpx.Response:
        return self.http.post(path, json=body, headers=self.auth())

    def send(
        self,
        identity: str = WA_NUMBER,
        channel: str = "WHATSAPP",
        *,
        app_id: str = APP,
        message: dict[str, Any] | None = None,
        **extra: Any,
    ) -> str:
        body = send_body(identity, channel, app_id=app_id, message=message, **extra)
        answer = self.send_raw(body)
        assert answer.status_code == 200, answer.text
        message_id: str = answer.json()["message_id"]
        return message_id

    def inbound(self, identity: str = WA_NUMBER, channel: str = "WHATSAPP", **fields: Any) -> str:
        body = {"app_id": APP, "channel": channel, "identity": identity, **fields}
        if not any(k in body for k in ("text", "media_url", "location", "postback_data")):
            body["text"] = "Hello"
        answer = self.http.post("/_emulator/inbound", json=body)
        assert answer.status_code == 202, answer.text
        message_id: str = answer.json()["message_id"]
        return message_id

    def wait_status(self, message_id: str, final: str, timeout: float = 5.0) -> list[str]:
        self.receiver.wait_for(
            lambda _items: final in self.receiver.statuses_for(message_id), timeout
        )
        return self.receiver.statuses_for(message_id)

    def sent(self, **params: str) -> list[dict[str, Any]]:
        answer = self.http.get("/_emulator/sent", params=params)
        assert answer.status_code == 200
        records: list[dict[str, Any]] = answer.json()["sent"]
        return records

    def callbacks(self, **params: str) -> list[dict[str, Any]]:
        answer = self.http.get("/_emulator/callbacks", params=params)
        assert answer.status_code == 200
        records: list[dict[str, Any]] = answer.json()["callbacks"]
        return records


def send_body(
    identity: str = WA_NUMBER,
    channel: str = "WHATSAPP",
    *,
    app_id: str = APP,
    message: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "app_id": app_id,
        "recipient": {
            "identified_by": {"channel_identities": [{"channel": channel, "identity": identity}]}
        },
        "message": message or {"text_message": {"text": "Hi! Your order shipped."}},
        **extra,
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_emulator(receiver: Receiver, clock: Clock) -> Iterator[Callable[..., Harness]]:
    """Start an emulator with ``config_dict`` plus overrides; several per test are fine."""
    stack: list[tuple[Any, Harness]] = []

    def make(config: dict[str, Any] | None = None, **kwargs: Any) -> Harness:
        cfg = EmulatorConfig.from_dict(config or config_dict(receiver.url))
        manager = running_emulator(cfg, clock=clock, **kwargs)
        running = manager.__enter__()
        harness = Harness(running, receiver, clock)
        stack.append((manager, harness))
        return harness

    yield make
    for manager, harness in reversed(stack):
        harness.close()
        manager.__exit__(None, None, None)


@pytest.fixture(scope="module")
def _shared_emulator() -> Iterator[Harness]:
    """One emulator per test module (starting one costs ~0.2 s); `emu` resets it per test."""
    clock = Clock()
    with serving_receiver() as target:
        config = EmulatorConfig.from_dict(config_dict(target.url))
        with running_emulator(config, clock=clock) as running:
            harness = Harness(running, target, clock)
            yield harness
            harness.close()


@pytest.fixture
def emu(_shared_emulator: Harness) -> Harness:
    """The module's emulator, reset: no sends, callbacks, scripts or faults; clock at now."""
    harness = _shared_emulator
    assert harness.http.post("/_emulator/reset").status_code == 200
    harness.clock.offset = 0.0
    harness._token = None
    with harness.receiver.lock:
        harness.receiver.received.clear()
        harness.receiver.statuses.clear()
        harness.receiver.delay_s = 0.0
    return harness
