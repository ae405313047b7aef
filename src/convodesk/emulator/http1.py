"""A small keep-alive HTTP/1.1 client for posting callbacks.

Why not httpx: a callback is one POST with a small body, and httpx spends about seven times the
CPU per request that this does (and more with many requests in flight in one pool), which made
the emulator's callback rate, not the receiver, the limit in benchmarks. This client does only
what callbacks need: POST, a per-origin pool of idle connections, Content-Length, chunked and
read-to-close answers, TLS for https targets, one transparent retry when a pooled connection
turns out to have been closed by the server, and a deadline for the whole exchange.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Mapping
from urllib.parse import urlsplit

MAX_HEADER_BYTES = 64 * 1024
MAX_IDLE_PER_ORIGIN = 256


class Http1Error(Exception):
    """The exchange failed before a complete answer arrived."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


Origin = tuple[str, str, int]


class Http1Pool:
    def __init__(self) -> None:
        self._idle: dict[Origin, deque[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, limit_s: float
    ) -> int:
        """POST ``body`` and return the answer's status code; the answer body is discarded."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise Http1Error(f"unsupported URL {url[:80]!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        origin: Origin = (scheme, parts.hostname, port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"Host: {parts.netloc}"]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        lines.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        async with asyncio.timeout(limit_s):
            return await self._exchange(origin, request)

    async def _exchange(self, origin: Origin, request: bytes) -> int:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            try:
                return await self._round_trip(origin, connection, request)
            except (Http1Error, ConnectionError, asyncio.IncompleteReadError):
                # A pooled connection the server has since closed: try the next one.
                connection.close()
        connection = await self._open(origin)
        try:
            return await self._round_trip(origin, connection, request)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            connection.close()
            raise Http1Error(f"{type(exc).__name__}: {exc}") from exc

    async def _open(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        context: ssl.SSLContext | None = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            reader, writer = await asyncio.open_connection(host, port, ssl=context)
        except OSError as exc:
            raise Http1Error(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
        return _Connection(reader, writer)

    async def _round_trip(self, origin: Origin, connection: _Connection, request: bytes) -> int:
        reusable = False
        try:
            connection.writer.write(request)
            await connection.writer.drain()
            status, reusable = await _read_answer(connection.reader)
        finally:
            if reusable and not self._closed:
                idle = self._idle.setdefault(origin, deque())
                if len(idle) < MAX_IDLE_PER_ORIGIN:
                    idle.append(connection)
                else:
                    connection.close()
            else:
                connection.close()
        return status

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            while idle:
                connection = idle.pop()
                connection.close()
                try:
                    await connection.writer.wait_closed()
                except (OSError, ssl.SSLError):
                    pass
        self._idle.clear()


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one answer; returns (status, whether the connection can be reused)."""
    status_line = await reader.readline()
    if not status_line:
        raise Http1Error("connection closed before an answer")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise Http1Error("malformed status line")
    status = int(parts[1])
    keep_alive = parts[0] == b"HTTP/1.1"
    length: int | None = None
    chunked = False
    size = 0
    while True:
        line = await reader.readline()
        size += len(line)
        if size > MAX_HEADER_BYTES:
            raise Http1Error("answer headers too large")
        if line in (b"\r\n", b"\n"):
            break
        if not line:
            raise Http1Error("connection closed inside the answer headers")
        name, _, value = line.partition(b":")
        key = name.strip().lower()
        if key == b"content-length":
            try:
                length = int(value.strip())
            except ValueError as exc:
                raise Http1Error("malformed Content-Length") from exc
        elif key == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif key == b"connection":
            token = value.strip().lower()
            keep_alive = token != b"close" and (keep_alive or token == b"keep-alive")
    if status in (204, 304) or 100 <= status < 200:
        return status, keep_alive
    if chunked:
        while True:
            size_line = await reader.readline()
            try:
                chunk = int(size_line.split(b";")[0].strip(), 16)
            except ValueError as exc:
                raise Http1Error("malformed chunk size") from exc
            if chunk == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                break
            await reader.readexactly(chunk + 2)
        return status, keep_alive
    if length is not None:
        await reader.readexactly(length)
        return status, keep_alive
    await reader.read()  # no length: the body runs to the end of the connection
    return status, False
