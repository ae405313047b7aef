"""The web pages at ``/``: login and logout, the agent desktop, the admin pages.

Pages are rendered on the server with Jinja2 and made live by plain JavaScript modules
(web/static/js/) that call the same ``/api/v1`` endpoints as any client, authenticated by
the session cookie plus the CSRF token the page carries in ``<meta name="csrf-token">``.
Templates never receive a secret: forms get the resources with their secrets left out, and
a blank secret field means "keep the stored one".

Every page answer carries a strict Content-Security-Policy (no inline script, nothing from
another origin), so the pages work offline and a stored message cannot run script.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, get_args
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

import convodesk
from convodesk.domain import configurator
from convodesk.domain.config_model import TRIGGERS, ChatSettings, Prompts
from convodesk.services import admin_views, configuration, web_sessions
from convodesk.services.errors import NotFoundError
from convodesk.storage.api_tokens import SessionUser
from convodesk.storage.event_log import OUTCOMES, State
from convodesk.web import auth, sessions

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
TEMPLATES.env.globals["static"] = lambda path: f"/static/{path}?v={convodesk.__version__}"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
GENERIC_LOGIN_ERROR = "The login or the password is not right."
EVENT_STATES: tuple[str, ...] = get_args(State)
OUTBOX_STATES = ("dead", "failed", "pending", "sending", "done")
WEEKDAY_NAMES = {
    "mon": "Monday",
    "tue": "Tuesday",
    "wed": "Wednesday",
    "thu": "Thursday",
    "fri": "Friday",
    "sat": "Saturday",
    "sun": "Sunday",
}

router = APIRouter(include_in_schema=False)


# --------------------------------------------------------------------------- helpers


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    user: SessionUser | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    token = request.cookies.get(sessions.COOKIE_NAME)
    csrf = sessions.csrf_token(request.app.state.csrf_key, token) if user and token else ""
    response = TEMPLATES.TemplateResponse(
        request,
        name,
        {"user": user, "csrf_token": csrf, **context},
        status_code=status_code,
    )
    response.headers.update(PAGE_HEADERS)
    return response


def error_page(request: Request, user: SessionUser | None, status: int, message: str) -> Response:
    titles = {403: "Not allowed", 404: "Not found", 429: "Too many attempts"}
    return render(
        request,
        "error.html",
        {"title": titles.get(status, "Error"), "message": message},
        user=user,
        status_code=status,
    )


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


async def _user(request: Request) -> SessionUser | None:
    runtime = request.app.state.runtime
    return await run_in_threadpool(auth.session_user, request, runtime)


async def _page_user(request: Request, *, admin: bool) -> SessionUser | Response:
    user = await _user(request)
    if user is None:
        return _to_login(request)
    if admin and not user.principal.is_admin:
        return error_page(request, user, 403, "This page is for administrators.")
    return user


def _same_origin(request: Request) -> bool:
    """A login form posted from another site is refused (login CSRF)."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def _client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# --------------------------------------------------------------------------- login


@router.get("/login")
async def login_form(
    request: Request, target: Annotated[str, Query(alias="next", max_length=2000)] = "/"
) -> Response:
    if await _user(request) is not None:
        return RedirectResponse(sessions.safe_next(target), status_code=303)
    notice = "You are logged out." if request.query_params.get("out") else None
    context = {"next": sessions.safe_next(target), "login": "", "notice": notice}
    return render(request, "login.html", context)


