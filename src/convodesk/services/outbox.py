"""Outbox use cases for admins: list entries, queue dead letters again."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from convodesk.domain.config_model import Problem
from convodesk.runtime import Runtime
from convodesk.services.errors import InvalidRequestError
from convodesk.storage import outbox
from convodesk.storage.db import transaction

STATES = ("pending", "sending", "done", "failed", "dead")


def list_entries(runtime: Runtime, states: tuple[str, ...], limit: int) -> list[dict[str, Any]]:
    unknown = sorted(set(states) - set(STATES))
    if unknown:
        raise InvalidRequestError(
            [
                Problem(
                    path="state",
                    message=f"unknown state {s!r}: expected one of {', '.join(STATES)}",
                )
                for s in unknown
            ]
        )
    with transaction(runtime.sessions) as session:
        return [
            {
                "id": o.id,
                "message_id": m.id,
                "conversation_id": m.conversation_id,
                "state": o.state,
                "attempts": o.attempts,
                "next_attempt_at": o.next_attempt_at,
                "last_error": o.last_error,
                "message_status": m.status,
                "reason_code": m.reason_code,
                "text": m.text,
                "created_at": o.created_at,
            }
            for o, m in outbox.list_outbox(session, states=states, limit=limit)
        ]


def retry_entries(runtime: Runtime, body: dict[str, Any]) -> int:
    ids = body.get("ids")
    if body.get("all") is True and ids is None:
        selection = None
    elif (
        isinstance(ids, list)
        and ids
        and all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
    ):
        selection = ids
    else:
        raise InvalidRequestError(
            [Problem(path="ids", message='expected {"ids": [outbox ids]} or {"all": true}')]
        )
    with transaction(runtime.sessions) as session:
        return outbox.retry(session, selection, now=datetime.now(UTC))
