"""A lean HTTP/1.1 keep-alive load generator for the benchmarks (asyncio protocols).

Why not StreamReader or httpx: on a 2-core machine the load generator shares the CPU with
the server it measures, so it must cost far less per request than the server does. A
protocol that parses only the status line and ``Content-Length`` of each answer costs a
few microseconds per request.

Two shapes of load:

- `closed_loop`: ``connections`` clients, each sends its next request when the previous
  answer arrives; measures the maximum rate.
- `paced`: open-loop, request ``i`` is due at ``start + i / rate`` whatever the answers
  do (an idle connection is used, or a new one opened); latency counts from the due time,
  so a stall on either side shows up in the figures instead of slowing the load down
  (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


class LoadError(Exception):
    """The server closed a connection or answered something unreadable."""


class _Client(asyncio.Protocol):
    def __init__(self, on_answer: Callable[[_Client, int], None]) -> None:
        self._on_answer = on_answer
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = _content_length(buffer, end)
            total = end + 4 + length
            if len(buffer) < total:
                return
            status = int(buffer[9:12])
            del buffer[:total]
            self._on_answer(self, status)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _content_length(buffer: bytearray, end: int) -> int:
    head = bytes(buffer[:end]).lower()
    at = head.find(b"\r\ncontent-length:")
    if at < 0:
        raise LoadError("an answer without Content-Length")
    stop = head.find(b"\r\n", at + 2)
    return int(head[at + 17 : stop if stop >= 0 else end])


async def _open(host: str, port: int, on_answer: Callable[[_Client, int], None]) -> _Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: _Client(on_answer), host, port)
    return client


@dataclass
class ClosedLoopResult:
    requests: int
    seconds: float
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    @property
    def non_200(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200)


async def closed_loop(
    host: str, port: int | Sequence[int], requests: Sequence[bytes], connections: int
) -> ClosedLoopResult:
    """Send every request once over ``connections`` keep-alive connections; time the lot.

    Several ports (servers): connection *i* goes to ``ports[i % len(ports)]``; as every
    connection takes the next unsent request when its answer arrives, a faster server gets
    more of them (as behind a balancer that sends each request to a free connection)."""
    ports = [port] if isinstance(port, int) else list(port)
    if not requests:
        raise ValueError("no requests to send")
    statuses: dict[int, int] = {}
    done = asyncio.get_running_loop().create_future()
    state = {"next": 0, "answered": 0}

    def on_answer(client: _Client, status: int) -> None:
        statuses[status] = statuses.get(status, 0) + 1
        state["answered"] += 1
        if state["answered"] == len(requests):
            if not done.done():
                done.set_result(None)
            return
        send_next(client)

    def send_next(client: _Client) -> None:
        n = state["next"]
        if n < len(requests):
            state["next"] = n + 1
            client.send(requests[n])

    clients = [await _open(host, ports[i % len(ports)], on_answer) for i in range(connections)]
    try:
        started = time.perf_counter()
        for client in clients:
            send_next(client)
        await _until(done, clients)
        elapsed = time.perf_counter() - started
    finally:
        for client in clients:
            client.close()
    return ClosedLoopResult(len(requests), elapsed, statuses)


@dataclass
class PacedResult:
    rate: float
    latencies: list[float]  # seconds, from each request's due time to its answer
    send_lags: list[float]  # seconds, from due time to the actual write (client lateness)
    statuses: dict[int, int]
    seconds: float
    connections: int
    started: float  # time.monotonic() of request 0's due time

    @property
    def achieved_rate(self) -> float:
        return len(self.latencies) / self.seconds


async def paced(
    host: str, port: int, requests: Sequence[bytes], rate: float, *, connections: int = 16
) -> PacedResult:
    """Open-loop load: request ``i`` is due at ``start + i / rate`` (``started``, on the
    system-wide monotonic clock, so that another process can time against the due times)."""
    if not requests:
        raise ValueError("no requests to send")
    loop = asyncio.get_running_loop()
    statuses: dict[int, int] = {}
    due_of: dict[_Client, float] = {}
    latencies: list[float] = []
    lags: list[float] = []
    idle: list[_Client] = []
    done = loop.create_future()
    total = len(requests)

    def on_answer(client: _Client, status: int) -> None:
        latencies.append(time.monotonic() - due_of.pop(client))
        statuses[status] = statuses.get(status, 0) + 1
        idle.append(client)
        if len(latencies) == total and not done.done():
            done.set_result(None)

    clients = [await _open(host, port, on_answer) for _ in range(connections)]
    idle.extend(clients)
    interval = 1.0 / rate
    started = time.monotonic()
    try:
        n = 0
        while n < total:
            now = time.monotonic()
            due = started + n * interval
            if due > now:
                await asyncio.sleep(due - now)
                continue
            while n < total and started + n * interval <= now:
                if not idle:
                    client = await _open(host, port, on_answer)
                    clients.append(client)
                    idle.append(client)
                    now = time.monotonic()
                client = idle.pop()
                due = started + n * interval
                due_of[client] = due
                lags.append(time.monotonic() - due)
                client.send(requests[n])
                n += 1
        await _until(done, clients)
        elapsed = time.monotonic() - started
    finally:
        for client in clients:
            client.close()
    return PacedResult(rate, latencies, lags, statuses, elapsed, len(clients), started)


async def _until(done: asyncio.Future[None], clients: list[_Client]) -> None:
    """Wait for ``done``; a connection the server drops first is an error, not a hang."""
    while not done.done():
        lost = [c.lost for c in clients]
        finished, _ = await asyncio.wait([done, *lost], return_when=asyncio.FIRST_COMPLETED)
        if done not in finished:
            raise LoadError("the server closed a connection during the run")


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (fraction 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]
