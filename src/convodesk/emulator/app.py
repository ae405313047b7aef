"""The emulator's HTTP surface: Sinch's own paths plus the ``/_emulator/`` control plane.

One port serves every region: the API answers under ``/{eu|us|br}/v1/projects/...`` and, when
the configuration has a single region, under ``/v1/projects/...`` as well. ``/oauth2/token`` is
at the root, as on auth.sinch.com. Every error, including unknown paths and wrong methods, is
Sinch's ``{"error": {"code", "message", "status", "details"}}``, except on ``/oauth2/token``,
which answers OAuth2 errors (RFC 6749 ``{"error", "error_description"}``) like Sinch's
authorization server; the SDKs read ``error_description`` there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from convodesk.domain.config_model import CHANNELS, TRIGGERS
from convodesk.emulator import channels as channel_rules
from convodesk.emulator.auth import Principal, parse_basic
from convodesk.emulator.config import (
    REGIONS,
    AppConfig,
    EmulatorConfig,
    ProjectConfig,
    target_problem,
)
from convodesk.emulator.core import AppEntry, Emulator, Faults, ScriptedOutcome, Webhook
from convodesk.emulator.errors import ApiError, dumps, error_body, invalid
from convodesk.emulator.payloads import REASON_CODES
from convodesk.emulator.validation import parse_send_request
from convodesk.sinch.ids import new_ulid

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
Handler = Callable[[Request, Mapping[str, str]], Awaitable[Response]]

_API = r"^(?:/(?P<region>[^/]+))?/v1/projects/(?P<project>[^/]+)"
_CREDENTIAL_FIELD = {
    "WHATSAPP": "static_bearer",
    "RCS": "static_bearer",
    "SMS": "static_bearer",
    "VIBERBM": "static_bearer",
    "MESSENGER": "static_token",
    "INSTAGRAM": "instagram_credentials",
    "TELEGRAM": "telegram_credentials",
    "LINE": "line_credentials",
}
_FAULT_STATUSES = (429, 500, 502, 503, 504)


def create_emulator_app(
    config: EmulatorConfig,
    *,
    token_ttl_seconds: int | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """Build the ASGI app; ``app.state.emulator`` is its `Emulator` (see `emulator_of`).

    ``token_ttl_seconds`` overrides the configuration's ``token_ttl_seconds`` (default 3600).
    ``clock`` gives epoch seconds for timestamps, token expiry and the WhatsApp window; delivery
    delays and retries run on real time.
    """
    emulator = Emulator(
        config,
        token_ttl_seconds=token_ttl_seconds or config.token_ttl_seconds,
        clock=clock,
    )
    routes = _Routes(emulator)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await emulator.start()
        try:
            yield
        finally:
            await emulator.stop()

    every_method = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    app = Starlette(
        routes=[Route("/{path:path}", routes.dispatch, methods=every_method)], lifespan=lifespan
    )
    app.state.emulator = emulator
    return app


def emulator_of(app: Starlette) -> Emulator:
    emulator = app.state.emulator
    assert isinstance(emulator, Emulator)
    return emulator


@dataclass(frozen=True)
class _Route:
    pattern: re.Pattern[str]
    methods: Mapping[str, Handler]


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(dumps(data), status_code=status, headers=headers, media_type="application/json")


def _error(exc: ApiError) -> Response:
    return _json(exc.body(), exc.http_status, exc.headers)


class _Routes:
    def __init__(self, emulator: Emulator) -> None:
        self.em = emulator
        single = emulator.config.regions
        self.default_region = next(iter(single)) if len(single) == 1 else None
        self.routes = [
            _Route(re.compile(r"^/oauth2/token$"), {"POST": self.token}),
            _Route(re.compile(_API + r"/messages:send$"), {"POST": self.send}),
            _Route(re.compile(_API + r"/apps$"), {"GET": self.list_apps}),
            _Route(re.compile(_API + r"/apps/(?P<app>[^/]+)$"), {"GET": self.get_app}),
            _Route(
                re.compile(_API + r"/apps/(?P<app>[^/]+)/webhooks$"), {"GET": self.list_webhooks}
            ),
            _Route(re.compile(_API + r"/webhooks$"), {"POST": self.create_webhook}),
            _Route(
                re.compile(_API + r"/webhooks/(?P<webhook>[^/]+)$"),
                {
                    "GET": self.get_webhook,
                    "PATCH": self.update_webhook,
                    "DELETE": self.delete_webhook,
                },
            ),
            _Route(re.compile(r"^/_emulator/?$"), {"GET": self.status}),
            _Route(
                re.compile(r"^/_emulator/inbound$"),
                {"POST": self.inbound, "GET": self.list_inbound},
            ),
            _Route(re.compile(r"^/_emulator/sent$"), {"GET": self.sent}),
            _Route(
                re.compile(r"^/_emulator/outcomes$"),
                {"POST": self.script_outcomes, "GET": self.list_outcomes},
            ),
            _Route(
                re.compile(r"^/_emulator/faults$"),
                {"POST": self.set_faults, "GET": self.get_faults},
            ),
            _Route(re.compile(r"^/_emulator/callbacks$"), {"GET": self.callbacks}),
            _Route(re.compile(r"^/_emulator/stats$"), {"GET": self.stats}),
            _Route(re.compile(r"^/_emulator/reset$"), {"POST": self.reset}),
            _Route(re.compile(r"^/_emulator/tokens/expire$"), {"POST": self.expire_tokens}),
        ]

    async def dispatch(self, request: Request) -> Response:
        path = request.url.path
        for route in self.routes:
            match = route.pattern.match(path)
            if match is None:
                continue
            handler = route.methods.get(request.method)
            if handler is None:
                allowed = ", ".join(sorted(route.methods))
                return _json(
                    error_body(405, f"Method {request.method} is not allowed on {path}"),
                    405,
                    {"allow": allowed},
                )
            params = {k: v for k, v in match.groupdict().items() if v is not None}
            try:
                return await handler(request, params)
            except ApiError as exc:
                return _error(exc)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("emulator error on %s %s", request.method, path)
                return _json(error_body(500, "Internal error in the emulator"), 500)
        return _json(error_body(404, f"No such path: {path}"), 404)

    # ------------------------------------------------------------------ helpers

    async def _body(self, request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise ApiError(413, f"Request body is larger than {MAX_BODY_BYTES} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise ApiError(413, f"Request body is larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _json_body(self, request: Request) -> Any:
        raw = await self._body(request)
        if not raw.strip():
            raise ApiError(400, "Invalid JSON payload received: the body is empty")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"Invalid JSON payload received: {exc}") from None

    def _region(self, params: Mapping[str, str]) -> str:
        region = params.get("region")
        if region is None:
            if self.default_region is None:
                raise ApiError(
                    404,
                    "This emulator serves several regions: call /{region}/v1/... "
                    f"with region one of {', '.join(sorted(self.em.config.regions))}",
                )
            return self.default_region
        if region not in REGIONS:
            raise ApiError(404, f"Unknown region {region!r}")
        return region

    async def _api(
        self, request: Request, params: Mapping[str, str]
    ) -> tuple[Principal, ProjectConfig, str]:
        """Latency, authentication, project and project rate: what every API call goes through."""
        await self._latency()
        region = self._region(params)
        principal = self.em.tokens.authenticate(request.headers)
        project = self.em.project_for(params["project"], region)
        if principal.project_id != project.id:
            raise ApiError(
                403,
                f"The credentials used do not give access to project {project.id}",
            )
        self.em.check_project_rate(project.id)
        return principal, project, region

    async def _latency(self) -> None:
        latency = self.em.faults.latency_ms
        if latency > 0:
            await asyncio.sleep(latency / 1000)

    # --------------------------------------------------------------- OAuth2

    async def token(self, request: Request, _params: Mapping[str, str]) -> Response:
        await self._latency()
        raw = await self._body(request)
        try:
            form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8"), strict_parsing=False).items()}
        except UnicodeDecodeError:
            form = {}
        credentials: tuple[str, str] | None = None
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            credentials = parse_basic(value.strip())
        elif "client_id" in form and "client_secret" in form:
            credentials = (form["client_id"], form["client_secret"])
        grant = form.get("grant_type")
        if grant is None:
            return _oauth_error(400, "invalid_request", "grant_type is required")
        if grant != "client_credentials":
            return _oauth_error(
                400, "unsupported_grant_type", "only grant_type=client_credentials is supported"
            )
        principal = self.em.tokens.check_key(*credentials) if credentials else None
        if principal is None:
            return _oauth_error(
                401,
                "invalid_client",
                "Client authentication failed: unknown key id or wrong key secret",
                {"www-authenticate": 'Basic realm="sinch"'},
            )
        token, expires_in = self.em.tokens.issue(principal)
        return _json(
            {"access_token": token, "expires_in": expires_in, "scope": "", "token_type": "bearer"},
            headers={"cache-control": "no-store"},
        )

    # ------------------------------------------------------------------ send

    async def send(self, request: Request, params: Mapping[str, str]) -> Response:
        try:
            principal, project, region = await self._api(request, params)
        except ApiError as exc:
            if exc.http_status == 429:  # the project's rate: count it for the named app too
                self.em.stats.rejected(await self._app_named(request), params["project"])
            raise
        body = await self._json_body(request)
        app_id = body.get("app_id") if isinstance(body, dict) else None
        entry = None
        if isinstance(app_id, str) and app_id:
            entry = self.em.app_for(project.id, app_id, region)
        send = parse_send_request(
            body, processing_mode=entry.app.processing_mode if entry else None
        )
        if entry is None:  # parse_send_request refused a missing app_id already
            entry = self.em.app_for(project.id, send.app_id, region)
        record = self.em.accept_send(principal, entry, send)
        return _json({"message_id": record.message_id, "accepted_time": record.accepted_time})

    async def _app_named(self, request: Request) -> str | None:
        """The ``app_id`` of a send's body, if it is readable; for the statistics only."""
        try:
            body = json.loads(await self._body(request))
        except (ApiError, ValueError, UnicodeDecodeError):
            return None
        app_id = body.get("app_id") if isinstance(body, dict) else None
        return app_id if isinstance(app_id, str) else None

    # ------------------------------------------------------------------ apps

    async def list_apps(self, request: Request, params: Mapping[str, str]) -> Response:
        _principal, project, region = await self._api(request, params)
        apps = [_app_json(app) for app in self.em.apps_in(project.id, region)]
        return _json({"apps": apps})

    async def get_app(self, request: Request, params: Mapping[str, str]) -> Response:
        _principal, project, region = await self._api(request, params)
        entry = self.em.app_for(project.id, params["app"], region)
        return _json(_app_json(entry.app))

    # -------------------------------------------------------------- webhooks

    async def list_webhooks(self, request: Request, params: Mapping[str, str]) -> Response:
        _principal, project, region = await self._api(request, params)
        entry = self.em.app_for(project.id, params["app"], region)
        return _json({"webhooks": [w.to_json() for w in self.em.webhooks_of(entry.app.id)]})

    async def create_webhook(self, request: Request, params: Mapping[str, str]) -> Response:
        _principal, project, region = await self._api(request, params)
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise invalid("body", "expected a JSON object")
        _check_webhook_fields(body, partial=False)
        entry = self.em.app_for(project.id, body["app_id"], region)
        hook = Webhook(
            id=new_ulid(),
            app_id=entry.app.id,
            project_id=project.id,
            target=body["target"],
            triggers=tuple(body["triggers"]),
            secret=body.get("secret") or None,
            target_type=body.get("target_type", "HTTP"),
            client_credentials=body.get("client_credentials"),
        )
        return _json(self.em.add_webhook(hook).to_json())

    async def get_webhook(self, request: Request, params: Mapping[str, str]) -> Response:
        _principal, project, region = await self._api(request, params)
        return _json(self.em.webhook_for(project.id, params["webhook"], region).to_json())

    async def update_webhook(self, request: Request, params: Mapping[str, str]) -> Response:
        _principal, project, region = await self._api(request, params)
        hook = self.em.webhook_for(project.id, params["webhook"], region)
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise invalid("body", "expected a JSON object")
        mask_param = request.query_params.get("update_mask")
        updatable = {"target", "target_type", "secret", "triggers", "client_credentials"}
        if mask_param:
            mask = {m.strip() for m in mask_param.split(",") if m.strip()}
            unknown = mask - updatable
            if unknown:
                raise invalid("update_mask", f"cannot update {', '.join(sorted(unknown))}")
        else:
            mask = set(body) & updatable
        if "app_id" in body and body["app_id"] != hook.app_id:
            raise invalid("app_id", "a webhook cannot move to another app")
        _check_webhook_fields(body, partial=True)
        if "target" in mask and "target" in body:
            hook.target = body["target"]
        if "triggers" in mask and "triggers" in body:
            hook.triggers = tuple(body["triggers"])
        if "secret" in mask:
            hook.secret = body.get("secret") or None
        if "target_type" in mask and "target_type" in body:
            hook.target_type = body["target_type"]
        if "client_credentials" in mask:
            hook.client_credentials = body.get("client_credentials")
        return _json(hook.to_json())

    async def delete_webhook(self, request: Request, params: Mapping[str, str]) -> Response:
        _principal, project, region = await self._api(request, params)
        hook = self.em.webhook_for(project.id, params["webhook"], region)
        self.em.delete_webhook(hook.id)
        return _json({})

    # --------------------------------------------------------- control plane

    async def status(self, _request: Request, _params: Mapping[str, str]) -> Response:
        return _json(
            {
                "regions": sorted(self.em.config.regions),
                "projects": [
                    {
                        "id": p.id,
                        "region": p.region,
                        "apps": [a.id for a in p.apps],
                    }
                    for p in self.em.config.projects
                ],
                "sent": len(self.em.sent),
                "callbacks_in_flight": self.em.dispatcher.in_flight,
                "faults": self.em.faults.to_json(),
            }
        )

    async def inbound(self, request: Request, _params: Mapping[str, str]) -> Response:
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise invalid("body", "expected a JSON object")
        allowed = {
            "app_id",
            "channel",
            "identity",
            "text",
            "media_url",
            "location",
            "postback_data",
            "contact_name",
            "sender_id",
            "reply_to_message_id",
        }
        for key in body:
            if key not in allowed:
                raise invalid(key, "unknown field")
        app_id = _req_str(body, "app_id")
        entry = self.em.apps.get(app_id)
        if entry is None:
            raise ApiError(404, f"App {app_id} not found")
        channel = _req_str(body, "channel")
        if channel not in CHANNELS:
            raise invalid("channel", f"expected one of {', '.join(CHANNELS)}")
        if channel not in entry.app.channels:
            raise invalid("channel", f"channel {channel} is not configured for app {app_id}")
        identity = _req_str(body, "identity")
        if not channel_rules.identity_is_valid(channel, identity):
            raise invalid("identity", f"{identity!r} is not a possible {channel} identity")
        contact_name = _opt_str(body, "contact_name")
        sender_id = _opt_str(body, "sender_id")
        reply_to = _opt_str(body, "reply_to_message_id")
        contact_message = self._contact_message(body, entry, channel, identity, reply_to)
        message_id = self.em.inject_inbound(
            entry,
            channel=channel,
            identity=identity,
            contact_message=contact_message,
            contact_name=contact_name,
            sender_id=sender_id,
        )
        return _json({"message_id": message_id}, 202)

    def _contact_message(
        self,
        body: Mapping[str, Any],
        entry: AppEntry,
        channel: str,
        identity: str,
        reply_to: str | None,
    ) -> dict[str, Any]:
        kinds = [k for k in ("text", "media_url", "location", "postback_data") if k in body]
        if len(kinds) != 1:
            raise invalid(
                "body", "expected exactly one of text, media_url, location, postback_data"
            )
        kind = kinds[0]
        message: dict[str, Any]
        if kind == "text":
            message = {"text_message": {"text": _req_str(body, "text")}}
        elif kind == "media_url":
            url = _req_str(body, "media_url")
            if not re.match(r"^https?://", url):
                raise invalid("media_url", "expected an http:// or https:// URL")
            message = {"media_message": {"url": url}}
        elif kind == "location":
            location = body["location"]
            if not isinstance(location, dict):
                raise invalid("location", "expected {latitude, longitude, label?}")
            coordinates: dict[str, float] = {}
            for axis, limit in (("latitude", 90), ("longitude", 180)):
                value = location.get(axis)
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise invalid(f"location.{axis}", "expected a number")
                if abs(value) > limit:
                    raise invalid(f"location.{axis}", f"must be within +-{limit}")
                coordinates[axis] = float(value)
            location_message: dict[str, Any] = {"coordinates": coordinates}
            for key in ("title", "label"):
                if key in location:
                    if not isinstance(location[key], str):
                        raise invalid(f"location.{key}", "expected a string")
                    location_message[key] = location[key]
            message = {"location_message": location_message}
        else:
            postback = _req_str(body, "postback_data")
            answered = reply_to or self.em.last_message_to(entry.app.id, channel, identity)
            message = {
                "choice_response_message": {"message_id": answered, "postback_data": postback}
            }
            return message
        if reply_to:
            message["reply_to"] = {"message_id": reply_to}
        return message

    async def list_inbound(self, request: Request, _params: Mapping[str, str]) -> Response:
        app_id = request.query_params.get("app_id")
        with self.em._lock:
            items = list(self.em.inbound)
        if app_id:
            items = [i for i in items if i["body"]["app_id"] == app_id]
        return _json({"inbound": items})

    async def sent(self, request: Request, _params: Mapping[str, str]) -> Response:
        query = request.query_params
        records = self.em.sent_records(query.get("app_id") or None, query.get("identity") or None)
        message_id = query.get("message_id")
        if message_id:
            records = [r for r in records if r["message_id"] == message_id]
        return _json({"sent": records})

    async def script_outcomes(self, request: Request, _params: Mapping[str, str]) -> Response:
        body = await self._json_body(request)
        if not isinstance(body, dict):
            raise invalid("body", "expected a JSON object")
        allowed = {"identity", "app_id", "channel", "fail_reason", "delay_ms", "read", "count"}
        for key in body:
            if key not in allowed:
                raise invalid(key, "unknown field")
        identity = _req_str(body, "identity")
        app_id = _opt_str(body, "app_id")
        if app_id is not None and app_id not in self.em.apps:
            raise ApiError(404, f"App {app_id} not found")
        channel = _opt_str(body, "channel")
        if channel is not None and channel not in CHANNELS:
            raise invalid("channel", f"expected one of {', '.join(CHANNELS)}")
        fail_reason = _opt_str(body, "fail_reason")
        if fail_reason is not None and fail_reason not in REASON_CODES:
            raise invalid("fail_reason", f"expected a Sinch reason code: {', '.join(REASON_CODES)}")
        delay_ms = _int(body, "delay_ms", 0, minimum=0, maximum=600_000)
        count = _int(body, "count", 1, minimum=1, maximum=10_000)
        read = body.get("read", True)
        if not isinstance(read, bool):
            raise invalid("read", "expected true or false")
        outcome = ScriptedOutcome(
            fail_reason=fail_reason, delay_ms=delay_ms, read=read, app_id=app_id, channel=channel
        )
        queued = self.em.script_outcomes(identity, outcome, count)
        return _json({"identity": identity, "queued": queued, "outcome": outcome.to_json()}, 201)

    async def list_outcomes(self, _request: Request, _params: Mapping[str, str]) -> Response:
        with self.em._lock:
            data = {k: [o.to_json() for o in v] for k, v in self.em.outcomes.items() if v}
        return _json({"outcomes": data})

    async def set_faults(self, request: Request, _params: Mapping[str, str]) -> Response:
        body = await self._json_body(request)
        faults = parse_faults(body)
        self.em.faults = faults
        if faults.seed is not None:
            self.em._random.seed(faults.seed)
        return _json(faults.to_json())

    async def get_faults(self, _request: Request, _params: Mapping[str, str]) -> Response:
        return _json(self.em.faults.to_json())

    async def callbacks(self, request: Request, _params: Mapping[str, str]) -> Response:
        query = request.query_params
        filters = {
            k: query[k]
            for k in ("app_id", "trigger", "message_id", "state", "target", "status")
            if query.get(k)
        }
        records = [
            r.to_json()
            for r in self.em.dispatcher.records()
            if all(getattr(r, k) == v for k, v in filters.items())
        ]
        return _json(
            {
                "callbacks": records,
                "in_flight": self.em.dispatcher.in_flight,
                "delivered_total": self.em.dispatcher.delivered_total,
                "failed_total": self.em.dispatcher.failed_total,
            }
        )

    async def stats(self, _request: Request, _params: Mapping[str, str]) -> Response:
        return _json(self.em.stats.to_json())

    async def reset(self, _request: Request, _params: Mapping[str, str]) -> Response:
        self.em.reset()
        return _json({})

    async def expire_tokens(self, _request: Request, _params: Mapping[str, str]) -> Response:
        self.em.tokens.expire_all()
        return _json({})


