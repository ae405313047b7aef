"""The validated configuration: what `domain.configurator.validate` produces.

These are plain frozen dataclasses with no I/O. Everything that reads configuration (the
config file loader, the admin API, the admin pages, the storage layer) goes through
`configurator.validate` to get one of these, so the seed's rules live in one place.

Names follow the config file (DESIGN.md section 3); the reference of every field, its form
and default is docs/reference/configuration.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from convodesk.domain.secrets import Secret

# Queue-address subchannel -> Conversation API channel (DESIGN.md section 1).
SUBCHANNEL_TO_CHANNEL: dict[str, str] = {
    "whatsapp": "WHATSAPP",
    "nativechannel": "SINCH_CHAT",
    "facebook": "MESSENGER",
    "viber-bot": "VIBER",
    "instagram": "INSTAGRAM",
    "viber": "VIBERBM",
    "telegram": "TELEGRAM",
    "line": "LINE",
    "rcs": "RCS",
    "sms": "SMS",
}
CHANNEL_TO_SUBCHANNEL: dict[str, str] = {v: k for k, v in SUBCHANNEL_TO_CHANNEL.items()}

# Webhook triggers Sinch knows (reference section 2.1). UNSPECIFIED_TRIGGER is left out on
# purpose: Sinch documents it as "must not be used".
TRIGGERS: tuple[str, ...] = (
    "MESSAGE_INBOUND",
    "MESSAGE_DELIVERY",
    "MESSAGE_SUBMIT",
    "EVENT_INBOUND",
    "EVENT_DELIVERY",
    "CONVERSATION_START",
    "CONVERSATION_STOP",
    "CONVERSATION_DELETE",
    "CONTACT_CREATE",
    "CONTACT_DELETE",
    "CONTACT_MERGE",
    "CONTACT_UPDATE",
    "CONTACT_IDENTITIES_DUPLICATION",
    "CAPABILITY",
    "OPT_IN",
    "OPT_OUT",
    "CHANNEL_EVENT",
    "UNSUPPORTED",
    "SMART_CONVERSATION",
    "SMART_CONVERSATIONS",
    "MESSAGE_INBOUND_SMART_CONVERSATION_REDACTION",
    "RECORD_NOTIFICATION",
)

# The Conversation API's channel names (reference section 7), SINCH_CHAT and VIBER included.
CHANNELS: tuple[str, ...] = (
    "WHATSAPP",
    "RCS",
    "SMS",
    "MESSENGER",
    "VIBERBM",
    "MMS",
    "INSTAGRAM",
    "TELEGRAM",
    "KAKAOTALK",
    "KAKAOTALKCHAT",
    "LINE",
    "WECHAT",
    "APPLEBC",
    "VIBER",
    "SINCH_CHAT",
)

REGIONS: tuple[str, ...] = ("eu", "us", "br")
DEFAULT_OAUTH_TOKEN_URL = "https://auth.sinch.com/oauth2/token"  # noqa: S105 - a URL
DEFAULT_DATABASE_URL = "sqlite:///data/convodesk.db"

Role = Literal["admin", "agent"]
Severity = Literal["error", "warning"]


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One finding of the configurator: `path` is like ``queues[0].addresses[1]``."""

    path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        prefix = "" if self.severity == "error" else "warning: "
        return f"{self.path}: {prefix}{self.message}"


@dataclass(frozen=True, kw_only=True)
class OutboundCredential:
    """An outbound authentication entry ``KEYID@APPID`` with the access key secret."""

    key_id: str
    app_id: str
    secret: Secret

    @property
    def auth_id(self) -> str:
        return f"{self.key_id}@{self.app_id}"


@dataclass(frozen=True, kw_only=True)
class InboundWebhook:
    """The service's single inbound entry (``auth_id: webhook``)."""

    secret: Secret
    triggers: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class WhatsAppTemplate:
    """An approved WhatsApp template that agents of one app may send.

    `name` is the name WhatsApp approved (Sinch's ``template_id``), `language` a WhatsApp code
    in underscore form (``sv_SE``, ``en``), `parameters` the keys in Sinch's form
    (``body[1]text``, ``header[1]image.link``, ``button[0]url[1]text``), every one of which a
    reply must fill. `text` is a preview for agents with ``{body[1]text}`` placeholders.
    """

    app_id: str
    name: str
    language: str
    parameters: tuple[str, ...] = ()
    text: str | None = None


@dataclass(frozen=True, kw_only=True)
class MessagingService:
    name: str
    type: str  # always "sinchconversation"
    service_connection: str
    region: str  # eu | us | br
    project_id: str
    outbound: tuple[OutboundCredential, ...]
    inbound: InboundWebhook
    whatsapp_templates: tuple[WhatsAppTemplate, ...] = ()

    @property
    def app_ids(self) -> tuple[str, ...]:
        return tuple(c.app_id for c in self.outbound)

    def templates_for(self, app_id: str) -> tuple[WhatsAppTemplate, ...]:
        return tuple(t for t in self.whatsapp_templates if t.app_id == app_id)


