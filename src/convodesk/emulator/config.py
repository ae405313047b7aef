"""The emulator's configuration file: projects, their access keys and apps, the apps' webhooks.

Other tools and tests write this file, so its names are a contract (docs/emulator.md)::

    callback_retry: {max_attempts: 6, initial_backoff_ms: 200, max_backoff_ms: 5000,
                     timeout_ms: 5000}                   # all optional
    delivery_delays_ms: {queued: 10, delivered: 50, read: 200}   # optional
    token_ttl_seconds: 3600                              # optional
    projects:
      - id: 5b6c2a1e-8d4f-4c3b-9a7e-1f2d3c4b5a69
        region: eu                                       # eu | us | br
        access_keys: [{key_id: KEY-ID, key_secret: KEY-SECRET}]
        rate_limit: 800                                  # requests/s for the project
        apps:
          - id: 01HZX4K7QW8E2R5T9Y3V6M1N0P
            processing_mode: DISPATCH                    # or CONVERSATION
            channels: [WHATSAPP, SMS, MESSENGER]
            rate_limit: 20                               # sends/s for the app
            webhooks:
              - target: http://127.0.0.1:8000/sms/sinchconversation/sinch-eu
                secret: WEBHOOK-SECRET
                triggers: [MESSAGE_INBOUND, MESSAGE_DELIVERY]

Every problem is reported with its path (``projects[0].apps[1].id``) and the expected form;
`EmulatorConfigError` carries them all, not just the first.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from convodesk.domain.config_model import CHANNELS, TRIGGERS

REGIONS = ("eu", "us", "br")
PROCESSING_MODES = ("DISPATCH", "CONVERSATION")
MAX_WEBHOOKS_PER_APP = 5
MAX_TARGET_LENGTH = 742
_PROJECT_ID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_ID_RE = re.compile(r"^[A-Za-z0-9._~-]+$")


@dataclass(frozen=True, kw_only=True)
class AccessKey:
    key_id: str
    key_secret: str = field(repr=False)


@dataclass(frozen=True, kw_only=True)
class WebhookConfig:
    target: str
    triggers: tuple[str, ...]
    secret: str | None = field(default=None, repr=False)
    id: str | None = None


@dataclass(frozen=True, kw_only=True)
class AppConfig:
    id: str
    processing_mode: str = "DISPATCH"
    channels: tuple[str, ...]
    rate_limit: float = 20.0
    display_name: str = ""
    webhooks: tuple[WebhookConfig, ...] = ()
    sender_ids: Mapping[str, str] = field(default_factory=dict)
    callback_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True, kw_only=True)
class ProjectConfig:
    id: str
    region: str
    access_keys: tuple[AccessKey, ...]
    rate_limit: float = 800.0
    apps: tuple[AppConfig, ...] = ()


@dataclass(frozen=True, kw_only=True)
class CallbackRetry:
    """At most ``max_attempts`` tries; the n-th retry waits initial * 2**(n-1), capped."""

    max_attempts: int = 6
    initial_backoff_ms: int = 200
    max_backoff_ms: int = 5000
    timeout_ms: int = 5000

    def backoff_seconds(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (1-based)."""
        ms: int = min(self.initial_backoff_ms * 2 ** (attempt - 1), self.max_backoff_ms)
        return ms / 1000


@dataclass(frozen=True, kw_only=True)
class DeliveryDelays:
    """Milliseconds between a send's acceptance and QUEUED_ON_CHANNEL, then to each next report."""

    queued: int = 10
    delivered: int = 50
    read: int = 200


@dataclass(frozen=True, kw_only=True)
class EmulatorConfig:
    projects: tuple[ProjectConfig, ...]
    callback_retry: CallbackRetry = CallbackRetry()
    delivery_delays: DeliveryDelays = DeliveryDelays()
    token_ttl_seconds: int = 3600
    media_fetch_timeout_ms: int = 3000
    history_limit: int = 10000

    @property
    def regions(self) -> frozenset[str]:
        return frozenset(p.region for p in self.projects)

    @classmethod
    def from_dict(cls, data: object) -> EmulatorConfig:
        """Validate a parsed YAML/JSON document; raise EmulatorConfigError naming every problem."""
        reader = _Reader()
        config = reader.config(data)
        if reader.problems or config is None:
            raise EmulatorConfigError(reader.problems)
        return config