def parse_faults(body: object) -> Faults:
    """Validate a ``POST /_emulator/faults`` body; fields left out take their defaults."""
    if not isinstance(body, dict):
        raise invalid("body", "expected a JSON object")
    known = set(Faults().to_json())
    for key in body:
        if key not in known:
            raise invalid(key, f"unknown field; expected one of {', '.join(sorted(known))}")
    error_rate = _fraction(body, "error_rate")
    statuses_raw = body.get("error_statuses", [503])
    if (
        not isinstance(statuses_raw, list)
        or not statuses_raw
        or any(s not in _FAULT_STATUSES or isinstance(s, bool) for s in statuses_raw)
    ):
        raise invalid(
            "error_statuses",
            f"expected a non-empty list of {', '.join(map(str, _FAULT_STATUSES))}",
        )
    duplicate = body.get("duplicate_callbacks", 0.0)
    if isinstance(duplicate, bool):
        duplicate = 1.0 if duplicate else 0.0
    else:
        duplicate = _fraction(body, "duplicate_callbacks")
    reorder = body.get("reorder_callbacks", False)
    if not isinstance(reorder, bool):
        raise invalid("reorder_callbacks", "expected true or false")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise invalid("seed", "expected an integer")
    return Faults(
        latency_ms=_int(body, "latency_ms", 0, minimum=0, maximum=60_000),
        error_rate=error_rate,
        error_statuses=tuple(int(s) for s in statuses_raw),
        retry_after_s=_int(body, "retry_after_s", 1, minimum=0, maximum=3600),
        duplicate_callbacks=float(duplicate),
        reorder_callbacks=reorder,
        fail_callback_attempts=_int(body, "fail_callback_attempts", 0, minimum=0, maximum=100),
        seed=seed,
    )


