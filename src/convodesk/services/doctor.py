"""`convodesk doctor`: check a configuration against the live (or emulated) Sinch API.

For every messaging service, in order, so that the first failure explains the rest:

1. each access key (the ``KEYID`` of the outbound ``KEYID@APPID`` entries) gets an OAuth2
   token from ``oauth_token_url``;
2. each app exists in the project and region of the service connection URL; its processing
   mode is reported, and every queue address on the app must name a channel the app has
   credentials for (an address on a channel the app lacks can never receive a message);
3. each app has a webhook pointing at us (``{public_base_url}/sms/sinchconversation/{service}``
   or ``.../all``) with the service's webhook secret and at least the configured triggers.

Findings are ``ok``, ``warn`` (works, but probably not what was meant) or ``fail`` (messages
will be lost or refused). Secrets are compared in constant time and never printed: a
finding says *that* a secret differs, not what either one is.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from convodesk.domain.config_model import MessagingService, SystemConfig
from convodesk.sinch import errors as sinch_errors
from convodesk.sinch.auth import TokenCache
from convodesk.sinch.client import ConversationClient

Level = Literal["ok", "warn", "fail"]
CALLBACK_PATH = "/sms/sinchconversation/"
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)


@dataclass(frozen=True, kw_only=True)
class Finding:
    level: Level
    subject: str  # "sinch-eu", "sinch-eu app 01HZ..."
    message: str

    def __str__(self) -> str:
        return f"{self.level:<4}  {self.subject}: {self.message}"


async def diagnose(
    config: SystemConfig, *, transport: httpx.AsyncBaseTransport | None = None
) -> list[Finding]:
    """Every finding for every messaging service of `config`."""
    findings: list[Finding] = []
    if not config.messaging_services:
        findings.append(
            Finding(level="warn", subject="config", message="no messaging services configured")
        )
        return findings
    if config.public_base_url is None:
        findings.append(
            Finding(
                level="warn",
                subject="config",
                message=(
                    "public_base_url is not set: webhooks are matched by their path "
                    f"({CALLBACK_PATH}SERVICE) only"
                ),
            )
        )
    async with httpx.AsyncClient(transport=transport, timeout=DEFAULT_TIMEOUT) as http:
        tokens = TokenCache(http)
        client = ConversationClient(http, tokens, timeout=DEFAULT_TIMEOUT)
        for service in config.messaging_services:
            findings.extend(await _service(config, service, tokens, client))
    return findings


def exit_code(findings: Sequence[Finding]) -> int:
    """0 when nothing failed (warnings allowed), 1 otherwise."""
    return 1 if any(f.level == "fail" for f in findings) else 0


async def _service(
    config: SystemConfig,
    service: MessagingService,
    tokens: TokenCache,
    client: ConversationClient,
) -> list[Finding]:
    findings: list[Finding] = []
    working_keys: dict[str, bool] = {}
    for credential in service.outbound:
        key = credential.key_id
        if key in working_keys:
            continue
        try:
            await tokens.provider(config.oauth_token_url, key, credential.secret.reveal()).get()
        except sinch_errors.SinchError as exc:
            working_keys[key] = False
            findings.append(
                Finding(
                    level="fail",
                    subject=service.name,
                    message=f"access key {key}: no token from {config.oauth_token_url}: "
                    + _explain(exc, auth=True),
                )
            )
        else:
            working_keys[key] = True
            findings.append(
                Finding(level="ok", subject=service.name, message=f"access key {key} gets a token")
            )
    for credential in service.outbound:
        if not working_keys.get(credential.key_id):
            findings.append(
                Finding(
                    level="fail",
                    subject=f"{service.name} app {credential.app_id}",
                    message="not checked: its access key does not work",
                )
            )
            continue
        call = {
            "url": service.service_connection,
            "app_id": credential.app_id,
            "token_url": config.oauth_token_url,
            "key_id": credential.key_id,
            "key_secret": credential.secret.reveal(),
        }
        subject = f"{service.name} app {credential.app_id}"
        try:
            app = await client.get_app(**call)
        except sinch_errors.SinchError as exc:
            findings.append(
                Finding(
                    level="fail",
                    subject=subject,
                    message=f"not found in project {service.project_id}, region "
                    f"{service.region}: {_explain(exc)}"
                    if isinstance(exc, sinch_errors.NotFoundError)
                    else f"cannot be read: {_explain(exc)}",
                )
            )
            continue
        findings.extend(_app_findings(config, subject, credential.app_id, app))
        try:
            hooks = await client.list_webhooks(**call)
        except sinch_errors.SinchError as exc:
            findings.append(
                Finding(
                    level="fail",
                    subject=subject,
                    message=f"its webhooks cannot be read: {_explain(exc)}",
                )
            )
            continue
        findings.extend(_webhook_findings(config, service, subject, hooks))
    return findings


def _app_findings(
    config: SystemConfig,
    subject: str,
    app_id: str,
    app: dict[str, Any],
) -> list[Finding]:
    mode = app.get("processing_mode") or "unknown"
    name = app.get("display_name") or app_id
    findings = [
        Finding(
            level="ok",
            subject=subject,
            message=f"exists ({name!s}), processing mode {mode!s}",
        )
    ]
    credentials = app.get("channel_credentials")
    channels: dict[str, str] = {}
    if isinstance(credentials, list):
        for entry in credentials:
            if isinstance(entry, dict) and isinstance(entry.get("channel"), str):
                state = entry.get("state")
                status = state.get("status") if isinstance(state, dict) else None
                channels[entry["channel"]] = str(status or "ACTIVE")
    for queue in config.queues:
        for address in queue.addresses:
            if address.app_id != app_id:
                continue
            where = f"queue {queue.name} address {address.address}"
            status = channels.get(address.channel)
            if status is None:
                have = ", ".join(sorted(channels)) or "none"
                findings.append(
                    Finding(
                        level="fail",
                        subject=subject,
                        message=f"{where}: the app has no {address.channel} channel "
                        f"(its channels: {have})",
                    )
                )
            elif status != "ACTIVE":
                findings.append(
                    Finding(
                        level="warn",
                        subject=subject,
                        message=f"{where}: the app's {address.channel} channel is {status}",
                    )
                )
    return findings


def _webhook_findings(
    config: SystemConfig,
    service: MessagingService,
    subject: str,
    hooks: list[dict[str, Any]],
) -> list[Finding]:
    ours = [h for h in hooks if _points_at_us(config, service, str(h.get("target", "")))]
    if not ours:
        targets = ", ".join(str(h.get("target", "")) for h in hooks) or "none"
        return [
            Finding(
                level="fail",
                subject=subject,
                message=f"no webhook points at us (expected {_expected_target(config, service)}); "
                f"its webhooks: {targets}",
            )
        ]
    findings: list[Finding] = []
    if len(ours) > 1:
        findings.append(
            Finding(
                level="warn",
                subject=subject,
                message=f"{len(ours)} webhooks point at us: every callback arrives "
                f"{len(ours)} times (stored once, but sent and checked each time)",
            )
        )
    wanted = set(service.inbound.triggers)
    expected_secret = service.inbound.secret.reveal().encode("utf-8")
    for hook in ours:
        where = f"webhook {hook.get('id', '?')} ({hook.get('target')})"
        secret = str(hook.get("secret") or "").encode("utf-8")
        if not secret:
            findings.append(
                Finding(
                    level="fail",
                    subject=subject,
                    message=f"{where} has no secret: its callbacks are unsigned and refused (401)",
                )
            )
        elif not hmac.compare_digest(secret, expected_secret):
            findings.append(
                Finding(
                    level="fail",
                    subject=subject,
                    message=f"{where}: its secret differs from the service's webhook secret: "
                    "every callback will be refused (401)",
                )
            )
        triggers = {str(t) for t in hook.get("triggers") or []}
        missing = sorted(wanted - triggers)
        if missing:
            findings.append(
                Finding(
                    level="fail",
                    subject=subject,
                    message=f"{where} lacks the configured triggers {', '.join(missing)}",
                )
            )
        extra = sorted(triggers - wanted)
        if extra:
            findings.append(
                Finding(
                    level="warn",
                    subject=subject,
                    message=f"{where} also sends {', '.join(extra)}, which the service is not "
                    "configured for (accepted and logged)",
                )
            )
        if not missing and secret and hmac.compare_digest(secret, expected_secret):
            findings.append(
                Finding(
                    level="ok",
                    subject=subject,
                    message=f"{where} has the service's secret and triggers",
                )
            )
    return findings


def _expected_target(config: SystemConfig, service: MessagingService) -> str:
    base = (config.public_base_url or "").rstrip("/")
    return f"{base}{CALLBACK_PATH}{service.name}"


def _points_at_us(config: SystemConfig, service: MessagingService, target: str) -> bool:
    target = target.rstrip("/")
    suffixes = (f"{CALLBACK_PATH}{service.name}", f"{CALLBACK_PATH}all")
    if config.public_base_url is None:
        return target.endswith(suffixes)
    base = config.public_base_url.rstrip("/")
    return target in {base + suffix for suffix in suffixes}


def _explain(exc: sinch_errors.SinchError, *, auth: bool = False) -> str:
    if auth and isinstance(exc, sinch_errors.AuthenticationError | sinch_errors.ClientError):
        hint = "the key id or key secret is wrong"
    elif isinstance(exc, sinch_errors.ConnectionFailedError | sinch_errors.SinchTimeoutError):
        hint = "cannot reach Sinch"
    else:
        hint = exc.status or type(exc).__name__
    status = f"HTTP {exc.http_status}, " if exc.http_status else ""
    detail = f": {exc.message}" if exc.message else ""
    return f"{hint} ({status}{type(exc).__name__}){detail}"