@router.post("/login")
async def login_submit(request: Request) -> Response:
    runtime = request.app.state.runtime
    form = await request.form()
    login = str(form.get("login", ""))[:64].strip()
    password = str(form.get("password", ""))[:1024]
    target = sessions.safe_next(str(form.get("next", "/")))
    context = {"next": target, "login": login, "notice": None}
    if not _same_origin(request):
        return error_page(request, None, 403, "A login must come from this site's own form.")
    throttle: sessions.LoginThrottle = request.app.state.login_throttle
    address = _client_address(request)
    wait = throttle.retry_after(login, address)
    if wait:
        minutes = max(1, round(wait / 60))
        message = f"Too many failed attempts. Try again in {minutes} minute(s)."
        response = render(request, "login.html", {**context, "error": message}, status_code=429)
        response.headers["Retry-After"] = str(wait)
        return response
    token = (
        await run_in_threadpool(web_sessions.login, runtime, login, password)
        if login and password
        else None
    )
    if token is None:
        throttle.failed(login, address)
        return render(
            request, "login.html", {**context, "error": GENERIC_LOGIN_ERROR}, status_code=401
        )
    throttle.succeeded(login, address)
    redirect = RedirectResponse(target, status_code=303)
    redirect.set_cookie(
        sessions.COOKIE_NAME,
        token,
        max_age=int(web_sessions.LIFETIME.total_seconds()),
        path="/",
        httponly=True,
        samesite="lax",
        secure=sessions.cookie_secure(request, runtime),
    )
    return redirect


@router.post("/logout")
async def logout(request: Request) -> Response:
    runtime = request.app.state.runtime
    token = request.cookies.get(sessions.COOKIE_NAME)
    if not token:
        return RedirectResponse("/login", status_code=303)
    form = await request.form()
    given = request.headers.get(sessions.CSRF_HEADER) or str(form.get(sessions.CSRF_FIELD, ""))
    if not sessions.csrf_valid(request.app.state.csrf_key, token, given):
        user = await _user(request)
        return error_page(request, user, 403, "The logout form was out of date: reload the page.")
    await run_in_threadpool(web_sessions.logout, runtime, token)
    response = RedirectResponse("/login?out=1", status_code=303)
    response.delete_cookie(
        sessions.COOKIE_NAME,
        path="/",
        httponly=True,
        samesite="lax",
        secure=sessions.cookie_secure(request, runtime),
    )
    return response


# --------------------------------------------------------------------------- desktop


@router.get("/")
async def desktop(request: Request) -> Response:
    user = await _page_user(request, admin=False)
    if isinstance(user, Response):
        return user
    return render(request, "desktop.html", {"active": "desktop"}, user=user)


# --------------------------------------------------------------------------- admin


@router.get("/admin")
async def admin_home(request: Request) -> Response:
    user = await _page_user(request, admin=True)
    if isinstance(user, Response):
        return user
    return RedirectResponse("/admin/services", status_code=303)


def _flash(request: Request, noun: str) -> str | None:
    for key, verb in (("saved", "Saved"), ("deleted", "Deleted")):
        name = request.query_params.get(key)
        if name:
            return f"{verb} {noun} {name}."
    return None


@router.get("/admin/services")
async def services_page(request: Request) -> Response:
    user = await _page_user(request, admin=True)
    if isinstance(user, Response):
        return user
    view = await run_in_threadpool(admin_views.overview, request.app.state.runtime)
    context = {"active": "services", "view": view, "flash": _flash(request, "messaging service")}
    return render(request, "admin/services.html", context, user=user)


def _service_form(item: dict[str, Any] | None) -> dict[str, Any]:
    """The service in the shape of its form, without a single secret."""
    if item is None:
        return {
            "name": "",
            "service_connection": "",
            "region": "",
            "outbound": [{"auth_id": "", "stored": False}],
            "triggers": ["MESSAGE_INBOUND", "MESSAGE_DELIVERY"],
            "templates": [],
            "webhook_stored": False,
        }
    auth_entries = [a for a in item.get("authentication", []) if isinstance(a, dict)]
    webhook = next((a for a in auth_entries if a.get("auth_id") == "webhook"), {})
    return {
        "name": item.get("name", ""),
        "service_connection": item.get("service_connection", ""),
        "region": item.get("region", ""),
        "outbound": [
            {"auth_id": a.get("auth_id", ""), "stored": True}
            for a in auth_entries
            if a.get("auth_id") != "webhook"
        ],
        "triggers": list(webhook.get("triggers", [])),
        "templates": [
            {
                "app_id": t.get("app_id", ""),
                "name": t.get("name", ""),
                "language": t.get("language", ""),
                "parameters": "\n".join(t.get("parameters", [])),
                "text": t.get("text") or "",
            }
            for t in item.get("whatsapp_templates", [])
        ],
        "webhook_stored": True,
    }


