"""The System Configurator: every rule a configuration must pass, in one place.

`validate(raw)` takes a mapping in the config-file shape (the YAML file, an admin API change
applied to the dumped stored configuration, the admin pages) and returns a `Validation`: the
`SystemConfig` when nothing is wrong, and every problem found. Each problem names the path of
the offending value (``messaging_services[0].authentication[1].auth_id``) and the expected
form. Validation never stops at the first problem: each object is read on its own, then the
rules that span objects (unique names, an app in one service, queue addresses on outbound
apps, the US SMS sender id, the agents' queues) run on whatever parts could be read. A rule
that refers to a section the input does not have is skipped, unless `base` supplies it.

`dump(config, secrets=...)` writes the same shape back, so that
``validate(dump(cfg, secrets="reveal")).config == cfg``.

docs/reference/configuration.md describes these rules for administrators; keep both in step.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
import re
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit, urlunsplit

from convodesk.domain.config_model import (
    DEFAULT_DATABASE_URL,
    DEFAULT_OAUTH_TOKEN_URL,
    REGIONS,
    SUBCHANNEL_TO_CHANNEL,
    TRIGGERS,
    Agent,
    BusinessHours,
    ChatSettings,
    InboundWebhook,
    MessagingService,
    OutboundCredential,
    Problem,
    Prompts,
    Queue,
    QueueAddress,
    Role,
    SystemConfig,
    WhatsAppTemplate,
)
from convodesk.domain.secrets import MASK, Secret

SecretsMode = Literal["reveal", "placeholder", "mask"]

SECTIONS: tuple[str, ...] = ("messaging_services", "queues", "chat_settings", "agents")
TOP_LEVEL_KEYS: tuple[str, ...] = (
    "database_url",
    "data_dir",
    "public_base_url",
    "allow_custom_endpoints",
    "oauth_token_url",
    "callback_tolerance_seconds",
    "callback_max_bytes",
    "sqlite_synchronous",
    "send_rate_per_app",
    "send_rate_per_project",
    "send_ttl_seconds",
    "send_max_attempts",
    "send_max_age_seconds",
    "send_concurrency",
    "send_lease_seconds",
    *SECTIONS,
)
ROOT_PATH = "<config>"  # the path of a problem with the whole input
SERVICE_TYPE = "sinchconversation"
QUEUE_TYPE = "chat"
WEBHOOK_AUTH_ID = "webhook"
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
PROMPT_PLACEHOLDERS: tuple[str, ...] = ("queue", "position")
DATABASE_URL_PREFIXES: tuple[str, ...] = ("sqlite:///", "postgresql://", "postgresql+psycopg://")
DEFAULT_DATA_DIR = SystemConfig().data_dir
DATABASE_PASSWORD_VAR = "CONVODESK_DATABASE_PASSWORD"  # noqa: S105 - a variable name
AGENT_MAX_CHATS = 100
WRAPUP_CODE_MAX = 100
MIN_PASSWORD_LENGTH = 8

# The keys each kind of object accepts: anything else is an error, so typos are never lost.
KEYS: dict[str, tuple[str, ...]] = {
    "config": TOP_LEVEL_KEYS,
    "service": (
        "name",
        "type",
        "service_connection",
        "region",
        "authentication",
        "whatsapp_templates",
    ),
    "whatsapp_template": ("app_id", "name", "language", "parameters", "text"),
    "outbound": ("auth_id", "password"),
    "webhook": ("auth_id", "password", "triggers"),
    "queue": (
        "name",
        "type",
        "addresses",
        "sms_sender_id",
        "priority",
        "max_size",
        "offer_timeout_seconds",
        "business_hours",
    ),
    "business_hours": ("timezone", "weekly", "closed_dates"),
    "weekly": WEEKDAYS,
    "chat_settings": tuple(f.name for f in dataclasses.fields(ChatSettings)),
    "prompts": tuple(f.name for f in dataclasses.fields(Prompts)),
    "agent": ("login", "display_name", "role", "queues", "max_chats", "password"),
}

# Unknown keys that have a likely explanation.
KEY_HINTS: dict[tuple[str, object], str] = {
    ("outbound", "triggers"): " (triggers belong to the webhook entry, auth_id: webhook)",
    ("config", "region"): " (region belongs to a messaging service)",
    ("config", "webhook_secret"): " (the webhook secret is the webhook entry's password)",
    ("service", "triggers"): " (triggers belong to the webhook entry in authentication)",
    ("queue", "address"): " (did you mean addresses?)",
    ("agent", "queue"): " (did you mean queues?)",
    ("service", "templates"): " (did you mean whatsapp_templates?)",
    ("whatsapp_template", "template_id"): " (the approved template name goes in name)",
    ("whatsapp_template", "language_code"): " (did you mean language?)",
    ("whatsapp_template", "params"): " (did you mean parameters?)",
}

# chat_settings integers: field -> (minimum, maximum); None is unbounded.
CHAT_INTEGERS: dict[str, tuple[int, int | None]] = {
    "attachment_max_bytes": (1, None),
    "attachment_retention_days": (1, None),
    "offer_timeout_seconds": (1, None),
    "missed_offers_before_not_ready": (1, None),
    "max_concurrent_chats": (1, AGENT_MAX_CHATS),
    "queue_max_size": (1, None),
    "reopen_window_seconds": (0, None),
    "idle_warning_seconds": (1, None),
    "inactivity_close_seconds": (1, None),
    "event_retention_days": (1, None),
}

APP_ID_RE = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
PROJECT_ID_RE = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
SINCH_CONNECTION_RE = re.compile(
    r"https://(?P<region>[^./]+)\.conversation\.api\.sinch\.com"
    r"/v1/projects/(?P<project>[^/?#]*)/messages:send"
)
CUSTOM_PATH_RE = re.compile(r"(?P<prefix>/.*)?/v1/projects/(?P<project>[^/]+)/messages:send")
SERVICE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
LOGIN_RE = re.compile(r"[a-z0-9][a-z0-9._@-]{1,63}")
ADDRESS_RE = re.compile(r"(?P<app>[^@\s]+)@(?P<sub>[^@\s]+)\.sinchconversation\.com", re.I)
E164_RE = re.compile(r"\+[0-9]{8,15}")
SHORT_CODE_RE = re.compile(r"[0-9]{3,8}")
ALPHANUMERIC_SENDER_RE = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}")
MIME_TYPE_RE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
TIME_RANGE_RE = re.compile(r"([0-9]{2}):([0-9]{2})-([0-9]{2}):([0-9]{2})")
DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
# WhatsApp templates (docs/howto/whatsapp-templates.md). Names: what WhatsApp approves.
TEMPLATE_NAME_RE = re.compile(r"[a-z0-9_]{1,512}")
# WhatsApp language codes are written with an underscore: en, sv_SE, pt_BR, zh_HK.
LANGUAGE_RE = re.compile(r"[a-z]{2,3}(?:_[A-Z]{2,3})?")
# Sinch's parameter keys, <component>[<index>]<sub_type>[<parameter index>]<field>, as its
# WhatsApp channel page spells them (body[1]text, header[1]image.link, button[0]url[1]text,
# button[0]quick_reply[1]payload). The carousel[<card>] prefix follows the newer form of that
# page, of which we saw no example: NOT VERIFIED.
_MEDIA_FIELD = (
    r"(?:text|(?:image|video)\.(?:link|provider\.name)"
    r"|document\.(?:link|filename|provider\.name))"
)
TEMPLATE_PARAMETER_RE = re.compile(
    r"(?:carousel\[[0-9]+\])?(?:"
    rf"header\[[1-9][0-9]*\]{_MEDIA_FIELD}"
    r"|body\[[1-9][0-9]*\]text"
    r"|button\[[0-9]+\](?:url\[[1-9][0-9]*\]text|quick_reply\[[1-9][0-9]*\]payload))"
)

CONNECTION_FORM = (
    "https://{eu|us|br}.conversation.api.sinch.com/v1/projects/{project}/messages:send"
)
CUSTOM_CONNECTION_FORM = "http(s)://HOST[/{eu|us|br}]/v1/projects/{project}/messages:send"
SUBCHANNELS = ", ".join(SUBCHANNEL_TO_CHANNEL)
ADDRESS_FORM = f"APPID@SUBCHANNEL.sinchconversation.com with SUBCHANNEL one of {SUBCHANNELS}"
APP_ID_FORM = "26 characters of upper-case Crockford base32 (0-9 and A-Z without I, L, O, U)"
SENDER_FORM = (
    'an E.164 number ("+" and 8-15 digits, e.g. "+12025550143"), a short code (3-8 digits) '
    "or an alphanumeric sender (1-11 letters, digits or spaces, at least one letter)"
)
MEDIA_HTTPS = "WhatsApp rich content (media) needs a public https:// URL"
WEBHOOK_FORM = "{auth_id: webhook, password: SECRET, triggers: [MESSAGE_INBOUND, ...]}"
TEMPLATE_FORM = "a WhatsApp template {app_id, name, language, parameters, text}"
TEMPLATE_PARAMETER_FORM = (
    "a Sinch WhatsApp parameter key such as body[1]text, header[1]text, header[1]image.link, "
    "button[0]url[1]text or button[0]quick_reply[1]payload"
)


@dataclass(frozen=True)
class Validation:
    """What `validate` found: `config` is None if and only if there is an error."""

    config: SystemConfig | None
    problems: tuple[Problem, ...]

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "warning")


# =========================================================================== validate


def validate(raw: Mapping[str, Any], *, base: SystemConfig | None = None) -> Validation:
    """Check a config-file shaped mapping against every rule; collect all problems.

    With `base` (the stored configuration), sections that `raw` lacks are taken from it, so
    cross-section rules see the whole configuration; `present_sections` still lists only the
    sections of `raw`, and problems in inherited sections say so.
    """
    report = _Report()
    if not isinstance(raw, Mapping):
        report.error(ROOT_PATH, f"expected a mapping of settings, got {_kind(raw)}")
        return Validation(config=None, problems=tuple(report.problems))
    present = frozenset(s for s in SECTIONS if s in raw)
    inherited: dict[str, Any] = {}
    if base is not None:
        inherited = {s: v for s, v in dump(base, secrets="reveal").items() if s in SECTIONS}
        inherited = {s: v for s, v in inherited.items() if s not in raw}
    merged = {**raw, **inherited}
    config = _read_config(report, merged)
    problems = _ordered([_note_inherited(p, inherited) for p in report.problems], list(merged))
    if config is None or report.errors:
        return Validation(config=None, problems=problems)
    return Validation(
        config=dataclasses.replace(config, present_sections=present), problems=problems
    )


def _read_config(report: _Report, raw: Mapping[Any, object]) -> SystemConfig | None:
    top = _Fields(report, raw, "", "config")
    settings = _top_level(top)
    custom = settings.get("allow_custom_endpoints") is True
    services = _list_section(top, "messaging_services", "messaging services", _service, custom)
    queues = _list_section(top, "queues", "queues", _queue)
    chat_settings = _chat_settings(report, top)
    agents = _list_section(top, "agents", "agents", _agent)
    _check_services(report, services)
    _check_queues(report, queues, services)
    _check_agents(report, agents, queues)
    if report.errors or chat_settings is None:
        return None
    return SystemConfig(
        **settings,
        messaging_services=tuple(_built(services)),
        queues=tuple(_built(queues)),
        chat_settings=chat_settings,
        agents=tuple(_built(agents)),
    )


def _note_inherited(problem: Problem, inherited: Mapping[str, object]) -> Problem:
    section = re.split(r"[.\[]", problem.path, maxsplit=1)[0]
    if section not in inherited:
        return problem
    return dataclasses.replace(problem, message=f"{problem.message} (in the stored configuration)")


def _ordered(problems: list[Problem], keys: Sequence[object]) -> tuple[Problem, ...]:
    """In the order of the input's top-level keys, then by item; discovery order within."""
    position = {str(k): i for i, k in enumerate(keys)}

    def key(problem: Problem) -> tuple[int, int]:
        match = re.match(r"([^.\[]*)(?:\[(\d+)\])?", problem.path)
        name, index = (match.group(1), match.group(2)) if match else ("", None)
        return (position.get(name, -1), int(index) if index is not None else -1)

    return tuple(sorted(problems, key=key))


