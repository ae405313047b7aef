"""The agent desktops of the desktop benchmark, in a process of their own.

``python -m bench._desktop_readers SPEC.json`` reads ``{"host", "port", "tokens"}``; for each
token (one agent) it loads what the desktop loads when it opens (``/api/v1/me``, offers,
the agent's active conversations, the queue overview), then opens ``GET /api/v1/stream``
and keeps it open. Then it prints ``ready N`` (N streams answered 200) and obeys one
command a line on stdin:

- ``wait N SECONDS``: wait until N messages were heard since the last dump, or SECONDS
  passed; print ``waited`` and how many;
- ``dump PATH``: write what was heard since the last dump to PATH (below) and print
  ``dumped``;
- ``quit``: close everything and exit.

What is recorded: every ``message.created`` whose message has a benchmark message id
(`MESSAGE_ID_RE`), as (run, message number, stream number, arrival time on the
system-wide monotonic clock, which the load process reads too). A dump file is three
arrays of the same length, written one after the other (``array`` module: ``q`` message
number with the run in its high part, ``H`` stream, ``d`` arrival), preceded by a JSON
line of counts: events, bytes, overflows and streams closed by the server.

Reading is cheap on purpose: the streams are raw sockets (asyncio protocols), the chunked
framing is not decoded (chunks hold whole SSE events, and the message id never contains a
chunk header), and each complete block of events is searched with one regular expression,
so 50 streams at 100,000 events a second cost this process a fraction of a core.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import httpx

# "01DESK" + run (2 digits) + message number (18 digits): 26 characters, a Sinch id's length.
MESSAGE_ID_PREFIX = "01DESK"
MESSAGE_ID_RE = re.compile(rb'"sinch_message_id":"01DESK(\d{2})(\d{18})"')
RUN_FACTOR = 10**12  # message number + run * RUN_FACTOR in the dump


def message_id(run: int, number: int) -> str:
    return f"{MESSAGE_ID_PREFIX}{run:02d}{number:018d}"


class _Stream(asyncio.Protocol):
    def __init__(self, index: int, recorder: _Recorder) -> None:
        self.index = index
        self.recorder = recorder
        self.transport: asyncio.Transport | None = None
        self.head = bytearray()
        self.body = bytearray()
        self.status = 0
        self.answered: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.recorder.closed += 1
        if not self.answered.done():
            self.answered.set_result(0)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        if not self.status:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = int(self.head[9:12])
            data = bytes(self.head[end + 4 :])
            self.head.clear()
            if not self.answered.done():
                self.answered.set_result(self.status)
        self.recorder.bytes += len(data)
        body = self.body
        body += data
        end = body.rfind(b"\n\n")
        if end < 0:
            return
        block = bytes(body[: end + 2])
        del body[: end + 2]
        self.recorder.heard(self.index, block, now)


class _Recorder:
    def __init__(self) -> None:
        self.numbers = array("q")
        self.streams = array("H")
        self.times = array("d")
        self.events = 0
        self.bytes = 0
        self.overflows = 0
        self.closed = 0
        self.target = 0  # `reached` is set once this many entries are recorded
        self.reached = asyncio.Event()

    def heard(self, stream: int, block: bytes, now: float) -> None:
        self.events += block.count(b"\ndata: ")
        if b"stream.overflow" in block:
            self.overflows += 1
        for match in MESSAGE_ID_RE.finditer(block):
            self.numbers.append(int(match[1]) * RUN_FACTOR + int(match[2]))
            self.streams.append(stream)
            self.times.append(now)
        if self.target and len(self.numbers) >= self.target:
            self.reached.set()

    async def wait(self, entries: int, seconds: float) -> int:
        self.target = entries
        self.reached.clear()
        if len(self.numbers) < entries:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.reached.wait(), seconds)
        self.target = 0
        return len(self.numbers)

    def dump(self, path: Path) -> None:
        counts = {
            "entries": len(self.numbers),
            "events": self.events,
            "bytes": self.bytes,
            "overflows": self.overflows,
            "closed": self.closed,
        }
        with path.open("wb") as f:
            f.write(json.dumps(counts).encode() + b"\n")
            self.numbers.tofile(f)
            self.streams.tofile(f)
            self.times.tofile(f)
        self.numbers, self.streams, self.times = array("q"), array("H"), array("d")
        self.events = self.bytes = self.overflows = self.closed = 0


def read_dump(path: Path) -> tuple[dict[str, Any], array[int], array[int], array[float]]:
    with path.open("rb") as f:
        counts = json.loads(f.readline())
        n = counts["entries"]
        numbers, streams, times = array("q"), array("H"), array("d")
        numbers.fromfile(f, n)
        streams.fromfile(f, n)
        times.fromfile(f, n)
    return counts, numbers, streams, times


async def _desktop_start(client: httpx.AsyncClient, token: str) -> None:
    """What desktop.js loads when it opens, before its stream."""
    headers = {"Authorization": f"Bearer {token}"}
    for path in (
        "/api/v1/me",
        "/api/v1/offers",
        "/api/v1/conversations?assigned=me&status=active&limit=100",
        "/api/v1/queues/overview",
    ):
        answer = await client.get(path, headers=headers)
        if answer.status_code != 200:
            raise RuntimeError(f"GET {path}: {answer.status_code} {answer.text[:200]}")


async def _open_stream(
    host: str, port: int, token: str, index: int, recorder: _Recorder
) -> _Stream:
    loop = asyncio.get_running_loop()
    _, stream = await loop.create_connection(lambda: _Stream(index, recorder), host, port)
    assert stream.transport is not None
    stream.transport.write(
        (
            f"GET /api/v1/stream HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
    )
    return stream


async def main(spec: dict[str, Any]) -> None:
    host, port, tokens = spec["host"], spec["port"], spec["tokens"]
    recorder = _Recorder()
    base = f"http://{host}:{port}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        for start in range(0, len(tokens), 10):  # ten desktops opening at a time
            await asyncio.gather(*(_desktop_start(client, t) for t in tokens[start : start + 10]))
    streams = [await _open_stream(host, port, token, n, recorder) for n, token in enumerate(tokens)]
    statuses = [await asyncio.wait_for(s.answered, 60) for s in streams]
    print(f"ready {sum(1 for s in statuses if s == 200)}", flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := (await reader.readline()).decode().strip():
            command, _, argument = line.partition(" ")
            if command == "wait":
                count, seconds = argument.split()
                print(f"waited {await recorder.wait(int(count), float(seconds))}", flush=True)
            elif command == "dump":
                recorder.dump(Path(argument))
                print("dumped", flush=True)
            elif command == "quit":
                break
    finally:
        for stream in streams:
            if stream.transport is not None:
                stream.transport.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))