async def _resource(request: Request, section: configuration.Section, key: str) -> Any:
    runtime = request.app.state.runtime
    try:
        return await run_in_threadpool(configuration.get_resource, runtime, section, key)
    except NotFoundError:
        return None


@router.get("/admin/services/new")
async def service_new(request: Request) -> Response:
    return await _service_edit(request, None)


@router.get("/admin/services/{name}")
async def service_edit(request: Request, name: str) -> Response:
    return await _service_edit(request, name)


async def _service_edit(request: Request, name: str | None) -> Response:
    user = await _page_user(request, admin=True)
    if isinstance(user, Response):
        return user
    item = None
    if name is not None:
        item = await _resource(request, "messaging_services", name)
        if item is None:
            return error_page(request, user, 404, f"There is no messaging service {name!r}.")
    context = {
        "active": "services",
        "is_new": name is None,
        "service": _service_form(item),
        "all_triggers": TRIGGERS,
        "regions": ("eu", "us", "br"),
    }
    return render(request, "admin/service_form.html", context, user=user)


@router.get("/admin/queues")
async def queues_page(request: Request) -> Response:
    user = await _page_user(request, admin=True)
    if isinstance(user, Response):
        return user
    view = await run_in_threadpool(admin_views.overview, request.app.state.runtime)
    context = {"active": "queues", "view": view, "flash": _flash(request, "queue")}
    return render(request, "admin/queues.html", context, user=user)


@router.get("/admin/queues/new")
async def queue_new(request: Request) -> Response:
    return await _queue_edit(request, None)


@router.get("/admin/queues/{name}")
async def queue_edit(request: Request, name: str) -> Response:
    return await _queue_edit(request, name)


async def _queue_edit(request: Request, name: str | None) -> Response:
    user = await _page_user(request, admin=True)
    if isinstance(user, Response):
        return user
    item: dict[str, Any] = {"name": "", "addresses": [""]}
    if name is not None:
        found = await _resource(request, "queues", name)
        if found is None:
            return error_page(request, user, 404, f"There is no queue {name!r}.")
        item = found
    hours = item.get("business_hours") or {}
    context = {
        "active": "queues",
        "is_new": name is None,
        "queue": item,
        "hours": {
            "enabled": bool(hours),
            "timezone": hours.get("timezone", ""),
            "weekly": {d: ", ".join(hours.get("weekly", {}).get(d, [])) for d in WEEKDAY_NAMES},
            "closed_dates": ", ".join(hours.get("closed_dates", [])),
        },
        "weekdays": WEEKDAY_NAMES,
        "subchannels": configurator.SUBCHANNELS,
    }
    return render(request, "admin/queue_form.html", context, user=user)


@router.get("/admin/agents")
async def agents_page(request: Request) -> Response:
    user = await _page_user(request, admin=True)
    if isinstance(user, Response):
        return user
    view = await run_in_threadpool(admin_views.overview, request.app.state.runtime)
    context = {"active": "agents", "view": view, "flash": _flash(request, "agent")}
    return render(request, "admin/agents.html", context, user=user)


@router.get("/admin/agents/new")
async def agent_new(request: Request) -> Response:
    return await _agent_edit(request, None)


@router.get("/admin/agents/{login}")
async def agent_edit(request: Request, login: str) -> Response:
    return await _agent_edit(request, login)


async def _agent_edit(request: Request, login: str | None) -> Response:
    user = await _page_user(request, admin=True)
    if isinstance(user, Response):
        return user
    item: dict[str, Any] = {"login": "", "display_name": "", "role": "agent", "queues": []}
    if login is not None:
        found = await _resource(request, "agents", login)
        if found is None:
            return error_page(request, user, 404, f"There is no agent {login!r}.")
        item = {k: v for k, v in found.items() if k != "password"}
    view = await run_in_threadpool(admin_views.overview, request.app.state.runtime)
    context = {
        "active": "agents",
        "is_new": login is None,
        "agent": item,
        "queue_names": [q.name for q in view.queues],
        "default_max_chats": view.default_max_chats,
        "min_password": configurator.MIN_PASSWORD_LENGTH,
    }
    return render(request, "admin/agent_form.html", context, user=user)


