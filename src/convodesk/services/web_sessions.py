"""Logging in to the web pages: an agent's login and password (the argon2 hash the
configuration stores) open a server-side session, kept as a row of the API-token table
(storage/api_tokens.py has the rules). The browser holds the session token in an HttpOnly
cookie; web/sessions.py adds the cookie, the CSRF token and the login throttle.

Sessions end after `IDLE` without a request, or `LIFETIME` after the login (one long
shift), whichever comes first; the desktop's periodic refresh keeps an open desktop alive.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

from convodesk.runtime import Runtime
from convodesk.storage import api_tokens, config_store
from convodesk.storage.api_tokens import SessionPolicy, SessionUser
from convodesk.storage.db import transaction

IDLE = timedelta(hours=2)
LIFETIME = timedelta(hours=12)
POLICY = SessionPolicy(idle=IDLE, lifetime=LIFETIME)


@functools.cache
def _dummy_hash() -> str:
    return config_store.hash_password("not-a-password-of-anyone")


def login(
    runtime: Runtime,
    login_name: str,
    password: str,
    *,
    policy: SessionPolicy = POLICY,
    now: datetime | None = None,
) -> str | None:
    """A new session token when the password is the agent's; None otherwise, whatever the
    reason (unknown login, no password set, wrong password), taking about as long in each
    case so that the time does not tell which logins exist."""
    now = now or datetime.now(UTC)
    with transaction(runtime.sessions) as session:
        agent = api_tokens.agent_by_login(session, login_name)
        if agent is None or not agent.password_hash:
            config_store.verify_password(_dummy_hash(), password)
            return None
        if not config_store.verify_password(agent.password_hash, password):
            return None
        role = "admin" if agent.role == "admin" else "agent"
        return api_tokens.create_session(
            session, agent_id=agent.id, role=role, policy=policy, now=now
        )


def authenticate(
    runtime: Runtime,
    token: str,
    *,
    policy: SessionPolicy = POLICY,
    now: datetime | None = None,
) -> SessionUser | None:
    with transaction(runtime.sessions) as session:
        return api_tokens.authenticate_session(
            session, token, policy=policy, now=now or datetime.now(UTC)
        )


def logout(runtime: Runtime, token: str, *, now: datetime | None = None) -> bool:
    with transaction(runtime.sessions) as session:
        return api_tokens.revoke_session(session, token, now=now or datetime.now(UTC))