@dataclass(frozen=True, kw_only=True)
class QueueAddress:
    """``APPID@SUBCHANNEL.sinchconversation.com``."""

    app_id: str
    subchannel: str

    @property
    def channel(self) -> str:
        return SUBCHANNEL_TO_CHANNEL[self.subchannel]

    @property
    def address(self) -> str:
        return f"{self.app_id}@{self.subchannel}.sinchconversation.com"


@dataclass(frozen=True, kw_only=True)
class BusinessHours:
    """Weekly opening hours of a queue in one time zone.

    `weekly` maps a weekday (``mon`` .. ``sun``) to ``(start, end)`` pairs of minutes since
    midnight; a day that is absent is closed. `closed_dates` are ISO dates (holidays).
    """

    timezone: str
    weekly: dict[str, tuple[tuple[int, int], ...]]
    closed_dates: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Queue:
    name: str
    type: str  # always "chat"
    addresses: tuple[QueueAddress, ...]
    sms_sender_id: str | None = None
    priority: int = 0  # higher is served first
    max_size: int | None = None  # waiting conversations; None: chat_settings.queue_max_size
    offer_timeout_seconds: int | None = None  # None: chat_settings.offer_timeout_seconds
    business_hours: BusinessHours | None = None


@dataclass(frozen=True, kw_only=True)
class Prompts:
    """Texts sent to the customer; None switches a prompt off.

    Placeholders: ``{queue}``, ``{position}``.
    """

    welcome: str | None = None
    queue_position: str | None = None
    queue_full: str | None = None
    outside_business_hours: str | None = None
    idle_warning: str | None = None
    closed: str | None = None


@dataclass(frozen=True, kw_only=True)
class ChatSettings:
    attachment_max_bytes: int = 16 * 1024 * 1024
    attachment_types: tuple[str, ...] = (
        "image/jpeg",
        "image/png",
        "image/webp",
        "application/pdf",
        "video/mp4",
        "audio/ogg",
        "audio/mpeg",
        "audio/aac",
    )
    attachment_base_url: str | None = None  # None: public_base_url
    attachment_retention_days: int = 30
    whatsapp_opt_in_required: bool = False
    offer_timeout_seconds: int = 120
    missed_offers_before_not_ready: int = 3
    max_concurrent_chats: int = 3
    queue_max_size: int = 100
    reopen_window_seconds: int = 3600
    idle_warning_seconds: int = 1500
    inactivity_close_seconds: int = 1800
    event_retention_days: int = 30
    # Codes an agent may give when ending a chat; empty: any code (or none) is accepted.
    wrapup_codes: tuple[str, ...] = ()
    prompts: Prompts = field(default_factory=Prompts)


@dataclass(frozen=True, kw_only=True)
class Agent:
    login: str
    display_name: str
    role: Role = "agent"
    queues: tuple[str, ...] = ()
    max_chats: int | None = None  # None: chat_settings.max_concurrent_chats
    password: Secret | None = None


@dataclass(frozen=True, kw_only=True)
class SystemConfig:
    """A whole, valid configuration. Sections absent from the source are left at defaults
    and listed in `present_sections`, so `config apply` touches only what the file names."""

    database_url: str = DEFAULT_DATABASE_URL
    data_dir: str = "data"
    public_base_url: str | None = None
    allow_custom_endpoints: bool = False
    oauth_token_url: str = DEFAULT_OAUTH_TOKEN_URL
    callback_tolerance_seconds: int = 300  # signature timestamp window, either way
    callback_max_bytes: int = 1024 * 1024  # larger callback bodies get 413
    sqlite_synchronous: str = "NORMAL"  # NORMAL or FULL (fsync on every commit)
    send_rate_per_app: int = 20  # sends per second per Sinch app, across all processes
    send_rate_per_project: int = 800  # sends per second per Sinch project
    send_ttl_seconds: int | None = None  # Sinch's ttl: no channel failover after it
    send_max_attempts: int = 12  # then the dead letters
    send_max_age_seconds: int = 24 * 3600  # a reply not sent within this goes to the dead letters
    send_concurrency: int = 300  # sends one process keeps in flight (claimed, waiting, on the wire)
    send_lease_seconds: int = 60  # a claimed send is taken over this long after its process died
    messaging_services: tuple[MessagingService, ...] = ()
    queues: tuple[Queue, ...] = ()
    chat_settings: ChatSettings = field(default_factory=ChatSettings)
    agents: tuple[Agent, ...] = ()
    present_sections: frozenset[str] = frozenset()

    def service(self, name: str) -> MessagingService | None:
        return next((s for s in self.messaging_services if s.name == name), None)

    def service_for_app(self, app_id: str) -> MessagingService | None:
        return next((s for s in self.messaging_services if app_id in s.app_ids), None)