class EmulatorConfigError(ValueError):
    """The emulator configuration is invalid; ``problems`` lists (path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = list(problems) or [("", "invalid configuration")]
        super().__init__("\n".join(f"{p or '<root>'}: {m}" for p, m in self.problems))


def load_emulator_config(path: str | Path) -> EmulatorConfig:
    """Read and validate the YAML file at ``path``."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise EmulatorConfigError([("", f"cannot read {file}: {exc.strerror or exc}")]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise EmulatorConfigError([("", f"{file} is not valid YAML{where}")]) from exc
    return EmulatorConfig.from_dict(data)


class _Reader:
    """Walks the document, collecting problems instead of stopping at the first one."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append((path, message))

    def mapping(self, value: object, path: str, allowed: set[str]) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.fail(path, "expected a mapping")
            return None
        for key in value:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                self.fail(_join(path, str(key)), f"unknown key; expected one of: {known}")
        return value

    def string(
        self,
        data: dict[str, Any],
        key: str,
        path: str,
        *,
        required: bool = True,
        pattern: re.Pattern[str] | None = None,
        form: str = "a non-empty string",
    ) -> str | None:
        value = data.get(key)
        where = _join(path, key)
        if value is None:
            if required:
                self.fail(where, f"required; expected {form}")
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"expected {form}")
            return None
        if pattern is not None and not pattern.match(value):
            self.fail(where, f"expected {form}, got {value!r}")
            return None
        return value

    def number(
        self, data: dict[str, Any], key: str, path: str, default: float, *, integer: bool = False
    ) -> float:
        value = data.get(key, default)
        where = _join(path, key)
        kind = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(where, f"expected {kind} greater than 0")
            return default
        if integer and not isinstance(value, int):
            self.fail(where, f"expected {kind} greater than 0")
            return default
        if value <= 0:
            self.fail(where, f"expected {kind} greater than 0, got {value}")
            return default
        return float(value)

    def non_negative_int(self, data: dict[str, Any], key: str, path: str, default: int) -> int:
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(_join(path, key), "expected an integer >= 0")
            return default
        return value

    def choices(
        self, data: dict[str, Any], key: str, path: str, allowed: tuple[str, ...]
    ) -> tuple[str, ...]:
        value = data.get(key)
        where = _join(path, key)
        form = f"a non-empty list of: {', '.join(allowed)}"
        if not isinstance(value, list) or not value:
            self.fail(where, f"expected {form}")
            return ()
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str) or item not in allowed:
                self.fail(f"{where}[{i}]", f"expected one of: {', '.join(allowed)}; got {item!r}")
            elif item in out:
                self.fail(f"{where}[{i}]", f"{item} is listed twice")
            else:
                out.append(item)
        return tuple(out)

    def config(self, data: object) -> EmulatorConfig | None:
        top = self.mapping(
            data,
            "",
            {
                "projects",
                "callback_retry",
                "delivery_delays_ms",
                "token_ttl_seconds",
                "media_fetch_timeout_ms",
                "history_limit",
            },
        )
        if top is None:
            return None
        projects_raw = top.get("projects")
        projects: list[ProjectConfig] = []
        if not isinstance(projects_raw, list) or not projects_raw:
            self.fail("projects", "required; expected a non-empty list of projects")
        else:
            for i, item in enumerate(projects_raw):
                project = self.project(item, f"projects[{i}]")
                if project is not None:
                    projects.append(project)
        self.check_unique(projects)
        retry = self.retry(top.get("callback_retry", {}), "callback_retry")
        delays = self.delays(top.get("delivery_delays_ms", {}), "delivery_delays_ms")
        ttl = int(self.number(top, "token_ttl_seconds", "", 3600, integer=True))
        media_timeout = int(self.number(top, "media_fetch_timeout_ms", "", 3000, integer=True))
        history = int(self.number(top, "history_limit", "", 10000, integer=True))
        return EmulatorConfig(
            projects=tuple(projects),
            callback_retry=retry,
            delivery_delays=delays,
            token_ttl_seconds=ttl,
            media_fetch_timeout_ms=media_timeout,
            history_limit=history,
        )

    def check_unique(self, projects: list[ProjectConfig]) -> None:
        seen_projects: set[str] = set()
        seen_apps: set[str] = set()
        seen_keys: set[str] = set()
        for i, project in enumerate(projects):
            if project.id in seen_projects:
                self.fail(f"projects[{i}].id", f"project {project.id} is listed twice")
            seen_projects.add(project.id)
            for k, key in enumerate(project.access_keys):
                if key.key_id in seen_keys:
                    self.fail(
                        f"projects[{i}].access_keys[{k}].key_id",
                        f"key id {key.key_id} is used twice; key ids must be unique",
                    )
                seen_keys.add(key.key_id)
            for j, app in enumerate(project.apps):
                if app.id in seen_apps:
                    self.fail(f"projects[{i}].apps[{j}].id", f"app {app.id} is listed twice")
                seen_apps.add(app.id)

    def project(self, value: object, path: str) -> ProjectConfig | None:
        data = self.mapping(value, path, {"id", "region", "access_keys", "rate_limit", "apps"})
        if data is None:
            return None
        project_id = self.string(
            data, "id", path, pattern=_PROJECT_ID_RE, form="a project UUID (8-4-4-4-12 hex)"
        )
        region = data.get("region")
        if region not in REGIONS:
            self.fail(_join(path, "region"), f"expected one of: {', '.join(REGIONS)}")
        keys: list[AccessKey] = []
        keys_raw = data.get("access_keys")
        if not isinstance(keys_raw, list) or not keys_raw:
            self.fail(
                _join(path, "access_keys"),
                "required; expected a non-empty list of {key_id, key_secret}",
            )
        else:
            for k, item in enumerate(keys_raw):
                kpath = f"{path}.access_keys[{k}]"
                kdata = self.mapping(item, kpath, {"key_id", "key_secret"})
                if kdata is None:
                    continue
                key_id = self.string(kdata, "key_id", kpath)
                secret = self.string(kdata, "key_secret", kpath)
                if key_id is not None and secret is not None:
                    keys.append(AccessKey(key_id=key_id, key_secret=secret))
        rate = self.number(data, "rate_limit", path, 800)
        apps: list[AppConfig] = []
        apps_raw = data.get("apps", [])
        if not isinstance(apps_raw, list):
            self.fail(_join(path, "apps"), "expected a list of apps")
        else:
            for j, item in enumerate(apps_raw):
                app = self.app(item, f"{path}.apps[{j}]")
                if app is not None:
                    apps.append(app)
        if project_id is None or region not in REGIONS or not keys:
            return None
        return ProjectConfig(
            id=project_id,
            region=str(region),
            access_keys=tuple(keys),
            rate_limit=rate,
            apps=tuple(apps),
        )

    def app(self, value: object, path: str) -> AppConfig | None:
        data = self.mapping(
            value,
            path,
            {
                "id",
                "processing_mode",
                "channels",
                "rate_limit",
                "display_name",
                "webhooks",
                "sender_ids",
                "callback_secret",
            },
        )
        if data is None:
            return None
        app_id = self.string(
            data, "id", path, pattern=_ID_RE, form="an app id such as 01HZX4K7QW8E2R5T9Y3V6M1N0P"
        )
        mode = data.get("processing_mode", "DISPATCH")
        if mode not in PROCESSING_MODES:
            self.fail(_join(path, "processing_mode"), "expected DISPATCH or CONVERSATION")
        channels = self.choices(data, "channels", path, CHANNELS)
        rate = self.number(data, "rate_limit", path, 20)
        display_name = data.get("display_name", "")
        if not isinstance(display_name, str):
            self.fail(_join(path, "display_name"), "expected a string")
            display_name = ""
        callback_secret = self.string(data, "callback_secret", path, required=False)
        sender_ids: dict[str, str] = {}
        raw_senders = data.get("sender_ids", {})
        if not isinstance(raw_senders, dict):
            self.fail(_join(path, "sender_ids"), "expected a mapping of CHANNEL: sender id")
        else:
            for channel, sender in raw_senders.items():
                if channel not in CHANNELS or not isinstance(sender, str):
                    self.fail(
                        _join(_join(path, "sender_ids"), str(channel)),
                        "expected CHANNEL: sender id (a string), CHANNEL one of the channels",
                    )
                else:
                    sender_ids[channel] = sender
        webhooks: list[WebhookConfig] = []
        raw_hooks = data.get("webhooks", [])
        if not isinstance(raw_hooks, list):
            self.fail(_join(path, "webhooks"), "expected a list of webhooks")
        else:
            if len(raw_hooks) > MAX_WEBHOOKS_PER_APP:
                self.fail(
                    _join(path, "webhooks"), f"at most {MAX_WEBHOOKS_PER_APP} webhooks per app"
                )
            for w, item in enumerate(raw_hooks):
                hook = self.webhook(item, f"{path}.webhooks[{w}]")
                if hook is not None:
                    webhooks.append(hook)
        if app_id is None or mode not in PROCESSING_MODES or not channels:
            return None
        return AppConfig(
            id=app_id,
            processing_mode=str(mode),
            channels=channels,
            rate_limit=rate,
            display_name=display_name,
            webhooks=tuple(webhooks),
            sender_ids=sender_ids,
            callback_secret=callback_secret,
        )

    def webhook(self, value: object, path: str) -> WebhookConfig | None:
        data = self.mapping(value, path, {"id", "target", "secret", "triggers"})
        if data is None:
            return None
        target = self.string(data, "target", path, form="an http:// or https:// URL")
        if target is not None:
            problem = target_problem(target)
            if problem:
                self.fail(_join(path, "target"), problem)
                target = None
        secret = data.get("secret")
        if secret is not None and not isinstance(secret, str):
            self.fail(_join(path, "secret"), "expected a string")
            secret = None
        hook_id = self.string(data, "id", path, required=False, pattern=_ID_RE, form="an id")
        triggers = self.choices(data, "triggers", path, TRIGGERS)
        if target is None or not triggers:
            return None
        return WebhookConfig(target=target, secret=secret or None, triggers=triggers, id=hook_id)

    def retry(self, value: object, path: str) -> CallbackRetry:
        data = self.mapping(
            value, path, {"max_attempts", "initial_backoff_ms", "max_backoff_ms", "timeout_ms"}
        )
        if data is None:
            return CallbackRetry()
        return CallbackRetry(
            max_attempts=int(self.number(data, "max_attempts", path, 6, integer=True)),
            initial_backoff_ms=self.non_negative_int(data, "initial_backoff_ms", path, 200),
            max_backoff_ms=self.non_negative_int(data, "max_backoff_ms", path, 5000),
            timeout_ms=int(self.number(data, "timeout_ms", path, 5000, integer=True)),
        )

    def delays(self, value: object, path: str) -> DeliveryDelays:
        data = self.mapping(value, path, {"queued", "delivered", "read"})
        if data is None:
            return DeliveryDelays()
        return DeliveryDelays(
            queued=self.non_negative_int(data, "queued", path, 10),
            delivered=self.non_negative_int(data, "delivered", path, 50),
            read=self.non_negative_int(data, "read", path, 200),
        )


def target_problem(target: str) -> str | None:
    """Why a webhook target is unacceptable, or None (Sinch's limits, reference 2.1)."""
    if len(target) > MAX_TARGET_LENGTH:
        return f"at most {MAX_TARGET_LENGTH} characters"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in target):
        return "must not contain spaces or control characters"
    if not re.match(r"^https?://[^/\s]+", target):
        return "expected an http:// or https:// URL"
    if re.match(r"^https?://conversation-api\.[^/]*sinch\.com", target, re.IGNORECASE):
        return "targets on conversation-api.*.sinch.com are not allowed"
    return None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