CHAT_FIELDS: tuple[tuple[str, str, str], ...] = (
    # name, label, hint
    ("offer_timeout_seconds", "Offer timeout (seconds)", "How long an agent has to accept."),
    (
        "missed_offers_before_not_ready",
        "Missed offers before not ready",
        "After this many offers in a row time out, the agent is set to not ready.",
    ),
    ("max_concurrent_chats", "Chats per agent", "Default for agents without their own limit."),
    ("queue_max_size", "Queue size limit", "Waiting conversations per queue, by default."),
    (
        "reopen_window_seconds",
        "Reopen window (seconds)",
        "A customer writing again within this time reopens the ended conversation.",
    ),
    (
        "idle_warning_seconds",
        "Idle warning after (seconds)",
        "The customer gets the idle-warning prompt after this long without a message.",
    ),
    (
        "inactivity_close_seconds",
        "Close inactive chats after (seconds)",
        "Conversations without a message for this long are ended.",
    ),
    ("attachment_max_bytes", "Attachment size limit (bytes)", "For uploads and media."),
    (
        "attachment_retention_days",
        "Keep attachments (days)",
        "Stored media are deleted after this many days.",
    ),
    ("event_retention_days", "Keep the event log (days)", "Older callbacks are deleted hourly."),
)
PROMPT_LABELS: dict[str, tuple[str, str]] = {
    "welcome": ("Welcome", "Sent when a new conversation arrives."),
    "queue_position": ("Position in queue", "Placeholders: {queue}, {position}."),
    "queue_full": ("Queue full", "Sent when the queue is at its size limit."),
    "outside_business_hours": ("Outside business hours", "Sent when the queue is closed."),
    "idle_warning": ("Idle warning", "Sent before an inactive chat is closed."),
    "closed": ("Chat closed", "Sent when the conversation ends."),
}


@router.get("/admin/chat-settings")
async def chat_settings_page(request: Request) -> Response:
    user = await _page_user(request, admin=True)
    if isinstance(user, Response):
        return user
    runtime = request.app.state.runtime
    stored = await run_in_threadpool(configuration.get_chat_settings, runtime)
    defaults = {
        f.name: getattr(ChatSettings(), f.name)
        for f in dataclasses.fields(ChatSettings)
        if f.name != "prompts"
    }
    values = {**defaults, **{k: v for k, v in stored.items() if k != "prompts"}}
    prompts = {
        f.name: (stored.get("prompts") or {}).get(f.name) or "" for f in dataclasses.fields(Prompts)
    }
    context = {
        "active": "chat-settings",
        "values": values,
        "defaults": defaults,
        "prompts": prompts,
        "chat_fields": CHAT_FIELDS,
        "prompt_labels": PROMPT_LABELS,
        "flash": "Saved the chat settings." if request.query_params.get("saved") else None,
    }
    return render(request, "admin/chat_settings.html", context, user=user)


@router.get("/admin/events")
async def events_page(request: Request) -> Response:
    user = await _page_user(request, admin=True)
    if isinstance(user, Response):
        return user
    view = await run_in_threadpool(admin_views.overview, request.app.state.runtime)
    context = {
        "active": "events",
        "services": [s.name for s in view.services],
        "triggers": TRIGGERS,
        "outcomes": OUTCOMES,
        "states": EVENT_STATES,
    }
    return render(request, "admin/events.html", context, user=user)


@router.get("/admin/outbox")
async def outbox_page(request: Request) -> Response:
    user = await _page_user(request, admin=True)
    if isinstance(user, Response):
        return user
    context = {"active": "outbox", "states": OUTBOX_STATES}
    return render(request, "admin/outbox.html", context, user=user)