def _check_webhook_fields(body: Mapping[str, Any], *, partial: bool) -> None:
    allowed = {"id", "app_id", "target", "target_type", "secret", "triggers", "client_credentials"}
    for key in body:
        if key not in allowed:
            raise invalid(key, "unknown field")
    if not partial or "app_id" in body:
        _req_str(body, "app_id")
    if not partial or "target" in body:
        target = _req_str(body, "target")
        problem = target_problem(target)
        if problem:
            raise invalid("target", problem)
    if not partial or "triggers" in body:
        triggers = body.get("triggers")
        if not isinstance(triggers, list) or not triggers:
            raise invalid("triggers", "expected a non-empty list of triggers")
        for i, trigger in enumerate(triggers):
            if trigger not in TRIGGERS:
                raise invalid(f"triggers[{i}]", f"unknown trigger {trigger!r}")
    if "target_type" in body and body["target_type"] not in ("HTTP", "DISMISS"):
        raise invalid("target_type", "expected HTTP or DISMISS")
    if "secret" in body and body["secret"] is not None and not isinstance(body["secret"], str):
        raise invalid("secret", "expected a string")
    credentials = body.get("client_credentials")
    if credentials is not None and not isinstance(credentials, dict):
        raise invalid("client_credentials", "expected a JSON object")


