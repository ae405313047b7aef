"""Media out: agent uploads, the media replies that send them, the public serving of stored
files and their retention.

An upload (``POST /api/v1/conversations/{id}/attachments``) is checked against the chat
settings: at most `attachment_max_bytes`, and a type in `attachment_types`. The declared
type is not trusted alone: the first bytes are compared with a small table of signatures
(`sniff`), so a Windows program declared ``image/png`` is refused. The rule (`decide_type`):

- a declared type that is not allowed: refused (415), naming the allowed types;
- a declared type the table knows (JPEG, PNG, WebP, GIF, PDF, MP4, Ogg, MP3, AAC, ...): the
  content must start as that type does, else refused;
- a declared type the table does not know (an administrator allowed ``text/plain``): accepted
  unless the content is recognised as something else (a program, HTML, a PNG, ...);
- no declared type, or ``application/octet-stream`` when that is not itself allowed: the
  sniffed type is used if it is allowed, else refused.

The file is kept under the same scheme as inbound media (`storage.attachments.attachment_path`)
with an unguessable token; a reply ``{"attachment": token}`` sends it (`take_upload`) as a
``media_message`` whose URL is ``{base}/sms/richcontent/{token}``, `base` being
`chat_settings.attachment_base_url` or else `public_base_url` (`media_url`).

Retention (`cleanup_attachments`, run hourly by the housekeeping worker): files of
attachments older than `attachment_retention_days` are deleted and their rows marked
``expired`` (the transcript keeps them); uploads no message used are deleted after 24 hours.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session

from convodesk import logs
from convodesk.domain.config_model import ChatSettings, Problem, SystemConfig
from convodesk.runtime import Runtime
from convodesk.services import conversations as conversation_service
from convodesk.services.chain_matcher import new_token
from convodesk.services.conversations import RICHCONTENT_PATH
from convodesk.services.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    ServiceError,
)
from convodesk.services.event_log import as_utc
from convodesk.storage import attachments as attachments_sql
from convodesk.storage import config_store
from convodesk.storage.api_tokens import Principal
from convodesk.storage.attachments import StoredFile, attachment_path
from convodesk.storage.db import transaction
from convodesk.storage.tables import AttachmentRow, ConversationRow, MessageRow

log = logs.get_logger("convodesk.attachments")

SNIFF_BYTES = 64  # enough for every signature below
MAX_FILENAME = 200
UNUSED_UPLOAD_AGE = timedelta(hours=24)
CLEANUP_BATCH = 200
MAX_CACHE_SECONDS = 24 * 3600
OCTET_STREAM = "application/octet-stream"


class UploadTooLargeError(ServiceError):
    """The file is over `attachment_max_bytes` (413)."""

    def __init__(self, message: str, *, max_bytes: int) -> None:
        super().__init__(message, data={"max_bytes": max_bytes})


class UnsupportedTypeError(ServiceError):
    """The file's type is not allowed, or its content is not what it claims (415)."""

    def __init__(self, message: str, *, allowed: tuple[str, ...]) -> None:
        super().__init__(
            f"{message}; allowed types: {', '.join(allowed)}", data={"allowed": allowed}
        )


class AttachmentGoneError(ServiceError):
    """The attachment existed but its retention ran out: the file is deleted (410)."""


# ------------------------------------------------------------------------------ types

