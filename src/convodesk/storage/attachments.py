"""The attachment store: where the files live (`attachment_path`), and the SQL for
`attachments`: agent uploads, the lookup behind ``/sms/richcontent/{token}`` and the
cleanup batches.

The cleanup batches lock what they take (PostgreSQL: ``FOR UPDATE SKIP LOCKED``; SQLite:
the transaction's ``BEGIN IMMEDIATE``), so several nodes may clean at once without taking
the same rows, and a reply that links an upload in the same instant either wins (the upload
is no longer unused) or finds it gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from convodesk.storage.tables import AttachmentRow

MAX_TOKEN = 64  # the column's width: a longer token cannot exist


def attachment_path(data_dir: str | Path, token: str) -> Path:
    """Where the file of an attachment lives: ``{data_dir}/attachments/{token[:2]}/{token}``
    (inbound media and uploads alike)."""
    return Path(data_dir) / "attachments" / token[:2] / token


@dataclass(frozen=True, kw_only=True)
class StoredFile:
    """What a cleanup took away: the row id and the file to delete (None: no file)."""

    attachment_id: int
    path: str | None


def add_upload(
    session: Session,
    *,
    conversation_id: int,
    uploaded_by: str,
    token: str,
    content_type: str,
    size: int,
    filename: str,
    path: str,
    now: datetime,
) -> AttachmentRow:
    row = AttachmentRow(
        message_id=None,
        conversation_id=conversation_id,
        uploaded_by=uploaded_by,
        token=token,
        state="stored",
        content_type=content_type,
        size=size,
        filename=filename,
        path=path,
        created_at=now,
        stored_at=now,
    )
    session.add(row)
    session.flush()
    return row


def by_token(session: Session, token: str, *, lock: bool = False) -> AttachmentRow | None:
    """The attachment with this token, or None. With `lock`, the row stays locked until the
    transaction ends (PostgreSQL; SQLite's writer lock already serialises writers)."""
    if not token or len(token) > MAX_TOKEN:
        return None
    query = select(AttachmentRow).where(AttachmentRow.token == token)
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    return session.scalars(query).one_or_none()


def of_message(session: Session, message_id: int) -> list[AttachmentRow]:
    return list(
        session.scalars(
            select(AttachmentRow)
            .where(AttachmentRow.message_id == message_id)
            .order_by(AttachmentRow.id)
        )
    )


def _skip_locked(session: Session, query: Select[AttachmentRow]) -> Select[AttachmentRow]:
    if session.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


def expire_stored(session: Session, *, cutoff: datetime, limit: int) -> list[StoredFile]:
    """Mark up to `limit` stored attachments created before `cutoff` ``expired`` (the path
    cleared, the row kept for the transcript); return their files, for the caller to delete
    before it commits."""
    query = (
        select(AttachmentRow)
        .where(AttachmentRow.state == "stored", AttachmentRow.created_at < cutoff)
        .order_by(AttachmentRow.created_at, AttachmentRow.id)
        .limit(limit)
    )
    taken = []
    for row in session.scalars(_skip_locked(session, query)):
        taken.append(StoredFile(attachment_id=row.id, path=row.path))
        row.state, row.path = "expired", None
    session.flush()
    return taken


def delete_unused_uploads(session: Session, *, cutoff: datetime, limit: int) -> list[StoredFile]:
    """Delete up to `limit` uploads that no message uses and that were made before
    `cutoff`; return their files, for the caller to delete before it commits."""
    query = (
        select(AttachmentRow)
        .where(
            AttachmentRow.uploaded_by.is_not(None),
            AttachmentRow.message_id.is_(None),
            AttachmentRow.created_at < cutoff,
        )
        .order_by(AttachmentRow.created_at, AttachmentRow.id)
        .limit(limit)
    )
    taken = [
        StoredFile(attachment_id=row.id, path=row.path)
        for row in session.scalars(_skip_locked(session, query))
    ]
    if taken:
        session.execute(
            delete(AttachmentRow)
            .where(AttachmentRow.id.in_([t.attachment_id for t in taken]))
            .execution_options(synchronize_session=False)
        )
    return taken
