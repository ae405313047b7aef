"""Downloads inbound media into our attachment store (Sinch's media URLs expire).

A download that fails is retried with exponential backoff (10 s, 20 s, 40 s, ... up to
`MAX_ATTEMPTS`); after the last attempt the attachment is marked ``failed`` with the
reason. The message itself is stored before any download starts, so a failed download never
loses or blocks the text.

Claiming: a due attachment's `next_attempt_at` is pushed a lease into the future in the
claiming transaction, so a second worker does not take it while the first downloads.
Files live under ``{data_dir}/attachments/{token[:2]}/{token}``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
from sqlalchemy import select

from convodesk import logs
from convodesk.metrics import Metrics
from convodesk.runtime import Runtime
from convodesk.storage.attachments import attachment_path
from convodesk.storage.db import transaction
from convodesk.storage.tables import AttachmentRow

log = logs.get_logger("convodesk.media")

MAX_ATTEMPTS = 6
BASE_BACKOFF_SECONDS = 10.0
LEASE_SECONDS = 120.0
INBOUND_MAX_BYTES = 100 * 1024 * 1024  # WhatsApp documents go up to 100 MB
IDLE_POLL_SECONDS = 2.0


@dataclass(frozen=True)
class Job:
    attachment_id: int
    url: str
    token: str
    attempts: int


class DownloadError(Exception):
    """The file could not be fetched; the message says why (never a secret)."""


class MediaFetcher:
    def __init__(
        self,
        runtime: Runtime,
        *,
        metrics: Metrics | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        base_backoff: float = BASE_BACKOFF_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._runtime = runtime
        self._metrics = metrics
        self._transport = transport
        self._base_backoff = base_backoff
        self._clock = clock

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(
            transport=self._transport, timeout=httpx.Timeout(30.0), follow_redirects=True
        ) as client:
            while not stop.is_set():
                try:
                    handled = await self.run_once(client)
                except Exception as exc:  # the database is away: try again shortly
                    log.warning("media pass failed", error=f"{type(exc).__name__}: {exc}")
                    handled = 0
                if not handled:
                    try:
                        await asyncio.wait_for(stop.wait(), timeout=IDLE_POLL_SECONDS)
                    except TimeoutError:
                        pass

    async def run_once(self, client: httpx.AsyncClient) -> int:
        jobs = await asyncio.to_thread(self.claim, 8)
        await asyncio.gather(*(self._download(client, job) for job in jobs))
        return len(jobs)

    def claim(self, limit: int) -> list[Job]:
        now = self._clock()
        with transaction(self._runtime.sessions) as session:
            query = (
                select(AttachmentRow)
                .where(AttachmentRow.state == "pending", AttachmentRow.next_attempt_at <= now)
                .order_by(AttachmentRow.next_attempt_at)
                .limit(limit)
            )
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = list(session.scalars(query))
            for row in rows:
                row.attempts += 1
                row.next_attempt_at = now + timedelta(seconds=LEASE_SECONDS)
            return [Job(r.id, r.source_url or "", r.token, r.attempts) for r in rows]

    async def _download(self, client: httpx.AsyncClient, job: Job) -> None:
        path = attachment_path(self._runtime.config.data_dir, job.token)
        try:
            content_type, size = await self._fetch(client, job.url, path)
        except DownloadError as exc:
            await asyncio.to_thread(self._failed, job, str(exc))
            return
        filename = Path(unquote(urlparse(job.url).path)).name or None
        await asyncio.to_thread(self._stored, job, content_type, size, path, filename)

    async def _fetch(self, client: httpx.AsyncClient, url: str, path: Path) -> tuple[str, int]:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        size = 0
        try:
            async with client.stream("GET", url) as response:
                if response.status_code != 200:
                    raise DownloadError(f"HTTP {response.status_code} from the media host")
                content_type = response.headers.get("content-type", "application/octet-stream")
                with partial.open("wb") as fh:
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > INBOUND_MAX_BYTES:
                            raise DownloadError(f"media over {INBOUND_MAX_BYTES} bytes")
                        fh.write(chunk)
        except httpx.HTTPError as exc:
            partial.unlink(missing_ok=True)
            raise DownloadError(f"{type(exc).__name__} fetching the media") from exc
        except DownloadError:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(path)
        return content_type.split(";")[0].strip(), size

    def _stored(
        self, job: Job, content_type: str, size: int, path: Path, filename: str | None
    ) -> None:
        with transaction(self._runtime.sessions) as session:
            row = session.get(AttachmentRow, job.attachment_id)
            if row is None:  # the message was deleted meanwhile
                path.unlink(missing_ok=True)
                return
            row.state = "stored"
            row.content_type = content_type
            row.size = size
            row.path = str(path)
            row.filename = row.filename or filename
            row.stored_at = self._clock()
            row.error = None
            row.next_attempt_at = None
        if self._metrics is not None:
            self._metrics.media_downloads.labels("stored").inc()

    def _failed(self, job: Job, reason: str) -> None:
        final = job.attempts >= MAX_ATTEMPTS
        with transaction(self._runtime.sessions) as session:
            row = session.get(AttachmentRow, job.attachment_id)
            if row is None:
                return
            row.error = reason
            if final:
                row.state = "failed"
                row.next_attempt_at = None
            else:
                delay = self._base_backoff * 2 ** (job.attempts - 1)
                row.next_attempt_at = self._clock() + timedelta(seconds=delay)
        if self._metrics is not None:
            self._metrics.media_downloads.labels("failed" if final else "retry").inc()
        log.info(
            "media download failed", attachment_id=job.attachment_id, reason=reason, final=final
        )