_ZIP_TYPES = (
    "application/zip",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/epub+zip",
)
_ISO_MEDIA = (
    "video/mp4",
    "audio/mp4",
    "audio/x-m4a",
    "video/quicktime",
    "video/3gpp",
    "audio/3gpp",
    "image/heic",
    "image/heif",
    "image/avif",
)
# (offset, magic bytes, the types such content may be declared as), first match wins.
_SIGNATURES: tuple[tuple[int, bytes, tuple[str, ...]], ...] = (
    (0, b"\xff\xd8\xff", ("image/jpeg",)),
    (0, b"\x89PNG\r\n\x1a\n", ("image/png",)),
    (0, b"GIF87a", ("image/gif",)),
    (0, b"GIF89a", ("image/gif",)),
    (0, b"%PDF-", ("application/pdf",)),
    (0, b"OggS", ("audio/ogg", "audio/opus", "video/ogg", "application/ogg")),
    (0, b"ID3", ("audio/mpeg", "audio/aac")),
    (0, b"ADIF", ("audio/aac",)),
    (0, b"#!AMR", ("audio/amr",)),
    (0, b"\x1aE\xdf\xa3", ("video/webm", "audio/webm", "video/x-matroska")),
    (0, b"PK\x03\x04", _ZIP_TYPES),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", ("application/msword", "application/vnd.ms-excel")),
    (0, b"MZ", ("application/x-msdownload",)),  # Windows programs and libraries
    (0, b"\x7fELF", ("application/x-executable",)),
    (0, b"\xcf\xfa\xed\xfe", ("application/x-mach-binary",)),
    (4, b"ftyp", _ISO_MEDIA),
)
_RIFF = {b"WEBP": ("image/webp",), b"WAVE": ("audio/wav", "audio/x-wav"), b"AVI ": ("video/avi",)}
_MARKUP = (
    (b"<!doctype html", ("text/html",)),
    (b"<html", ("text/html",)),
    (b"<head", ("text/html",)),
    (b"<body", ("text/html",)),
    (b"<script", ("text/html",)),
    (b"<iframe", ("text/html",)),
    (b"<svg", ("image/svg+xml",)),
    (b"<?xml", ("application/xml", "text/xml", "image/svg+xml")),
)
SNIFFABLE: frozenset[str] = frozenset(
    {t for _, _, types in _SIGNATURES for t in types}
    | {t for types in _RIFF.values() for t in types}
    | {t for _, types in _MARKUP for t in types}
    | {"audio/mpeg", "audio/aac"}
)
_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "audio/mp3": "audio/mpeg",
    "audio/x-aac": "audio/aac",
}
_EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "application/pdf": ".pdf",
    "video/mp4": ".mp4",
    "audio/ogg": ".ogg",
    "audio/mpeg": ".mp3",
    "audio/aac": ".aac",
}
# Served inline (shown in the browser); anything else is served as a download.
INLINE_TYPES = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/gif",
        "video/mp4",
        "audio/ogg",
        "audio/mpeg",
        "audio/aac",
        "audio/mp4",
    }
)


def normalize_type(value: str | None) -> str:
    """``Image/PNG; charset=x`` -> ``image/png``; common aliases to their standard name."""
    base = (value or "").split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


def sniff(head: bytes) -> tuple[str, ...] | None:
    """The types content starting with `head` may be; None if no signature matches."""
    for offset, magic, types in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return types
    if head[:4] == b"RIFF" and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    if len(head) >= 2 and head[0] == 0xFF:
        if head[1] & 0xF6 == 0xF0:  # ADTS: 12 sync bits, layer 00
            return ("audio/aac",)
        if head[1] & 0xE0 == 0xE0 and head[1] & 0x06:  # MPEG audio frame, layer I-III
            return ("audio/mpeg",)
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    for prefix, types in _MARKUP:
        if text.startswith(prefix):
            return types
    return None


def check_declared(declared: str | None, allowed: tuple[str, ...]) -> None:
    """Refuse at once (before any byte of the file is read) a declared type that is not
    allowed; a missing or generic declaration waits for the content (`decide_type`)."""
    kind = normalize_type(declared)
    if kind and kind not in allowed and kind != OCTET_STREAM:
        raise UnsupportedTypeError(f"files of type {kind} are not allowed", allowed=allowed)


def decide_type(declared: str | None, head: bytes, allowed: tuple[str, ...]) -> str:
    """The type to store for a file declared `declared` whose content starts with `head`;
    UnsupportedTypeError if it may not be uploaded (the rule is in the module's doc)."""
    kind = normalize_type(declared)
    found = sniff(head)
    if not kind or (kind == OCTET_STREAM and kind not in allowed):
        usable = [t for t in found or () if t in allowed]
        if not usable:
            what = f"looks like {found[0]}" if found else "is of no recognised type"
            raise UnsupportedTypeError(
                f"the file declares no type and its content {what}", allowed=allowed
            )
        return usable[0]
    check_declared(kind, allowed)
    if found is not None and kind not in found:
        raise UnsupportedTypeError(
            f"the file is declared {kind} but its content is {found[0]}", allowed=allowed
        )
    if found is None and kind in SNIFFABLE:
        raise UnsupportedTypeError(
            f"the file is declared {kind} but its content does not look like {kind}",
            allowed=allowed,
        )
    return kind


_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f"*/:<>?\\|]')


def safe_filename(raw: str | None, content_type: str) -> str:
    """A filename safe to store, show and send: the last path component only, no control,
    format (bidi overrides) or reserved characters, no leading dots, at most
    `MAX_FILENAME` characters with the extension kept; ``attachment.<ext>`` if nothing is
    left."""
    name = unicodedata.normalize("NFC", raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c) != "Cf")
    name = " ".join(_UNSAFE_CHARS.sub("_", name).split()).strip(" .")
    if not name:
        return "attachment" + _EXTENSIONS.get(content_type, "")
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: MAX_FILENAME - len(ext) - 1].rstrip(" .") + "." + ext
        else:
            name = name[:MAX_FILENAME]
    return name


