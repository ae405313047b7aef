"""`convodesk demo`: everything on one machine, with no Sinch account.

The demo starts the Sinch emulator in process, writes a sample configuration pointing at it
(two messaging services, eu and us; queues for WhatsApp, SMS and Messenger; three agents),
applies it to a SQLite database under the data directory, and serves the web app. The
webhook and access-key secrets are fresh random values on every start; the logins are fixed
so that they are easy to type, which is fine for a server that listens on 127.0.0.1 only.

Once the web app is ready, simulated customers (demo/simulator.py) start writing in on
WhatsApp and Messenger (the eu service) and SMS (the us service) and answer the agents'
replies; their photos come from a small media host (demo/media.py). Ctrl-C stops the web
app, then the customers, the media host and the emulator, and the command exits 0.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_EU = "5b6c2a1e-8d4f-4c3b-9a7e-1f2d3c4b5a69"
PROJECT_US = "9d0e1f2a-3b4c-4d5e-8f60-718293a4b5c6"
APP_EU = "01HZX4K7QW8E2R5T9Y3V6M1N0P"
APP_US = "01J5V9QW2K3M4N5P6R7S8T9V0W"
SMS_SENDER_US = "+12025550143"

LOGINS: tuple[tuple[str, str, str, str], ...] = (
    # login, display name, role, password
    ("admin", "Ada Admin", "admin", "demo-admin-pass"),
    ("anna", "Anna Lindqvist", "agent", "demo-anna-pass"),
    ("ben", "Ben Carter", "agent", "demo-ben-pass"),
)


@dataclass(frozen=True)
class DemoSecrets:
    key_eu: str
    key_us: str
    webhook_eu: str
    webhook_us: str

    @classmethod
    def generate(cls) -> DemoSecrets:
        return cls(*(secrets.token_urlsafe(24) for _ in range(4)))


def emulator_config(
    web_port: int, s: DemoSecrets, *, callback_base: str | None = None
) -> dict[str, Any]:
    """The emulator's projects; callbacks go to the web app on ``web_port``, or under
    ``callback_base`` when given (tests point them at a sink)."""
    base = f"{callback_base or f'http://127.0.0.1:{web_port}'}/sms/sinchconversation"
    triggers = ["MESSAGE_INBOUND", "MESSAGE_DELIVERY", "EVENT_INBOUND"]
    return {
        "projects": [
            {
                "id": PROJECT_EU,
                "region": "eu",
                "access_keys": [{"key_id": "demo-key-eu", "key_secret": s.key_eu}],
                "rate_limit": 800,
                "apps": [
                    {
                        "id": APP_EU,
                        "processing_mode": "DISPATCH",
                        "channels": ["WHATSAPP", "MESSENGER", "SMS"],
                        "rate_limit": 20,
                        "webhooks": [
                            {
                                "target": f"{base}/sinch-eu",
                                "secret": s.webhook_eu,
                                "triggers": triggers,
                            }
                        ],
                    }
                ],
            },
            {
                "id": PROJECT_US,
                "region": "us",
                "access_keys": [{"key_id": "demo-key-us", "key_secret": s.key_us}],
                "rate_limit": 800,
                "apps": [
                    {
                        "id": APP_US,
                        "processing_mode": "DISPATCH",
                        "channels": ["SMS"],
                        "rate_limit": 20,
                        "webhooks": [
                            {
                                "target": f"{base}/sinch-us",
                                "secret": s.webhook_us,
                                "triggers": triggers,
                            }
                        ],
                    }
                ],
            },
        ]
    }


def convodesk_config(
    data_dir: Path, web_port: int, emulator_url: str, s: DemoSecrets
) -> dict[str, Any]:
    def service(
        name: str, region: str, project: str, key_id: str, app: str, key: str, hook: str
    ) -> dict[str, Any]:
        return {
            "name": name,
            "type": "sinchconversation",
            "service_connection": f"{emulator_url}/{region}/v1/projects/{project}/messages:send",
            "authentication": [
                {"auth_id": f"{key_id}@{app}", "password": key},
                {
                    "auth_id": "webhook",
                    "password": hook,
                    "triggers": ["MESSAGE_INBOUND", "MESSAGE_DELIVERY", "EVENT_INBOUND"],
                },
            ],
        }

    return {
        "database_url": f"sqlite:///{data_dir / 'convodesk.db'}",
        "data_dir": str(data_dir),
        "public_base_url": f"http://127.0.0.1:{web_port}",
        "allow_custom_endpoints": True,
        "oauth_token_url": f"{emulator_url}/oauth2/token",
        "messaging_services": [
            service("sinch-eu", "eu", PROJECT_EU, "demo-key-eu", APP_EU, s.key_eu, s.webhook_eu),
            service("sinch-us", "us", PROJECT_US, "demo-key-us", APP_US, s.key_us, s.webhook_us),
        ],
        "queues": [
            {
                "name": "whatsapp-support",
                "type": "chat",
                "priority": 1,
                "addresses": [f"{APP_EU}@whatsapp.sinchconversation.com"],
            },
            {
                "name": "messenger-support",
                "type": "chat",
                "addresses": [f"{APP_EU}@facebook.sinchconversation.com"],
            },
            {
                "name": "sms-support",
                "type": "chat",
                "addresses": [
                    f"{APP_EU}@sms.sinchconversation.com",
                    f"{APP_US}@sms.sinchconversation.com",
                ],
                "sms_sender_id": SMS_SENDER_US,
            },
        ],
        "chat_settings": {"offer_timeout_seconds": 60},
        "agents": [
            {
                "login": login,
                "display_name": name,
                "role": role,
                "password": password,
                "queues": ["whatsapp-support", "messenger-support", "sms-support"],
            }
            for login, name, role, password in LOGINS
        ],
    }


def run_demo(
    *, port: int, data_dir: Path, customers: bool = True, customer_interval: float = 30.0
) -> None:
    from convodesk import logs
    from convodesk.demo.media import media_app
    from convodesk.demo.simulator import CustomerSimulator, SimulatorSettings, running_in_thread
    from convodesk.domain import configurator
    from convodesk.emulator.config import EmulatorConfig
    from convodesk.emulator.server import running_emulator
    from convodesk.runtime import ConfigError, open_runtime
    from convodesk.server import run_server
    from convodesk.services import configuration
    from convodesk.storage import api_tokens
    from convodesk.storage.db import transaction
    from convodesk.web.serving import serve_in_thread

    logs.configure()
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    demo_secrets = DemoSecrets.generate()
    # Exits in reverse: the web app stops first (run_server returns), then the customers,
    # the media host, and the emulator last.
    with contextlib.ExitStack() as stack:
        emu = stack.enter_context(
            running_emulator(EmulatorConfig.from_dict(emulator_config(port, demo_secrets)))
        )
        raw = convodesk_config(data_dir, port, emu.base_url, demo_secrets)
        validation = configurator.validate(raw)
        if validation.config is None:  # a bug in this module, not a user error
            raise ConfigError(validation.errors)
        runtime = open_runtime(validation.config)
        configuration.apply_config(runtime, raw)
        with transaction(runtime.sessions) as session:
            token = api_tokens.create_token(session, role="admin", description="demo")
        if customers:
            media_url = stack.enter_context(serve_in_thread(media_app(), name="demo media host"))
            settings = SimulatorSettings(
                emulator_url=emu.base_url, media_base_url=media_url, interval=customer_interval
            )
            stack.enter_context(
                running_in_thread(
                    CustomerSimulator(settings), ready_url=f"http://127.0.0.1:{port}/readyz"
                )
            )
        print_banner(
            port=port,
            emulator_url=emu.base_url,
            data_dir=data_dir,
            token=token,
            customer_interval=customer_interval if customers else None,
        )
        run_server(runtime, host="127.0.0.1", port=port)


def print_banner(
    *,
    port: int,
    emulator_url: str,
    data_dir: Path,
    token: str,
    customer_interval: float | None = None,
) -> None:
    url = f"http://127.0.0.1:{port}"
    sample = {"app_id": APP_EU, "channel": "WHATSAPP", "identity": "46701234567", "text": "Hej!"}
    if customer_interval is None:
        customers = ["  customers      none (--no-customers)"]
    else:
        customers = [
            f"  customers      simulated: a new one about every {customer_interval:g} s on",
            "                 WhatsApp, Messenger and SMS; they answer your replies",
            "                 (--customer-interval SECONDS; --no-customers turns them off)",
        ]
    lines = [
        "",
        "convodesk demo",
        f"  web app        {url}",
        f"  API docs       {url}/api/docs",
        f"  admin token    {token}",
        f"  Sinch emulator {emulator_url}  (control plane: {emulator_url}/_emulator/)",
        f"  data           {data_dir}",
        *customers,
        "  logins:",
        *(f"    {login:<6} {password:<16} {role}" for login, _n, role, password in LOGINS),
        "",
        "  a customer of your own writes on WhatsApp:",
        f"    curl -s -X POST {emulator_url}/_emulator/inbound \\",
        "      -H 'content-type: application/json' \\",
        f"      -d '{json.dumps(sample)}'",
        "",
        "  Ctrl-C stops everything.",
        "",
    ]
    print("\n".join(lines), flush=True)  # noqa: T201 - the demo's banner is its output