# --------------------------------------------------------------------------- reporting


class _Report:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.errors = 0

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(path=path, message=message))
        self.errors += 1

    def warn(self, path: str, message: str) -> None:
        self.problems.append(Problem(path=path, message=message, severity="warning"))


def _key(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _item(path: str, index: int) -> str:
    return f"{path}[{index}]"


def _kind(value: object) -> str:
    """What `value` is, without its content: safe for secrets."""
    kinds: tuple[tuple[type | tuple[type, ...], str], ...] = (
        (bool, "a boolean"),
        ((int, float), "a number"),
        (str, "a string"),
        (Mapping, "a mapping"),
        ((list, tuple), "a list"),
        (datetime, "a date and time"),
        (date, "a date"),
    )
    if value is None:
        return "null"
    return next((name for cls, name in kinds if isinstance(value, cls)), type(value).__name__)


def _got(value: object) -> str:
    """`value` described for a message, with its content when it is a scalar (not secrets)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 80 else value[:77] + "...")
    return _kind(value)


def _one_of(choices: Iterable[str]) -> str:
    return ", ".join(choices)


def _either(choices: Sequence[str]) -> str:
    """``a``, ``a or b``, ``a, b or c``."""
    return " or ".join([", ".join(choices[:-1]), choices[-1]] if len(choices) > 1 else choices)


def _suggestion(word: object, choices: Sequence[str]) -> str:
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _plain(value: str) -> str:
    """An exact `str` (an `EnvStr` from the loader would not survive a YAML dump)."""
    return str(value)


# --------------------------------------------------------------------------- readers


class _Fields:
    """The fields of one mapping at `path`. Unknown keys are reported on creation.

    Each reader reports what is wrong and returns a stand-in of the right type, so a caller
    reads every field, then throws the object away if `_Report.errors` went up meanwhile.
    """

    def __init__(self, report: _Report, data: Mapping[Any, object], path: str, kind: str) -> None:
        self.report = report
        self.data = data
        self.path = path
        accepted = KEYS[kind]
        for key in data:
            if key not in accepted:
                hint = KEY_HINTS.get((kind, key)) or _suggestion(key, accepted)
                report.error(
                    _key(path, key), f"unknown key{hint}: expected one of {_one_of(accepted)}"
                )

    def at(self, key: str) -> str:
        return _key(self.path, key)

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str) -> object:
        return self.data.get(key)

    def missing(self, key: str, expected: str) -> None:
        self.report.error(self.at(key), f"missing; expected {expected}")

    def text(self, key: str, expected: str, *, default: str | None = None) -> str:
        if key not in self.data:
            if default is None:
                self.missing(key, expected)
                return ""
            return default
        return _text(self.report, self.data[key], self.at(key), expected)

    def choice(self, key: str, choices: Sequence[str], *, default: str) -> str:
        value = self.data.get(key, default)
        if isinstance(value, str) and value in choices:
            return _plain(value)
        hint = _suggestion(value, choices)
        self.report.error(self.at(key), f"expected {_either(choices)}{hint}, got {_got(value)}")
        return default

    def integer(
        self, key: str, *, default: int, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self.data.get(key, default)
        checked = _integer(self.report, value, self.at(key), minimum, maximum)
        return default if checked is None else checked

    def optional_integer(self, key: str, *, minimum: int, maximum: int | None = None) -> int | None:
        value = self.data.get(key)
        return (
            None if value is None else _integer(self.report, value, self.at(key), minimum, maximum)
        )

    def boolean(self, key: str, *, default: bool) -> bool:
        value = self.data.get(key, default)
        if isinstance(value, bool):
            return value
        self.report.error(self.at(key), f"expected true or false, got {_got(value)}")
        return default

    def secret(self, key: str, expected: str, *, min_length: int = 1) -> Secret:
        if key not in self.data or self.data[key] is None:
            self.missing(key, expected)
            return Secret("")
        return _secret(self.report, self.data[key], self.at(key), expected, min_length)

    def optional_url(self, key: str, *, https_warning: str) -> str | None:
        value = self.data.get(key)
        if value is None:
            return None
        return _url(self.report, value, self.at(key), https_warning=https_warning)

    def sequence(self, key: str, expected: str, *, required: bool) -> Sequence[object] | None:
        """The list at `key`; None (reported unless optional and absent) when there is none."""
        if key not in self.data:
            if required:
                self.missing(key, expected)
            return None
        return _sequence(self.report, self.data[key], self.at(key), expected)


def _text(report: _Report, value: object, path: str, expected: str) -> str:
    if not isinstance(value, str):
        report.error(path, f"expected {expected}, got {_got(value)}")
        return ""
    if not value.strip():
        report.error(path, f"must not be empty; expected {expected}")
        return ""
    return _plain(value)


def _integer_form(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"an integer from {minimum} to {maximum}"
    if minimum == 1:
        return "a positive integer"
    if minimum is not None:
        return f"an integer of {minimum} or more"
    return "an integer"


def _integer(
    report: _Report, value: object, path: str, minimum: int | None, maximum: int | None
) -> int | None:
    in_range = (
        isinstance(value, int)
        and not isinstance(value, bool)
        and (minimum is None or value >= minimum)
        and (maximum is None or value <= maximum)
    )
    if not in_range:
        report.error(path, f"expected {_integer_form(minimum, maximum)}, got {_got(value)}")
        return None
    assert isinstance(value, int)
    return value


def _sequence(report: _Report, value: object, path: str, expected: str) -> Sequence[object] | None:
    if isinstance(value, (list, tuple)):
        return value
    hint = " (write [] for none)" if value is None else ""
    report.error(path, f"expected {expected}, got {_kind(value)}{hint}")
    return None


def _mapping(
    report: _Report, value: object, path: str, expected: str
) -> Mapping[Any, object] | None:
    if isinstance(value, Mapping):
        return value
    report.error(path, f"expected {expected}, got {_kind(value)}")
    return None


def _secret(report: _Report, value: object, path: str, expected: str, min_length: int) -> Secret:
    """A secret; messages describe the value's kind and length rule, never its content."""
    if not isinstance(value, str):
        report.error(path, f"expected {expected} as a string, got {_kind(value)} (quote it)")
        return Secret("")
    if not value.strip():
        report.error(path, f"must not be empty; expected {expected}")
        return Secret("")
    if value != MASK and len(value) < min_length:
        report.error(path, f"too short: expected at least {min_length} characters")
    env_var = getattr(value, "env_var", None)
    return Secret(_plain(value), env_var=env_var if isinstance(env_var, str) else None)


def _url(
    report: _Report, value: object, path: str, *, https_warning: str | None = None
) -> str | None:
    """An http(s) URL with a host and no query or fragment."""
    expected = "an http:// or https:// URL without query or fragment"
    if not isinstance(value, str):
        report.error(path, f"expected {expected}, got {_got(value)}")
        return None
    parts = _split_url(value)
    if parts is None or parts.query or parts.fragment:
        report.error(path, f"expected {expected}, got {_got(value)}")
        return None
    if parts.scheme == "http" and https_warning:
        report.warn(path, f"not https: {https_warning}")
    return _plain(value)


def _split_url(value: str) -> SplitResult | None:
    """The parts of an http(s) URL with a host; None for anything else."""
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None
    return parts if parts.scheme in ("http", "https") and parts.hostname else None


# --------------------------------------------------------------------------- sections


def _list_section(top: _Fields, key: str, what: str, read: Any, *args: Any) -> list[Any] | None:
    """The drafts of the readable entries of a list section; None when it is absent.

    Rules across objects then run on these drafts. A section that is absent skips the rules
    that look things up in it (a file with only ``queues`` is checked against nothing).
    """
    if not top.has(key):
        return None
    items = _sequence(top.report, top.get(key), key, f"a list of {what}")
    drafts = [read(top.report, item, _item(key, i), *args) for i, item in enumerate(items or ())]
    return [d for d in drafts if d is not None]


def _built(drafts: list[Any] | None) -> list[Any]:
    return [d.built for d in drafts or ()]


def _top_level(top: _Fields) -> dict[str, Any]:
    report = top.report
    database_url = top.text("database_url", "a database URL", default=DEFAULT_DATABASE_URL)
    if database_url and not database_url.startswith(DATABASE_URL_PREFIXES):
        scheme = database_url.split("://", 1)[0] if "://" in database_url else None
        got = f"a URL with scheme {scheme!r}" if scheme else "a value without a scheme"
        report.error(
            top.at("database_url"),
            f"expected sqlite:///PATH, postgresql://... or postgresql+psycopg://..., got {got}",
        )
    public = top.optional_url("public_base_url", https_warning=MEDIA_HTTPS)
    custom = top.boolean("allow_custom_endpoints", default=False)
    token_url = _oauth_token_url(top, custom)
    return {
        "database_url": database_url,
        "data_dir": top.text("data_dir", "a directory path", default=DEFAULT_DATA_DIR),
        "public_base_url": public,
        "allow_custom_endpoints": custom,
        "oauth_token_url": token_url,
        "callback_tolerance_seconds": top.integer(
            "callback_tolerance_seconds", default=300, minimum=30, maximum=86400
        ),
        "callback_max_bytes": top.integer(
            "callback_max_bytes", default=1024 * 1024, minimum=64 * 1024, maximum=64 * 1024 * 1024
        ),
        "sqlite_synchronous": top.choice(
            "sqlite_synchronous", ("NORMAL", "FULL"), default="NORMAL"
        ),
        "send_rate_per_app": top.integer("send_rate_per_app", default=20, minimum=1, maximum=10000),
        "send_rate_per_project": top.integer(
            "send_rate_per_project", default=800, minimum=1, maximum=100000
        ),
        "send_ttl_seconds": _optional_ttl(top),
        "send_max_attempts": top.integer("send_max_attempts", default=12, minimum=1, maximum=1000),
        "send_max_age_seconds": top.integer(
            "send_max_age_seconds", default=24 * 3600, minimum=60, maximum=30 * 24 * 3600
        ),
        "send_concurrency": top.integer("send_concurrency", default=300, minimum=1, maximum=1000),
        "send_lease_seconds": top.integer(
            "send_lease_seconds", default=60, minimum=5, maximum=3600
        ),
    }


def _optional_ttl(top: _Fields) -> int | None:
    """Sinch accepts a ttl from 3 s; null (the default) sends none."""
    if top.get("send_ttl_seconds") is None:
        return None
    return top.integer("send_ttl_seconds", default=0, minimum=3, maximum=315_576_000_000)


def _oauth_token_url(top: _Fields, custom: bool) -> str:
    value = top.get("oauth_token_url")
    if value is None or value == DEFAULT_OAUTH_TOKEN_URL:
        if top.has("oauth_token_url") and value is None:
            top.report.error(top.at("oauth_token_url"), "expected a URL, got null")
        return DEFAULT_OAUTH_TOKEN_URL
    url = _url(top.report, value, top.at("oauth_token_url"))
    if url is not None and not custom:
        top.report.error(
            top.at("oauth_token_url"),
            f"expected {DEFAULT_OAUTH_TOKEN_URL}, got {url} "
            "(another token URL needs allow_custom_endpoints: true)",
        )
    return url or DEFAULT_OAUTH_TOKEN_URL


# --------------------------------------------------------------------------- services


@dataclass
class _ServiceDraft:
    path: str
    name: str
    region: str | None
    apps: list[tuple[str, str]]  # (upper-case app id, path of its auth_id)
    built: MessagingService | None


def _service(report: _Report, value: object, path: str, custom: bool) -> _ServiceDraft | None:
    data = _mapping(
        report, value, path, "a messaging service {name, type, service_connection, ...}"
    )
    if data is None:
        return None
    fields = _Fields(report, data, path, "service")
    errors = report.errors
    name = _service_name(fields)
    fields.choice("type", (SERVICE_TYPE,), default=SERVICE_TYPE)
    connection = fields.text("service_connection", CONNECTION_FORM)
    parsed = _connection(report, connection, fields.at("service_connection"), custom)
    region = _region(fields, parsed, connection)
    auth = _authentication(fields)
    templates = _whatsapp_templates(fields, [app_id for app_id, _ in auth.apps])
    draft = _ServiceDraft(
        path=path,
        name=name,
        region=region,
        apps=auth.apps,
        built=None,
    )
    if report.errors == errors and auth.inbound is not None and parsed is not None:
        draft.built = MessagingService(
            name=name,
            type=SERVICE_TYPE,
            service_connection=connection,
            region=region or "",
            project_id=parsed[1],
            outbound=tuple(auth.outbound),
            inbound=auth.inbound,
            whatsapp_templates=templates,
        )
    return draft


def _service_name(fields: _Fields) -> str:
    name = fields.text("name", "a service name such as sinch-eu")
    if name and not SERVICE_NAME_RE.fullmatch(name):
        fields.report.error(
            fields.at("name"),
            "expected 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit "
            f"(it is part of the callback URL /sms/sinchconversation/NAME), got {_got(name)}",
        )
    elif name.lower() == "all":
        fields.report.error(
            fields.at("name"),
            "the name all is reserved: /sms/sinchconversation/all is the callback URL for "
            "every service",
        )
    return name


def _connection(
    report: _Report, url: str, path: str, custom: bool
) -> tuple[str | None, str] | None:
    """(region or None, project id) parsed from a service connection; None if invalid."""
    if not url:
        return None
    match = SINCH_CONNECTION_RE.fullmatch(url)
    if match:
        return _sinch_connection(report, match, path)
    if not custom:
        report.error(
            path,
            f"expected {CONNECTION_FORM}, got {url} "
            "(other hosts need allow_custom_endpoints: true)",
        )
        return None
    parts = _split_url(url)
    match = CUSTOM_PATH_RE.fullmatch(parts.path) if parts else None
    if parts is None or parts.hostname is None or parts.query or match is None:
        report.error(path, f"expected {CUSTOM_CONNECTION_FORM}, got {url}")
        return None
    prefix = (match.group("prefix") or "").rsplit("/", 1)[-1]
    host_label = parts.hostname.split(".", 1)[0] if "." in parts.hostname else ""
    region = next((r for r in (prefix, host_label) if r in REGIONS), None)
    return region, match.group("project")


def _sinch_connection(report: _Report, match: re.Match[str], path: str) -> tuple[str, str] | None:
    region, project = match.group("region"), match.group("project")
    if region not in REGIONS:
        report.error(
            path,
            f"unknown region {region!r} in the host: Sinch runs {_either(REGIONS)} "
            f"({CONNECTION_FORM})",
        )
        return None
    if not PROJECT_ID_RE.fullmatch(project):
        report.error(
            path,
            "expected a project id of 8-4-4-4-12 hexadecimal digits (Conversation API > Apps) "
            f"in {CONNECTION_FORM}, got {project!r}",
        )
        return None
    return region, project


def _region(fields: _Fields, parsed: tuple[str | None, str] | None, connection: str) -> str | None:
    """The service's region: from the connection, else from an explicit `region:`."""
    explicit: str | None = None
    if fields.has("region"):
        explicit = fields.choice("region", REGIONS, default="")
        explicit = explicit or None
    found = parsed[0] if parsed else None
    if found and explicit and explicit != found:
        fields.report.error(
            fields.at("region"),
            f"disagrees with the service connection, which names {found}: "
            f"remove region or write region: {found}",
        )
    if parsed is not None and found is None and explicit is None and not fields.has("region"):
        fields.missing(
            "region",
            f"{_either(REGIONS)} (the service connection {connection} names no region: "
            "neither a /{eu|us|br}/ path prefix nor a {eu|us|br}. host prefix)",
        )
    return found or explicit


@dataclass
class _Authentication:
    outbound: list[OutboundCredential]
    inbound: InboundWebhook | None
    apps: list[tuple[str, str]]  # every app id that could be read, with its path
    outbound_entries: int = 0  # entries that are not the webhook, or could not be read


def _authentication(fields: _Fields) -> _Authentication:
    report, path = fields.report, fields.at("authentication")
    auth = _Authentication(outbound=[], inbound=None, apps=[])
    entries = fields.sequence(
        "authentication",
        "a list with one KEYID@APPID entry per app and one webhook entry",
        required=True,
    )
    if entries is None:
        return auth
    webhook_index: int | None = None
    for index, entry in enumerate(entries):
        entry_path = _item(path, index)
        expected = f"{{auth_id: KEYID@APPID, password: SECRET}} or {WEBHOOK_FORM}"
        data = _mapping(report, entry, entry_path, expected)
        if data is None:
            auth.outbound_entries += 1
        elif not _is_webhook(data):
            _outbound(report, data, entry_path, auth)
        elif webhook_index is not None:
            report.error(
                entry_path,
                "a messaging service has one webhook entry (one webhook secret per service, "
                f"valid for all its apps); the first is authentication[{webhook_index}]",
            )
        else:
            webhook_index = index
            auth.inbound = _webhook(report, data, entry_path)
    if webhook_index is None:
        report.error(path, f"expected one webhook entry {WEBHOOK_FORM}, found none")
    if auth.outbound_entries == 0:
        report.error(
            path, "expected at least one outbound entry {auth_id: KEYID@APPID, password: SECRET}"
        )
    return auth


def _is_webhook(data: Mapping[Any, object]) -> bool:
    auth_id = data.get("auth_id")
    return auth_id == WEBHOOK_AUTH_ID or (auth_id is None and "triggers" in data)


def _outbound(
    report: _Report, data: Mapping[Any, object], path: str, auth: _Authentication
) -> None:
    auth.outbound_entries += 1
    fields = _Fields(report, data, path, "outbound")
    errors = report.errors
    parsed = _auth_id(fields)
    secret = fields.secret("password", "the access key secret (Settings > Access keys)")
    if parsed is None:
        return
    key_id, app_id = parsed
    earlier = next((p for a, p in auth.apps if a == app_id), None)
    auth.apps.append((app_id, fields.at("auth_id")))
    if earlier is not None:
        report.error(
            fields.at("auth_id"),
            f"app {app_id} has an entry already ({_relative_to(earlier, path)}): "
            "one outbound entry per app",
        )
    elif report.errors == errors:
        auth.outbound.append(OutboundCredential(key_id=key_id, app_id=app_id, secret=secret))


def _relative_to(path: str, sibling: str) -> str:
    """``messaging_services[0].authentication[1].auth_id`` shown from a sibling entry."""
    parent = sibling.rsplit(".", 1)[0] + "."
    return path[len(parent) :] if path.startswith(parent) else path


def _auth_id(fields: _Fields) -> tuple[str, str] | None:
    """(key id, upper-case app id); also returned for a lower-case app id, after reporting it,
    so that queues using the app are not reported a second time."""
    path = fields.at("auth_id")
    value = fields.get("auth_id")
    form = "KEYID@APPID (key id from Settings > Access keys, app id from Conversation API > Apps)"
    if not fields.has("auth_id"):
        fields.missing("auth_id", f"{form} or webhook")
        return None
    if isinstance(value, str) and value.lower() == WEBHOOK_AUTH_ID:
        fields.report.error(path, "expected webhook (lower case) for the inbound entry")
        return None
    key_id, at, app_id = value.partition("@") if isinstance(value, str) else ("", "", "")
    if not at or not key_id or not app_id or "@" in app_id or re.search(r"\s", key_id):
        fields.report.error(path, f"expected {form}, got {_got(value)}")
        return None
    checked = _app_id(fields.report, app_id, path)
    return None if checked is None else (_plain(key_id), checked)


def _app_id(report: _Report, app_id: str, path: str, *, corrected: str | None = None) -> str | None:
    """The upper-case app id; a lower-case one is reported with the value to use."""
    if APP_ID_RE.fullmatch(app_id):
        return _plain(app_id)
    if APP_ID_RE.fullmatch(app_id.upper()):
        report.error(path, f"app id must be upper case: use {corrected or app_id.upper()}")
        return app_id.upper()
    report.error(path, f"expected an app id of {APP_ID_FORM}, got {app_id!r}")
    return None


def _webhook(report: _Report, data: Mapping[Any, object], path: str) -> InboundWebhook | None:
    fields = _Fields(report, data, path, "webhook")
    errors = report.errors
    if not fields.has("auth_id"):
        fields.missing("auth_id", "webhook")
    secret = fields.secret(
        "password", "the webhook secret token (Conversation API > Apps > app > Webhook)"
    )
    triggers = _triggers(fields)
    if report.errors != errors:
        return None
    return InboundWebhook(secret=secret, triggers=triggers)


def _triggers(fields: _Fields) -> tuple[str, ...]:
    report, path = fields.report, fields.at("triggers")
    items = fields.sequence(
        "triggers", "a list of triggers such as [MESSAGE_INBOUND, MESSAGE_DELIVERY]", required=True
    )
    if items is None:
        return ()
    found: list[str] = []
    for index, item in enumerate(items):
        item_path = _item(path, index)
        if not isinstance(item, str) or item not in TRIGGERS:
            hint = _suggestion(item.upper(), TRIGGERS) if isinstance(item, str) else ""
            report.error(
                item_path,
                f"unknown trigger {_got(item)}{hint}: expected one of {_one_of(TRIGGERS)}",
            )
        elif item in found:
            report.warn(item_path, f"listed twice ({item}); the repeat is ignored")
        else:
            found.append(_plain(item))
    if "MESSAGE_INBOUND" not in found:
        report.error(path, "missing MESSAGE_INBOUND: without it no customer message would arrive")
    if "MESSAGE_DELIVERY" not in found:
        report.warn(
            path,
            "missing MESSAGE_DELIVERY: no delivery receipts, no delivery events in the log",
        )
    return tuple(found)


# --------------------------------------------------------------------------- templates


def _whatsapp_templates(fields: _Fields, app_ids: list[str]) -> tuple[WhatsAppTemplate, ...]:
    """The service's WhatsApp templates; (app_id, name, language) is unique."""
    items = fields.sequence(
        "whatsapp_templates",
        "a list of WhatsApp templates {app_id, name, language, parameters, text}",
        required=False,
    )
    path = fields.at("whatsapp_templates")
    found: list[WhatsAppTemplate] = []
    first: dict[tuple[str, str, str], int] = {}
    for index, item in enumerate(items or ()):
        item_path = _item(path, index)
        template = _whatsapp_template(fields.report, item, item_path, app_ids)
        if template is None:
            continue
        key = (template.app_id, template.name, template.language)
        earlier = first.setdefault(key, index)
        if earlier != index:
            fields.report.error(
                item_path,
                f"template {template.name} ({template.language}) of app {template.app_id} is "
                f"listed already (whatsapp_templates[{earlier}]): one entry per app, name and "
                "language",
            )
        else:
            found.append(template)
    return tuple(found)


def _whatsapp_template(
    report: _Report, value: object, path: str, app_ids: list[str]
) -> WhatsAppTemplate | None:
    data = _mapping(report, value, path, TEMPLATE_FORM)
    if data is None:
        return None
    fields = _Fields(report, data, path, "whatsapp_template")
    errors = report.errors
    app_id = _template_app(fields, app_ids)
    name = _template_name(fields)
    language = _template_language(fields)
    parameters, given = _template_parameters(fields)
    text = _template_text(fields, parameters, given)
    if report.errors != errors:
        return None
    return WhatsAppTemplate(
        app_id=app_id, name=name, language=language, parameters=parameters, text=text
    )


def _template_app(fields: _Fields, app_ids: list[str]) -> str:
    expected = "the app id of one of this service's outbound entries (KEYID@APPID)"
    value = fields.text("app_id", expected)
    if not value:
        return value
    errors = fields.report.errors
    checked = _app_id(fields.report, value, fields.at("app_id"))
    if checked is None or fields.report.errors != errors or not app_ids:
        return checked or value
    if checked not in app_ids:
        fields.report.error(
            fields.at("app_id"),
            f"app {checked} is not an outbound app of this messaging service: expected "
            f"{_either(app_ids)} (templates are sent by the service's own apps)",
        )
    return checked


def _template_name(fields: _Fields) -> str:
    name = fields.text("name", "the name WhatsApp approved, such as order_update")
    if not name or TEMPLATE_NAME_RE.fullmatch(name):
        return name
    if TEMPLATE_NAME_RE.fullmatch(name.lower()):
        fields.report.error(
            fields.at("name"), f"WhatsApp template names are lower case: use {name.lower()}"
        )
    else:
        fields.report.error(
            fields.at("name"),
            "expected the approved template name: 1-512 lower-case letters, digits and "
            f"underscores, such as order_update, got {_got(name)}",
        )
    return name


def _template_language(fields: _Fields) -> str:
    expected = "a WhatsApp language code such as sv_SE or en"
    language = fields.text("language", expected)
    if not language or LANGUAGE_RE.fullmatch(language):
        return language
    head, _, tail = language.replace("-", "_").partition("_")
    corrected = head.lower() + (f"_{tail.upper()}" if tail else "")
    if LANGUAGE_RE.fullmatch(corrected):
        fields.report.error(
            fields.at("language"),
            f"WhatsApp writes language codes with an underscore and an upper-case country: "
            f"use {corrected}",
        )
    else:
        fields.report.error(fields.at("language"), f"expected {expected}, got {_got(language)}")
    return language


def _template_parameters(fields: _Fields) -> tuple[tuple[str, ...], set[str]]:
    """(the valid parameter keys, every string given): placeholders are checked against the
    second, so that one bad key is reported once."""
    items = fields.sequence(
        "parameters", f"a list of parameter keys ({TEMPLATE_PARAMETER_FORM})", required=False
    )
    found: list[str] = []
    given: set[str] = set()
    for index, item in enumerate(items or ()):
        path = _item(fields.at("parameters"), index)
        if isinstance(item, str):
            given.add(item)
        if not isinstance(item, str) or not TEMPLATE_PARAMETER_RE.fullmatch(item):
            fields.report.error(path, _parameter_problem(item))
        elif item in found:
            fields.report.error(path, f"listed twice ({item}): parameter keys are unique")
        else:
            found.append(_plain(item))
    return tuple(found), given


def _parameter_problem(item: object) -> str:
    expected = f"expected {TEMPLATE_PARAMETER_FORM}, got {_got(item)}"
    if not isinstance(item, str):
        return expected
    if TEMPLATE_PARAMETER_RE.fullmatch(item.lower()):
        return f"parameter keys are lower case: use {item.lower()}"
    whatsapp_style = re.fullmatch(r"\{*\s*([0-9]+)\s*\}*", item)
    if whatsapp_style:
        number = whatsapp_style.group(1)
        return f"{expected} (WhatsApp's {{{{{number}}}}} in the body is body[{number}]text)"
    indexed = re.sub(r"^((?:carousel\[[0-9]+\])?(?:header|body))\[0\]", r"\1[1]", item)
    if indexed != item and TEMPLATE_PARAMETER_RE.fullmatch(indexed):
        return f"parameter indexes start at 1: use {indexed}"
    return expected


def _template_text(fields: _Fields, parameters: tuple[str, ...], given: set[str]) -> str | None:
    value = fields.get("text")
    if value is None:
        return None
    text = _text(
        fields.report, value, fields.at("text"), "a preview text with {body[1]text} placeholders"
    )
    unknown = [p for p in PLACEHOLDER_RE.findall(text) if p not in given]
    if unknown:
        listed = _one_of("{" + p + "}" for p in parameters) if parameters else "none"
        hint = " (write WhatsApp's {{1}} as {body[1]text})" if unknown[0].isdigit() else ""
        fields.report.error(
            fields.at("text"),
            f"unknown placeholder {{{unknown[0]}}}{hint}: the placeholders are the template's "
            f"parameters: {listed}",
        )
    return text or None


def _check_unique_name(report: _Report, names: dict[str, Any], draft: Any) -> None:
    """Report `draft` if an earlier draft in `names` has its name, ignoring case."""
    first = names.setdefault(draft.name.lower(), draft) if draft.name else draft
    if first is not draft:
        report.error(
            _key(draft.path, "name"),
            f"name already used by {first.path} ({first.name}): names must be unique "
            "(ignoring case)",
        )


def _check_services(report: _Report, services: list[Any] | None) -> None:
    """Unique names; an app belongs to one messaging service."""
    if services is None:
        return
    names: dict[str, _ServiceDraft] = {}
    owners: dict[str, tuple[_ServiceDraft, str]] = {}
    for draft in services:
        _check_unique_name(report, names, draft)
        for app_id, path in draft.apps:
            owner, owner_path = owners.setdefault(app_id, (draft, path))
            if owner is not draft:
                report.error(
                    path,
                    f"app {app_id} belongs to messaging service {owner.name or owner.path} "
                    f"already ({owner_path}): an app belongs to one messaging service",
                )


# --------------------------------------------------------------------------- queues


@dataclass
class _QueueDraft:
    path: str
    name: str
    addresses: list[tuple[QueueAddress, str]]  # the readable ones, with their paths
    sms_sender_id: str | None
    sender_given: bool
    built: Queue | None


def _queue(report: _Report, value: object, path: str) -> _QueueDraft | None:
    data = _mapping(report, value, path, "a queue {name, type: chat, addresses: [...]}")
    if data is None:
        return None
    fields = _Fields(report, data, path, "queue")
    errors = report.errors
    name = _name(fields, "a queue name such as support")
    fields.choice("type", (QUEUE_TYPE,), default=QUEUE_TYPE)
    addresses = _addresses(fields)
    sender = _sms_sender_id(fields)
    draft = _QueueDraft(
        path=path,
        name=name,
        addresses=addresses,
        sms_sender_id=sender,
        sender_given=fields.get("sms_sender_id") is not None,
        built=None,
    )
    queue = Queue(
        name=name,
        type=QUEUE_TYPE,
        addresses=tuple(a for a, _ in addresses),
        sms_sender_id=sender,
        priority=fields.integer("priority", default=0),
        max_size=fields.optional_integer("max_size", minimum=1),
        offer_timeout_seconds=fields.optional_integer("offer_timeout_seconds", minimum=1),
        business_hours=_business_hours(
            report, fields.get("business_hours"), fields.at("business_hours")
        ),
    )
    if report.errors == errors:
        draft.built = queue
    return draft


def _name(fields: _Fields, expected: str) -> str:
    name = fields.text("name", expected)
    if name != name.strip():
        fields.report.error(fields.at("name"), f"must not start or end with spaces, got {name!r}")
    return name


def _addresses(fields: _Fields) -> list[tuple[QueueAddress, str]]:
    report = fields.report
    items = fields.sequence("addresses", f"a list of queue addresses {ADDRESS_FORM}", required=True)
    if items is None:
        return []
    if not items:
        report.error(fields.at("addresses"), f"expected at least one address {ADDRESS_FORM}")
    found: list[tuple[QueueAddress, str]] = []
    for index, item in enumerate(items):
        path = _item(fields.at("addresses"), index)
        address = _address(report, item, path)
        if address is not None:
            found.append((address, path))
    return found


def _address(report: _Report, value: object, path: str) -> QueueAddress | None:
    match = ADDRESS_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        report.error(path, f"expected {ADDRESS_FORM}, got {_got(value)}")
        return None
    app_id, subchannel = match.group("app"), match.group("sub").lower()
    if subchannel not in SUBCHANNEL_TO_CHANNEL:
        report.error(
            path, f"unknown subchannel {match.group('sub')!r}: expected one of {SUBCHANNELS}"
        )
        return None
    canonical = f"{app_id.upper()}@{subchannel}.sinchconversation.com"
    errors = report.errors
    checked = _app_id(report, app_id, path, corrected=canonical)
    if checked is None or report.errors != errors:
        return None
    if value != canonical:
        report.error(path, f"write the domain in lower case: use {canonical}")
        return None
    return QueueAddress(app_id=checked, subchannel=subchannel)


def _sms_sender_id(fields: _Fields) -> str | None:
    value = fields.get("sms_sender_id")
    path = fields.at("sms_sender_id")
    if value is None:
        return None
    if not isinstance(value, str):
        quoted = ' (quote it: YAML reads +12025550143 as a number and drops the "+")'
        hint = quoted if isinstance(value, int) else ""
        fields.report.error(path, f"expected {SENDER_FORM} as a string, got {_got(value)}{hint}")
        return None
    if not any(p.fullmatch(value) for p in (E164_RE, SHORT_CODE_RE, ALPHANUMERIC_SENDER_RE)):
        fields.report.error(path, f"expected {SENDER_FORM}, got {value!r}")
        return None
    return _plain(value)


def _business_hours(report: _Report, value: object, path: str) -> BusinessHours | None:
    if value is None:
        return None
    data = _mapping(report, value, path, "a mapping {timezone, weekly, closed_dates}")
    if data is None:
        return None
    fields = _Fields(report, data, path, "business_hours")
    timezone = fields.text("timezone", "an IANA time zone such as Europe/Stockholm")
    if timezone:
        _check_timezone(report, timezone, fields.at("timezone"))
    weekly = _weekly(fields)
    closed = _closed_dates(fields)
    return BusinessHours(timezone=timezone, weekly=weekly, closed_dates=closed)


@functools.lru_cache(maxsize=1)
def _timezones_by_lower_name() -> dict[str, str]:
    return {name.lower(): name for name in zoneinfo.available_timezones()}


def _check_timezone(report: _Report, name: str, path: str) -> None:
    try:
        zoneinfo.ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        close = _timezones_by_lower_name().get(name.lower())
        hint = f": use {close}" if close else " such as Europe/Stockholm"
        report.error(path, f"unknown time zone {name!r}; expected an IANA time zone{hint}")


def _weekly(fields: _Fields) -> dict[str, tuple[tuple[int, int], ...]]:
    """mon..sun -> sorted (start, end) minutes; a day that is absent or [] is closed."""
    report, path = fields.report, fields.at("weekly")
    if not fields.has("weekly"):
        fields.missing("weekly", 'a mapping of weekdays to ranges, e.g. {mon: ["08:00-17:00"]}')
        return {}
    data = _mapping(report, fields.get("weekly"), path, "a mapping of mon..sun to range lists")
    if data is None:
        return {}
    _Fields(report, data, path, "weekly")
    weekly: dict[str, tuple[tuple[int, int], ...]] = {}
    for day in (d for d in WEEKDAYS if d in data):
        day_path = _key(path, day)
        items = _sequence(report, data[day], day_path, 'a list of ranges such as ["08:00-17:00"]')
        spans = [
            _time_range(report, item, _item(day_path, i)) for i, item in enumerate(items or ())
        ]
        valid = sorted((s, i) for i, s in enumerate(spans) if s is not None)
        for (before, _), (span, index) in itertools.pairwise(valid):
            if span[0] < before[1]:
                report.error(_item(day_path, index), f"overlaps {_format_range(before)}")
        if valid:
            weekly[day] = tuple(s for s, _ in valid)
    return weekly


def _time_range(report: _Report, value: object, path: str) -> tuple[int, int] | None:
    expected = "HH:MM-HH:MM (24-hour clock; 24:00 ends at midnight)"
    match = TIME_RANGE_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        report.error(path, f"expected {expected}, got {_got(value)}")
        return None
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > 24 * 60:
        report.error(path, f"expected {expected}, got {_got(value)}")
        return None
    if start >= end:
        report.error(
            path,
            f"the start must be before the end, got {value} "
            "(a range cannot cross midnight: split it over two days)",
        )
        return None
    return start, end


def _format_minutes(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _format_range(span: tuple[int, int]) -> str:
    return f"{_format_minutes(span[0])}-{_format_minutes(span[1])}"


def _closed_dates(fields: _Fields) -> tuple[str, ...]:
    items = fields.sequence("closed_dates", "a list of dates YYYY-MM-DD", required=False)
    found: list[str] = []
    for index, item in enumerate(items or ()):
        text = item.isoformat() if type(item) is date else item
        valid = isinstance(text, str) and DATE_RE.fullmatch(text) and _is_date(text)
        if not valid:
            fields.report.error(
                _item(fields.at("closed_dates"), index),
                f"expected a date YYYY-MM-DD such as 2026-12-24, got {_got(item)}",
            )
        elif isinstance(text, str):
            found.append(_plain(text))
    return tuple(found)


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _check_queues(report: _Report, queues: list[Any] | None, services: list[Any] | None) -> None:
    """Unique names and addresses; addresses on outbound apps; the US SMS sender id."""
    if queues is None:
        return
    apps = _apps_index(services)
    names: dict[str, _QueueDraft] = {}
    owners: dict[str, tuple[_QueueDraft, str]] = {}
    for draft in queues:
        _check_unique_name(report, names, draft)
        for address, path in draft.addresses:
            owner, owner_path = owners.setdefault(address.address, (draft, path))
            if owner is not draft:
                report.error(
                    path,
                    f"already an address of queue {owner.name or owner.path} ({owner_path}): "
                    "an address belongs to one queue",
                )
            elif owner_path != path:
                report.error(path, f"listed twice in this queue ({address.address})")
            if apps is not None and address.app_id not in apps:
                report.error(
                    path,
                    f"app {address.app_id} is not an outbound app of any messaging service: "
                    "add KEYID@APPID to a service's authentication (replies could not be sent)",
                )
        _check_sms_sender(report, draft, apps)


def _apps_index(services: list[Any] | None) -> dict[str, _ServiceDraft] | None:
    """app id -> its service; None when the input has no messaging_services section."""
    if services is None:
        return None
    return {app_id: draft for draft in reversed(services) for app_id, _ in draft.apps}


def _check_sms_sender(
    report: _Report, draft: _QueueDraft, apps: dict[str, _ServiceDraft] | None
) -> None:
    sms = [(a, p) for a, p in draft.addresses if a.subchannel == "sms"]
    path = _key(draft.path, "sms_sender_id")
    if draft.sender_given and not sms and draft.addresses:
        report.warn(path, "not used: the queue has no sms address")
    if draft.sender_given or apps is None:
        return
    for address, address_path in sms:
        service = apps.get(address.app_id)
        if service is not None and service.region == "us":
            where = address_path.rsplit(".", 1)[-1]
            report.error(
                path,
                f"missing; {where} ({address.address}) is an sms address on the us messaging "
                f"service {service.name}, which needs an SMS sender: expected {SENDER_FORM}",
            )
            return


# --------------------------------------------------------------------------- chat settings


def _chat_settings(report: _Report, top: _Fields) -> ChatSettings | None:
    """The chat settings (defaults when the section is absent); None when invalid."""
    if not top.has("chat_settings"):
        return ChatSettings()
    hint = " (write {} for the defaults)" if top.get("chat_settings") is None else ""
    data = _mapping(report, top.get("chat_settings"), "chat_settings", f"a mapping{hint}")
    if data is None:
        return None
    fields = _Fields(report, data, "chat_settings", "chat_settings")
    errors = report.errors
    defaults = ChatSettings()
    integers = {
        name: fields.integer(name, default=getattr(defaults, name), minimum=low, maximum=high)
        for name, (low, high) in CHAT_INTEGERS.items()
    }
    settings = ChatSettings(
        **integers,
        attachment_types=_attachment_types(fields, defaults.attachment_types),
        wrapup_codes=_wrapup_codes(fields),
        attachment_base_url=fields.optional_url("attachment_base_url", https_warning=MEDIA_HTTPS),
        whatsapp_opt_in_required=fields.boolean("whatsapp_opt_in_required", default=False),
        prompts=_prompts(report, fields),
    )
    _check_idle_times(fields, settings)
    return settings if report.errors == errors else None


def _attachment_types(fields: _Fields, default: tuple[str, ...]) -> tuple[str, ...]:
    items = fields.sequence("attachment_types", "a list of MIME types type/subtype", required=False)
    if items is None:
        return default
    found: list[str] = []
    for index, item in enumerate(items):
        if isinstance(item, str) and MIME_TYPE_RE.fullmatch(item.lower()):
            found.append(item.lower())
        else:
            fields.report.error(
                _item(fields.at("attachment_types"), index),
                f"expected a MIME type type/subtype such as image/jpeg, got {_got(item)}",
            )
    return tuple(found)


def _wrapup_codes(fields: _Fields) -> tuple[str, ...]:
    """Non-empty texts of at most WRAPUP_CODE_MAX characters, each listed once."""
    items = fields.sequence("wrapup_codes", "a list of wrap-up codes (texts)", required=False)
    if items is None:
        return ()
    found: list[str] = []
    for index, item in enumerate(items):
        path = _item(fields.at("wrapup_codes"), index)
        if not isinstance(item, str) or not item.strip():
            fields.report.error(path, f"expected a non-empty text, got {_got(item)}")
        elif len(item) > WRAPUP_CODE_MAX or item != item.strip():
            fields.report.error(
                path,
                f"expected at most {WRAPUP_CODE_MAX} characters without leading or trailing "
                f"spaces, got {_got(item)}",
            )
        elif item in found:
            fields.report.error(path, f"{_got(item)} is listed twice")
        else:
            found.append(_plain(item))
    return tuple(found)


def _prompts(report: _Report, fields: _Fields) -> Prompts:
    if not fields.has("prompts"):
        return Prompts()
    data = _mapping(
        report, fields.get("prompts"), fields.at("prompts"), "a mapping of prompt names to texts"
    )
    if data is None:
        return Prompts()
    prompt_fields = _Fields(report, data, fields.at("prompts"), "prompts")
    texts: dict[str, str | None] = {}
    for name in KEYS["prompts"]:
        value = data.get(name)
        path = prompt_fields.at(name)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            report.error(
                path, f"expected a text, or null to switch the prompt off, got {_got(value)}"
            )
            continue
        unknown = [p for p in PLACEHOLDER_RE.findall(value) if p not in PROMPT_PLACEHOLDERS]
        if unknown:
            report.error(
                path,
                f"unknown placeholder {{{unknown[0]}}}: expected "
                f"{_one_of('{' + p + '}' for p in PROMPT_PLACEHOLDERS)}",
            )
        texts[name] = _plain(value)
    return Prompts(**texts)


def _check_idle_times(fields: _Fields, settings: ChatSettings) -> None:
    """The idle warning comes before the close; skipped when either value is invalid."""
    names = ("idle_warning_seconds", "inactivity_close_seconds")
    if any(_integer(_Report(), fields.data.get(n, 1), "", 1, None) is None for n in names):
        return
    idle, close = settings.idle_warning_seconds, settings.inactivity_close_seconds
    if idle < close:
        return
    notes = {n: "" if fields.has(n) else ", the default" for n in names}
    fields.report.error(
        fields.at(names[0] if fields.has(names[0]) else names[1]),
        f"idle_warning_seconds ({idle}{notes[names[0]]}) must be less than "
        f"inactivity_close_seconds ({close}{notes[names[1]]})",
    )


# --------------------------------------------------------------------------- agents


@dataclass
class _AgentDraft:
    path: str
    login: str
    queues: list[tuple[str, str]]  # (queue name, path)
    built: Agent | None


def _agent(report: _Report, value: object, path: str) -> _AgentDraft | None:
    data = _mapping(report, value, path, "an agent {login, display_name, role, queues, ...}")
    if data is None:
        return None
    fields = _Fields(report, data, path, "agent")
    errors = report.errors
    login = _login(fields)
    role = fields.choice("role", ("agent", "admin"), default="agent")
    queues = _agent_queues(fields)
    password = None
    if fields.get("password") is not None:
        password = fields.secret(
            "password", "a password (at least 8 characters)", min_length=MIN_PASSWORD_LENGTH
        )
    agent = Agent(
        login=login,
        display_name=fields.text("display_name", "the name shown to colleagues"),
        role=_role(role),
        queues=tuple(name for name, _ in queues),
        max_chats=fields.optional_integer("max_chats", minimum=1, maximum=AGENT_MAX_CHATS),
        password=password,
    )
    return _AgentDraft(
        path=path, login=login, queues=queues, built=agent if report.errors == errors else None
    )


def _role(value: str) -> Role:
    return "admin" if value == "admin" else "agent"


def _login(fields: _Fields) -> str:
    login = fields.text("login", "a login such as anna")
    if not login or LOGIN_RE.fullmatch(login):
        return login
    if LOGIN_RE.fullmatch(login.lower()):
        fields.report.error(fields.at("login"), f"login must be lower case: use {login.lower()}")
    else:
        fields.report.error(
            fields.at("login"),
            "expected 2-64 characters of a-z, 0-9, '.', '_', '@' or '-', starting with a letter "
            f"or digit, got {login!r}",
        )
    return login.lower()


def _agent_queues(fields: _Fields) -> list[tuple[str, str]]:
    items = fields.sequence("queues", "a list of queue names", required=False)
    found: list[tuple[str, str]] = []
    for index, item in enumerate(items or ()):
        path = _item(fields.at("queues"), index)
        if not isinstance(item, str) or not item.strip():
            fields.report.error(path, f"expected a queue name, got {_got(item)}")
        elif item in (name for name, _ in found):
            fields.report.warn(path, f"listed twice ({item}); the repeat is ignored")
        else:
            found.append((_plain(item), path))
    return found


def _check_agents(report: _Report, agents: list[Any] | None, queues: list[Any] | None) -> None:
    """Unique logins; the agents' queues exist."""
    if agents is None:
        return
    logins: dict[str, _AgentDraft] = {}
    for draft in agents:
        first = logins.setdefault(draft.login.lower(), draft) if draft.login else draft
        if first is not draft:
            report.error(
                _key(draft.path, "login"),
                f"login already used by {first.path}: logins must be unique (ignoring case)",
            )
    names = _queue_names(queues)
    if names is None:
        return
    listed = _one_of(names) if names else "none are configured"
    for draft in agents:
        for name, path in draft.queues:
            if name not in names:
                close = next((n for n in names if n.lower() == name.lower()), None)
                hint = f" (did you mean {close}?)" if close else ""
                report.error(path, f"no queue named {name!r}{hint}; queues: {listed}")


def _queue_names(queues: list[Any] | None) -> list[str] | None:
    """The queue names; None when the input has no queues section."""
    return None if queues is None else [d.name for d in queues if d.name]


# =========================================================================== dump


def dump(config: SystemConfig, *, secrets: SecretsMode) -> dict[str, Any]:
    """`config` in the config-file shape that `validate` reads back to an equal config.

    A section is written when it is in `present_sections` or differs from its default.
    Secrets are written as plain values ("reveal"), as ``${VAR}`` references ("placeholder":
    the secret's own variable, else a generated ``CONVODESK_...`` name) or as ``********``
    ("mask"); a password in the database URL is replaced the same way, unless "reveal".
    """
    namer = _EnvNames()
    out: dict[str, Any] = {
        "database_url": _dump_database_url(config.database_url, secrets),
        "data_dir": config.data_dir,
    }
    if config.public_base_url is not None:
        out["public_base_url"] = config.public_base_url
    if config.allow_custom_endpoints:
        out["allow_custom_endpoints"] = True
    if config.oauth_token_url != DEFAULT_OAUTH_TOKEN_URL:
        out["oauth_token_url"] = config.oauth_token_url
    defaults = SystemConfig()
    for key in (
        "callback_tolerance_seconds",
        "callback_max_bytes",
        "sqlite_synchronous",
        "send_rate_per_app",
        "send_rate_per_project",
        "send_ttl_seconds",
        "send_max_attempts",
        "send_max_age_seconds",
        "send_concurrency",
        "send_lease_seconds",
    ):
        if getattr(config, key) != getattr(defaults, key):
            out[key] = getattr(config, key)
    present = config.present_sections
    for section in SECTIONS:
        if section in present or getattr(config, section) != getattr(defaults, section):
            out[section] = _dump_section(config, section, secrets, namer)
    return out


def _dump_section(
    config: SystemConfig, section: str, secrets: SecretsMode, namer: _EnvNames
) -> Any:
    if section == "messaging_services":
        return [_service_dict(s, secrets, namer) for s in config.messaging_services]
    if section == "queues":
        return [dump_queue(q) for q in config.queues]
    if section == "chat_settings":
        return dump_chat_settings(config.chat_settings)
    return [_agent_dict(a, secrets, namer) for a in config.agents]


def dump_service(service: MessagingService, *, secrets: SecretsMode) -> dict[str, Any]:
    """One messaging service in the config-file shape (the admin API uses "mask")."""
    return _service_dict(service, secrets, _EnvNames())


def dump_queue(queue: Queue) -> dict[str, Any]:
    """One queue; optional fields only when set."""
    out: dict[str, Any] = {
        "name": queue.name,
        "type": queue.type,
        "addresses": [a.address for a in queue.addresses],
    }
    optional = {
        "sms_sender_id": queue.sms_sender_id,
        "priority": queue.priority or None,
        "max_size": queue.max_size,
        "offer_timeout_seconds": queue.offer_timeout_seconds,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    if queue.business_hours is not None:
        out["business_hours"] = _business_hours_dict(queue.business_hours)
    return out


def dump_chat_settings(settings: ChatSettings) -> dict[str, Any]:
    """The settings that differ from the defaults (the defaults are documented)."""
    defaults = ChatSettings()
    out: dict[str, Any] = {}
    for field in dataclasses.fields(ChatSettings):
        value = getattr(settings, field.name)
        if field.name == "prompts" or value == getattr(defaults, field.name):
            continue
        out[field.name] = list(value) if isinstance(value, tuple) else value
    prompts = {k: v for k, v in dataclasses.asdict(settings.prompts).items() if v is not None}
    if prompts:
        out["prompts"] = prompts
    return out


def dump_agent(agent: Agent, *, secrets: SecretsMode) -> dict[str, Any]:
    """One agent; a password is written only when the agent has one (stored agents don't)."""
    return _agent_dict(agent, secrets, _EnvNames())


def _service_dict(
    service: MessagingService, secrets: SecretsMode, namer: _EnvNames
) -> dict[str, Any]:
    auth: list[dict[str, Any]] = [
        {
            "auth_id": cred.auth_id,
            "password": namer.write(
                cred.secret, secrets, service.name, "KEY", cred.key_id, "SECRET"
            ),
        }
        for cred in service.outbound
    ]
    auth.append(
        {
            "auth_id": WEBHOOK_AUTH_ID,
            "password": namer.write(
                service.inbound.secret, secrets, service.name, "WEBHOOK_SECRET"
            ),
            "triggers": list(service.inbound.triggers),
        }
    )
    out: dict[str, Any] = {
        "name": service.name,
        "type": service.type,
        "service_connection": service.service_connection,
    }
    if _region_in_connection(service.service_connection) != service.region:
        out["region"] = service.region
    out["authentication"] = auth
    if service.whatsapp_templates:
        out["whatsapp_templates"] = [dump_template(t) for t in service.whatsapp_templates]
    return out


def dump_template(template: WhatsAppTemplate) -> dict[str, Any]:
    """One WhatsApp template; `text` only when set."""
    out: dict[str, Any] = {
        "app_id": template.app_id,
        "name": template.name,
        "language": template.language,
        "parameters": list(template.parameters),
    }
    if template.text is not None:
        out["text"] = template.text
    return out


def _region_in_connection(url: str) -> str | None:
    parsed = _connection(_Report(), url, "", custom=True)
    return parsed[0] if parsed else None


def _business_hours_dict(hours: BusinessHours) -> dict[str, Any]:
    out: dict[str, Any] = {
        "timezone": hours.timezone,
        "weekly": {
            day: [_format_range(span) for span in hours.weekly[day]]
            for day in WEEKDAYS
            if day in hours.weekly
        },
    }
    if hours.closed_dates:
        out["closed_dates"] = list(hours.closed_dates)
    return out


def _agent_dict(agent: Agent, secrets: SecretsMode, namer: _EnvNames) -> dict[str, Any]:
    out: dict[str, Any] = {
        "login": agent.login,
        "display_name": agent.display_name,
        "role": agent.role,
        "queues": list(agent.queues),
    }
    if agent.max_chats is not None:
        out["max_chats"] = agent.max_chats
    if agent.password is not None:
        out["password"] = namer.write(agent.password, secrets, "AGENT", agent.login, "PASSWORD")
    return out


def _dump_database_url(url: str, secrets: SecretsMode) -> str:
    """The URL with its password (if any) masked or replaced by a ``${VAR}`` reference."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not parseable, so not usable either: nothing to hide
        return url
    if secrets == "reveal" or password is None:
        return url
    user = parts.netloc.rpartition("@")[0].split(":", 1)[0]
    host = parts.netloc.rpartition("@")[2]
    replacement = MASK if secrets == "mask" else "${" + DATABASE_PASSWORD_VAR + "}"
    return urlunsplit(parts._replace(netloc=f"{user}:{replacement}@{host}"))


def env_var_name(*parts: str) -> str:
    """``CONVODESK_`` and the parts, upper case, every other character an underscore."""
    return "_".join(["CONVODESK", *(re.sub(r"[^A-Z0-9]", "_", p.upper()) for p in parts)])


class _EnvNames:
    """Generated placeholder names within one dump; a clash with a different secret (two
    names that differ only in punctuation) gets a ``_2`` suffix, so no value is lost."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}

    def write(self, secret: Secret, secrets: SecretsMode, *parts: str) -> str:
        if secrets == "reveal":
            return secret.reveal()
        if secrets == "mask":
            return MASK
        name = secret.env_var or self._generated(secret, env_var_name(*parts))
        return "${" + name + "}"

    def _generated(self, secret: Secret, name: str) -> str:
        candidate, counter = name, 1
        while self._values.setdefault(candidate, secret.reveal()) != secret.reveal():
            counter += 1
            candidate = f"{name}_{counter}"
        return candidate
