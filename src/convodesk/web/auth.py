"""Bearer-token authentication for the JSON API, as FastAPI dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from convodesk.runtime import Runtime
from convodesk.storage import api_tokens
from convodesk.storage.api_tokens import Principal
from convodesk.storage.db import transaction

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="convodesk"'}


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def current_principal(request: Request, runtime: RuntimeDep) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
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