def _app_json(app: AppConfig) -> dict[str, Any]:
    credentials: list[dict[str, Any]] = []
    for channel in app.channels:
        entry: dict[str, Any] = {"channel": channel}
        field = _CREDENTIAL_FIELD.get(channel)
        sender = app.sender_ids.get(channel, "")
        if field == "static_bearer":
            entry[field] = {"claimed_identity": sender, "token": "********"}
        elif field is not None:
            entry[field] = {"token": "********"}
        entry.update(
            {
                "callback_secret": "",
                "state": {"status": "ACTIVE", "description": ""},
                "channel_known_id": sender,
                "credential_ordinal_number": 0,
            }
        )
        credentials.append(entry)
    rate = int(app.rate_limit) if app.rate_limit >= 1 else 1
    return {
        "id": app.id,
        "display_name": app.display_name or app.id,
        "channel_credentials": credentials,
        "processing_mode": app.processing_mode,
        "rate_limits": {"inbound": 25, "outbound": rate, "webhooks": 25},
        "conversation_metadata_report_view": "NONE",
        "retention_policy": {"retention_type": "MESSAGE_EXPIRE_POLICY", "ttl_days": 180},
        "dispatch_retention_policy": {"retention_type": "MESSAGE_EXPIRE_POLICY", "ttl_days": 0},
        "callback_settings": {"secret_for_overridden_callback_urls": ""},
        "message_retry_settings": {"retry_duration": 3600},
    }


def _oauth_error(
    status: int, code: str, description: str, headers: Mapping[str, str] | None = None
) -> Response:
    return _json({"error": code, "error_description": description}, status, headers)


def _req_str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        raise invalid(key, "required field is missing")
    if not isinstance(value, str) or not value:
        raise invalid(key, "expected a non-empty string")
    return value


def _opt_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(key, "expected a string")
    return value


def _int(body: Mapping[str, Any], key: str, default: int, *, minimum: int, maximum: int) -> int:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise invalid(key, f"expected an integer from {minimum} to {maximum}")
    return value


def _fraction(body: Mapping[str, Any], key: str) -> float:
    value = body.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise invalid(key, "expected a number from 0 to 1")
    return float(value)
