"""API Bearer tokens and web sessions. A token is shown once, when it is made; the database
keeps only its SHA-256 (the token has 256 bits of randomness, so a slow hash would add
nothing but latency to every request) and a short prefix to recognise it in listings.

A web session (the browser's login) is a row of the same table: prefix ``cds_``,
description ``web session``, always bound to an agent. It is accepted only from the
session cookie, never as a Bearer token, so the CSRF check that goes with the cookie
cannot be bypassed; it expires after a time without use and after a fixed lifetime, and
logging out revokes it. Its role is read from the agent at every request, so a role change
takes effect at once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from convodesk.storage.tables import AgentRow, ApiTokenRow

TOKEN_PREFIX = "cdk_"  # noqa: S105 - a prefix, not a secret
SESSION_PREFIX = "cds_"
SESSION_DESCRIPTION = "web session"
LAST_USED_RESOLUTION_SECONDS = 60


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
    about how much of a guessed token was right. Web-session tokens are refused here: they
    are valid only from the session cookie.
    """
    if token.startswith(SESSION_PREFIX):
        return None
    row = session.execute(
        select(ApiTokenRow, AgentRow.login)
        .outerjoin(AgentRow, AgentRow.id == ApiTokenRow.agent_id)
        .where(ApiTokenRow.token_hash == _digest(token), ApiTokenRow.revoked_at.is_(None))
    ).first()
    if row is None:
        return None
    token_row, login = row
    _touch(token_row, datetime.now(UTC))
    return Principal(token_id=token_row.id, role=token_row.role, agent_login=login)


def _touch(token_row: ApiTokenRow, now: datetime) -> None:
    last = token_row.last_used_at
    if last is None or (now - _aware(last)).total_seconds() > LAST_USED_RESOLUTION_SECONDS:
        token_row.last_used_at = now  # coarse, to keep reads from writing on every request


# --------------------------------------------------------------------------- web sessions


@dataclass(frozen=True, kw_only=True)
class SessionPolicy:
    """How long a web session lasts: `idle` since its last use (which is recorded to the
    minute), `lifetime` since the login, whichever ends first."""

    idle: timedelta
    lifetime: timedelta


@dataclass(frozen=True, kw_only=True)
class SessionUser:
    principal: Principal
    display_name: str


def create_session(
    session: Session, *, agent_id: int, role: str, policy: SessionPolicy, now: datetime
) -> str:
    """A new web session for the agent; ended sessions of that agent are deleted on the way
    (revoked, or past their lifetime), so the table does not grow with every login."""
    stale = now - policy.lifetime
    session.execute(
        delete(ApiTokenRow).where(
            ApiTokenRow.agent_id == agent_id,
            ApiTokenRow.description == SESSION_DESCRIPTION,
            ApiTokenRow.prefix.startswith(SESSION_PREFIX),
            or_(ApiTokenRow.revoked_at.is_not(None), ApiTokenRow.created_at < stale),
        )
    )
    token = SESSION_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiTokenRow(
            token_hash=_digest(token),
            prefix=token[: len(SESSION_PREFIX) + 6],
            role=role,
            agent_id=agent_id,
            description=SESSION_DESCRIPTION,
            created_at=now,
            last_used_at=now,
        )
    )
    session.flush()
    return token


def authenticate_session(
    session: Session, token: str, *, policy: SessionPolicy, now: datetime
) -> SessionUser | None:
    """The agent behind a live web session, or None (unknown, revoked, expired or not a
    session token). An expired session is revoked on the way."""
    if not token.startswith(SESSION_PREFIX):
        return None
    row = session.execute(
        select(ApiTokenRow, AgentRow)
        .join(AgentRow, AgentRow.id == ApiTokenRow.agent_id)
        .where(
            ApiTokenRow.token_hash == _digest(token),
            ApiTokenRow.revoked_at.is_(None),
            ApiTokenRow.description == SESSION_DESCRIPTION,
        )
    ).first()
    if row is None:
        return None
    token_row, agent = row
    last_used = _aware(token_row.last_used_at or token_row.created_at)
    if now - _aware(token_row.created_at) >= policy.lifetime or now - last_used >= policy.idle:
        token_row.revoked_at = now
        return None
    _touch(token_row, now)
    role = "admin" if agent.role == "admin" else "agent"
    return SessionUser(
        principal=Principal(token_id=token_row.id, role=role, agent_login=agent.login),
        display_name=agent.display_name,
    )


def revoke_session(session: Session, token: str, *, now: datetime) -> bool:
    """End a web session (logout); False if there was no live one."""
    if not token.startswith(SESSION_PREFIX):
        return False
    row = session.scalar(
        select(ApiTokenRow).where(
            ApiTokenRow.token_hash == _digest(token), ApiTokenRow.revoked_at.is_(None)
        )
    )
    if row is None:
        return False
    row.revoked_at = now
    return True


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they were stored in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def agent_by_login(session: Session, login: str) -> AgentRow | None:
    return session.scalar(select(AgentRow).where(AgentRow.login == login))
