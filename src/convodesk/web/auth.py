"""Authentication for the JSON API, as FastAPI dependencies: a Bearer token, or the web
session cookie of the pages (web/sessions.py), which must come with the CSRF token on
every unsafe request. An Authorization header, when present, decides alone: a request with
a bad Bearer token is refused even if it also carries a good cookie."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from convodesk.runtime import Runtime
from convodesk.services import web_sessions
from convodesk.storage import api_tokens
from convodesk.storage.api_tokens import Principal, SessionUser
from convodesk.storage.db import transaction
from convodesk.web import sessions

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="convodesk"'}


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def session_user(request: Request, runtime: Runtime) -> SessionUser | None:
    """The web session of the request's cookie, if it is live (no CSRF check)."""
    token = request.cookies.get(sessions.COOKIE_NAME)
    if not token:
        return None
    return web_sessions.authenticate(runtime, token)


def check_csrf(request: Request, given: str | None) -> None:
    token = request.cookies.get(sessions.COOKIE_NAME, "")
    if not sessions.csrf_valid(request.app.state.csrf_key, token, given):
        raise HTTPException(
            403, f"missing or wrong CSRF token: send the page's token in {sessions.CSRF_HEADER}"
        )


def current_principal(request: Request, runtime: RuntimeDep) -> Principal:
    header = request.headers.get("authorization")
    if header is None and sessions.COOKIE_NAME in request.cookies:
        user = session_user(request, runtime)
        if user is None:
            raise HTTPException(401, "the session has ended: log in again", headers=_CHALLENGE)
        if request.method not in sessions.SAFE_METHODS:
            check_csrf(request, request.headers.get(sessions.CSRF_HEADER))
        return user.principal
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "missing Bearer token", headers=_CHALLENGE)
    with transaction(runtime.sessions) as session:
        principal = api_tokens.authenticate(session, token.strip())
    if principal is None:
        raise HTTPException(401, "unknown or revoked token", headers=_CHALLENGE)
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


def require_admin(principal: PrincipalDep) -> Principal:
    if not principal.is_admin:
        raise HTTPException(403, "this needs an admin token")
    return principal


AdminDep = Annotated[Principal, Depends(require_admin)]