# ---------------------------------------------------------------------------- uploads


@dataclass(frozen=True, kw_only=True)
class UploadLimits:
    max_bytes: int
    types: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class NewUpload:
    """Where an upload's bytes go while they arrive: `partial`, beside their final place."""

    token: str
    partial: Path


@dataclass(frozen=True, kw_only=True)
class ReceivedFile:
    partial: Path
    size: int
    content_type: str  # as `decide_type` decided
    filename: str | None  # as the client named it, not yet made safe


@dataclass(frozen=True, kw_only=True)
class UploadItem:
    id: int
    token: str
    url: str  # /sms/richcontent/{token}, on this server
    content_type: str
    size: int
    filename: str


def upload_limits(runtime: Runtime, principal: Principal, conversation_id: int) -> UploadLimits:
    """The limits for an upload to this conversation; NotFoundError if the caller may not
    see it, ConflictError if it is closed. Called before any byte of the body is read."""
    with transaction(runtime.sessions) as session:
        conversation = conversation_service.visible_conversation(
            session, principal, conversation_id
        )
        if conversation.status == "closed":
            raise ConflictError("the conversation is closed")
        settings = config_store.chat_settings(session)
    return UploadLimits(max_bytes=settings.attachment_max_bytes, types=settings.attachment_types)


def new_upload(runtime: Runtime) -> NewUpload:
    token = new_token()
    final = attachment_path(runtime.config.data_dir, token)
    final.parent.mkdir(parents=True, exist_ok=True)
    return NewUpload(token=token, partial=final.with_name(token + ".part"))


def record_upload(
    runtime: Runtime,
    principal: Principal,
    conversation_id: int,
    upload: NewUpload,
    received: ReceivedFile,
    *,
    now: datetime | None = None,
) -> UploadItem:
    """Move the received file into place and record it; on any failure nothing is left."""
    now = now or datetime.now(UTC)
    final = attachment_path(runtime.config.data_dir, upload.token)
    filename = safe_filename(received.filename, received.content_type)
    received.partial.replace(final)
    try:
        with transaction(runtime.sessions) as session:
            conversation = conversation_service.visible_conversation(
                session, principal, conversation_id
            )
            row = attachments_sql.add_upload(
                session,
                conversation_id=conversation.id,
                uploaded_by=principal.agent_login or "admin",
                token=upload.token,
                content_type=received.content_type,
                size=received.size,
                filename=filename,
                path=str(final),
                now=now,
            )
            item = UploadItem(
                id=row.id,
                token=row.token,
                url=RICHCONTENT_PATH + row.token,
                content_type=received.content_type,
                size=received.size,
                filename=filename,
            )
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    return item


# ------------------------------------------------------------------------ media replies


def public_base(config: SystemConfig, settings: ChatSettings) -> str | None:
    """The base of the URLs Sinch fetches media from: `attachment_base_url`, else
    `public_base_url`; None when neither is configured."""
    base = settings.attachment_base_url or config.public_base_url
    return base.rstrip("/") if base else None


def media_url(config: SystemConfig, token: str) -> str | None:
    """The public URL of an attachment (`config` with its chat settings), or None."""
    base = public_base(config, config.chat_settings)
    return f"{base}{RICHCONTENT_PATH}{token}" if base is not None else None


def take_upload(
    session: Session, config: SystemConfig, conversation: ConversationRow, token: str
) -> AttachmentRow:
    """The upload a media reply in `conversation` sends, locked until the transaction ends.

    ConflictError when no public URL is configured, or the upload is used or expired;
    InvalidRequestError when the token names no upload of this conversation.
    """
    if public_base(config, config_store.chat_settings(session)) is None:
        raise ConflictError(
            "media replies need a public URL that Sinch can fetch the file from: an "
            "administrator sets chat_settings.attachment_base_url or public_base_url (https)"
        )
    row = attachments_sql.by_token(session, token, lock=True)
    if row is None or row.uploaded_by is None:
        raise InvalidRequestError(
            [
                Problem(
                    path="attachment",
                    message="no upload with this token: upload the file first "
                    f"(POST /api/v1/conversations/{conversation.id}/attachments)",
                )
            ]
        )
    if row.conversation_id != conversation.id:
        raise InvalidRequestError(
            [
                Problem(
                    path="attachment",
                    message="this upload belongs to another conversation: upload the file to "
                    f"conversation {conversation.id}",
                )
            ]
        )
    if row.message_id is not None:
        raise ConflictError(
            f"this upload is already sent by message {row.message_id}: upload the file again "
            "to send it again"
        )
    if row.state != "stored":
        raise ConflictError("this upload has expired: upload the file again")
    return row


