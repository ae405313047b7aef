"""API Bearer tokens. A token is shown once, when it is made; the database keeps only its
SHA-256 (the token has 256 bits of randomness, so a slow hash would add nothing but
latency to every request) and a short prefix to recognise it in listings."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from convodesk.storage.tables import AgentRow, ApiTokenRow

TOKEN_PREFIX = "cdk_"  # noqa: S105 - a prefix, not a secret


class UnknownAgentError(LookupError):
    """The agent login named for a token does not exist."""


@dataclass(frozen=True, kw_only=True)
class Principal:
    """Who is calling: an admin or agent token, with its agent login if it has one."""

    token_id: int
    role: str
    agent_login: str | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(
    session: Session, *, role: str, agent_login: str | None = None, description: str | None = None
) -> str:
    if role not in ("admin", "agent"):
        raise ValueError("role must be admin or agent")
    agent_id = None
    if agent_login is not None:
        agent_id = session.scalar(select(AgentRow.id).where(AgentRow.login == agent_login))
        if agent_id is None:
            raise UnknownAgentError(agent_login)
    elif role == "agent":
        raise ValueError("an agent token needs the agent's login")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiTokenRow(
            token_hash=_digest(token),
            prefix=token[: len(TOKEN_PREFIX) + 6],
            role=role,
            agent_id=agent_id,
            description=description,
        )
    )
    session.flush()
    return token


def authenticate(session: Session, token: str) -> Principal | None:
    """The principal for `token`, or None for an unknown or revoked one.

    The lookup is by the token's digest through a unique index, so its timing says nothing
    about how much of a guessed token was right.
    """
    row = session.execute(
        select(ApiTokenRow, AgentRow.login)
        .outerjoin(AgentRow, AgentRow.id == ApiTokenRow.agent_id)
        .where(ApiTokenRow.token_hash == _digest(token), ApiTokenRow.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    token_row, login = row
    now = datetime.now(UTC)
    last = token_row.last_used_at
    if last is None or (now - _aware(last)).total_seconds() > 60:
        token_row.last_used_at = now  # coarse, to keep reads from writing on every request
    return Principal(token_id=token_row.id, role=token_row.role, agent_login=login)


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they were stored in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