def media_content(row: AttachmentRow) -> dict[str, object]:
    """The content of a media reply's message: which upload it sends (the sender builds
    the public URL from the token when it sends)."""
    return {
        "attachment": {
            "id": row.id,
            "token": row.token,
            "filename": row.filename,
            "content_type": row.content_type,
            "size": row.size,
        }
    }


def link_upload(row: AttachmentRow, message: MessageRow) -> None:
    row.message_id = message.id


# ------------------------------------------------------------------------------ serving


@dataclass(frozen=True, kw_only=True)
class ServedFile:
    path: Path
    stat: os.stat_result
    content_type: str
    filename: str | None
    inline: bool
    max_age: int  # seconds a cache may keep it: at most a day, never past the retention


def served_file(runtime: Runtime, token: str, *, now: datetime | None = None) -> ServedFile:
    """The stored file behind ``/sms/richcontent/{token}``.

    NotFoundError for an unknown token, a download not finished or failed, a deleted unused
    upload; AttachmentGoneError once the retention ran out (whether or not the cleanup has
    deleted the file yet). Both answers are the same for every token they apply to.
    """
    now = now or datetime.now(UTC)
    with transaction(runtime.sessions) as session:
        row = attachments_sql.by_token(session, token)
        if row is None or row.state in ("pending", "failed"):
            raise NotFoundError("no such attachment")
        days = config_store.chat_settings(session).attachment_retention_days
    expires_at = as_utc(row.created_at) + timedelta(days=days)
    if row.state == "expired" or now >= expires_at:
        raise AttachmentGoneError("this attachment has expired")
    try:
        stat = os.stat(row.path or "")
    except OSError:  # not there (any more)
        raise NotFoundError("no such attachment") from None
    content_type = row.content_type or OCTET_STREAM
    return ServedFile(
        path=Path(row.path or ""),
        stat=stat,
        content_type=content_type,
        filename=row.filename,
        inline=normalize_type(content_type) in INLINE_TYPES,
        max_age=max(1, min(MAX_CACHE_SECONDS, int((expires_at - now).total_seconds()))),
    )


# ---------------------------------------------------------------------------- retention


@dataclass(frozen=True, kw_only=True)
class AttachmentCleanup:
    expired: int  # files deleted, rows kept as "expired"
    unused_deleted: int  # uploads no message used: file and row deleted
    retention_days: int


def cleanup_attachments(
    runtime: Runtime,
    *,
    now: datetime | None = None,
    batch: int = CLEANUP_BATCH,
    unused_after: timedelta = UNUSED_UPLOAD_AGE,
) -> AttachmentCleanup:
    """Delete unused uploads older than `unused_after`, then expire attachments older than
    `chat_settings.attachment_retention_days`. Each batch is one short transaction whose
    files are deleted before it commits; running it twice, or on several nodes at once,
    does no harm."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    now = now or datetime.now(UTC)
    with transaction(runtime.sessions) as session:
        days = config_store.chat_settings(session).attachment_retention_days
    unused_cutoff, retention_cutoff = now - unused_after, now - timedelta(days=days)
    unused = _in_batches(
        runtime,
        lambda s: attachments_sql.delete_unused_uploads(s, cutoff=unused_cutoff, limit=batch),
        batch,
    )
    expired = _in_batches(
        runtime,
        lambda s: attachments_sql.expire_stored(s, cutoff=retention_cutoff, limit=batch),
        batch,
    )
    return AttachmentCleanup(expired=expired, unused_deleted=unused, retention_days=days)


def _in_batches(runtime: Runtime, take: Callable[[Session], list[StoredFile]], batch: int) -> int:
    total = 0
    while True:
        with transaction(runtime.sessions) as session:
            taken = take(session)
            for item in taken:
                _delete_file(item)
        total += len(taken)
        if len(taken) < batch:
            return total


def _delete_file(item: StoredFile) -> None:
    if item.path is None:
        return
    try:
        Path(item.path).unlink(missing_ok=True)
    except OSError as exc:  # the row goes on; the stray file is logged for the operator
        log.warning(
            "attachment file not deleted",
            attachment_id=item.attachment_id,
            error=f"{type(exc).__name__}: {exc}",
        )
