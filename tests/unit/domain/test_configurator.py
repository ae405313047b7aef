"""The System Configurator: each rule from both sides, with exact paths and messages."""

from __future__ import annotations

import copy
import dataclasses
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convodesk.domain import configurator
from convodesk.domain.config_model import (
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
    SystemConfig,
    WhatsAppTemplate,
)
from convodesk.domain.secrets import MASK, EnvStr, Secret

FIXTURES = Path(__file__).parents[2] / "fixtures" / "configs"
APP_EU = "01HZX4K7QW8E2R5T9Y3V6M1N0P"
APP_EU_SMS = "01HZX4K7QW8E2R5T9Y3V6M1N1Q"
APP_US = "01J5V9QW2K3M4N5P6R7S8T9V0W"
APP_OTHER = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
PROJECT_EU = "5b6c2a1e-8d4f-4c3b-9a7e-1f2d3c4b5a69"
PROJECT_US = "9d0e1f2a-3b4c-4d5e-8f60-718293a4b5c6"


def connection(region: str, project: str = PROJECT_EU) -> str:
    return f"https://{region}.conversation.api.sinch.com/v1/projects/{project}/messages:send"


def service(
    name: str = "sinch-eu",
    *,
    region: str = "eu",
    project: str = PROJECT_EU,
    apps: tuple[str, ...] = (APP_EU,),
    triggers: tuple[str, ...] = ("MESSAGE_INBOUND", "MESSAGE_DELIVERY"),
) -> dict[str, Any]:
    return {
        "name": name,
        "type": "sinchconversation",
        "service_connection": connection(region, project),
        "authentication": [
            *(
                {"auth_id": f"KEY-{i}@{app}", "password": f"key-secret-{i}"}
                for i, app in enumerate(apps)
            ),
            {"auth_id": "webhook", "password": "webhook-secret", "triggers": list(triggers)},
        ],
    }


def sample() -> dict[str, Any]:
    """A small valid configuration; tests change one thing in it."""
    return {
        "database_url": "sqlite:///data/convodesk.db",
        "public_base_url": "https://cc.example.com",
        "messaging_services": [
            service(apps=(APP_EU, APP_EU_SMS)),
            service("sinch-us", region="us", project=PROJECT_US, apps=(APP_US,)),
        ],
        "queues": [
            {
                "name": "support",
                "type": "chat",
                "addresses": [f"{APP_EU}@whatsapp.sinchconversation.com"],
            },
            {
                "name": "sms",
                "type": "chat",
                "addresses": [
                    f"{APP_EU_SMS}@sms.sinchconversation.com",
                    f"{APP_US}@sms.sinchconversation.com",
                ],
                "sms_sender_id": "+12025550143",
            },
        ],
        "chat_settings": {},
        "agents": [{"login": "anna", "display_name": "Anna", "queues": ["support"]}],
    }


def check(raw: Any) -> configurator.Validation:
    return configurator.validate(raw)


def errors(raw: Any) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for problem in check(raw).errors:
        found.setdefault(problem.path, []).append(problem.message)
    return found


def error_at(raw: Any, path: str) -> str:
    """The one error at `path` (and the config is rejected)."""
    validation = check(raw)
    assert validation.config is None
    messages = [p.message for p in validation.errors if p.path == path]
    assert len(messages) == 1, (path, [str(p) for p in validation.problems])
    return messages[0]


def warning_at(raw: Any, path: str) -> str:
    validation = check(raw)
    messages = [p.message for p in validation.warnings if p.path == path]
    assert len(messages) == 1, (path, [str(p) for p in validation.problems])
    return messages[0]


def valid(raw: Any) -> SystemConfig:
    validation = check(raw)
    assert validation.errors == (), [str(p) for p in validation.errors]
    assert validation.config is not None
    return validation.config


# =========================================================================== whole files


def test_the_sample_is_valid_without_warnings() -> None:
    validation = check(sample())
    assert validation.problems == ()
    assert validation.config is not None


def test_the_valid_fixture_reads_into_the_model() -> None:
    raw = yaml.safe_load((FIXTURES / "valid.yaml").read_text())
    validation = check(raw)
    assert validation.problems == ()
    config = validation.config
    assert config is not None
    assert [s.name for s in config.messaging_services] == ["sinch-eu", "sinch-us"]
    eu, us = config.messaging_services
    assert (eu.region, eu.project_id, us.region) == ("eu", PROJECT_EU, "us")
    assert eu.app_ids == (APP_EU, APP_EU_SMS)
    assert eu.inbound.triggers == ("MESSAGE_INBOUND", "MESSAGE_DELIVERY", "EVENT_INBOUND")
    assert eu.inbound.secret.reveal() == "example-eu-webhook-secret"
    whatsapp, messenger, sms = config.queues
    assert whatsapp.priority == 10
    assert whatsapp.offer_timeout_seconds == 60
    assert whatsapp.business_hours == BusinessHours(
        timezone="Europe/Stockholm",
        weekly={
            "mon": ((480, 720), (780, 1020)),
            "tue": ((480, 1020),),
            "wed": ((480, 1020),),
            "thu": ((480, 1020),),
            "fri": ((480, 960),),
        },
        closed_dates=("2026-12-24", "2026-12-25"),
    )
    assert messenger.addresses[0].channel == "MESSENGER"
    assert messenger.max_size == 50
    assert sms.sms_sender_id == "+12025550143"
    assert [a.channel for a in sms.addresses] == ["SMS", "SMS"]
    assert config.chat_settings.max_concurrent_chats == 4
    assert config.chat_settings.prompts.closed is None
    assert config.chat_settings.prompts.queue_position == "You are number {position} in the queue."
    assert [(a.login, a.role) for a in config.agents] == [
        ("admin", "admin"),
        ("anna", "agent"),
        ("ben.carter", "agent"),
    ]
    assert config.agents[0].password == Secret("example-admin-password")
    assert config.present_sections == frozenset(configurator.SECTIONS)


BROKEN_ERRORS = [
    "database_url",
    "public_base_url",
    "oauth_token_url",
    "allow_custom_endpoint",
    "messaging_services[0].service_connection",
    "messaging_services[0].authentication[0].auth_id",
    "messaging_services[0].authentication[1].password",
    "messaging_services[0].authentication[2].auth_id",
    "messaging_services[0].authentication[3].auth_id",
    "messaging_services[0].authentication[4].triggers[1]",
    "messaging_services[0].authentication[4].triggers",
    "messaging_services[1].type",
    "messaging_services[1].service_connection",
    "messaging_services[1].authentication[2]",
    "messaging_services[1].name",
    "messaging_services[1].authentication[0].auth_id",
    "messaging_services[2].authentication[0].triggers",
    "queues[0].type",
    "queues[0].addresses[0]",
    "queues[0].addresses[1]",
    "queues[0].priority",
    "queues[0].max_size",
    "queues[0].business_hours.timezone",
    "queues[0].business_hours.weekly.monday",
    "queues[0].business_hours.weekly.mon[0]",
    "queues[0].business_hours.closed_dates[0]",
    "queues[0].addresses[2]",
    "queues[1].name",
    "queues[1].sms_sender_id",
    "queues[2].sms_sender_id",
    "queues[2].addresses[0]",
    "queues[3].addresses",
    "chat_settings.attachment_max_bytes",
    "chat_settings.attachment_types[1]",
    "chat_settings.attachment_base_url",
    "chat_settings.whatsapp_opt_in_required",
    "chat_settings.prompts.goodbye",
    "chat_settings.prompts.welcome",
    "chat_settings.idle_warning_seconds",
    "agents[0].login",
    "agents[0].queues[1]",
    "agents[1].role",
    "agents[1].password",
    "agents[1].display_name",
    "agents[1].max_chats",
    "agents[1].login",
]


def test_the_broken_fixture_reports_every_error_at_once_in_file_order() -> None:
    validation = check(yaml.safe_load((FIXTURES / "broken.yaml").read_text()))
    assert validation.config is None
    assert [p.path for p in validation.errors] == BROKEN_ERRORS
    assert [p.path for p in validation.warnings] == [
        "messaging_services[1].authentication[1].triggers"
    ]
    for problem in validation.problems:
        assert problem.message[0].islower(), problem


def test_problems_print_as_path_colon_message() -> None:
    assert str(Problem(path="queues[0].name", message="bad")) == "queues[0].name: bad"
    assert str(Problem(path="x", message="hm", severity="warning")) == "x: warning: hm"


def test_cross_object_rules_still_run_on_the_valid_parts() -> None:
    raw = sample()
    raw["database_url"] = 5
    raw["messaging_services"][0]["service_connection"] = "nonsense"  # the service is invalid...
    raw["queues"][0]["priority"] = "high"  # ...and so is this queue
    raw["queues"].append(dict(raw["queues"][0], name="SUPPORT"))  # same name, same address
    raw["agents"].append({"login": "anna", "display_name": "Anna 2", "queues": ["nope"]})
    found = errors(raw)
    assert set(found) == {
        "database_url",
        "messaging_services[0].service_connection",
        "queues[0].priority",
        "queues[2].priority",
        "queues[2].name",
        "queues[2].addresses[0]",
        "agents[1].login",
        "agents[1].queues[0]",
    }
    # the invalid service's apps still count: no "not an outbound app" echo for its queues
    assert not any("not an outbound app" in m for ms in found.values() for m in ms)


def test_a_non_mapping_input_is_one_problem() -> None:
    validation = check(["not", "a", "mapping"])
    assert validation.config is None
    assert [str(p) for p in validation.problems] == [
        "<config>: expected a mapping of settings, got a list"
    ]


def test_present_sections_are_the_sections_given() -> None:
    assert valid({}).present_sections == frozenset()
    config = valid({"chat_settings": {}, "agents": []})
    assert config.present_sections == frozenset({"chat_settings", "agents"})
    assert valid(sample()).present_sections == frozenset(configurator.SECTIONS)


# =========================================================================== unknown keys and types


@pytest.mark.parametrize(
    ("where", "path", "accepted"),
    [
        ((), "colour", "database_url, data_dir, public_base_url"),
        (
            ("messaging_services", 0),
            "messaging_services[0].colour",
            "name, type, service_connection",
        ),
        (
            ("messaging_services", 0, "authentication", 0),
            "messaging_services[0].authentication[0].colour",
            "auth_id, password",
        ),
        (
            ("messaging_services", 0, "authentication", 2),
            "messaging_services[0].authentication[2].colour",
            "auth_id, password, triggers",
        ),
        (("queues", 0), "queues[0].colour", "name, type, addresses, sms_sender_id, priority"),
        (("chat_settings",), "chat_settings.colour", "attachment_max_bytes, attachment_types"),
        (("agents", 0), "agents[0].colour", "login, display_name, role, queues, max_chats"),
    ],
)
def test_an_unknown_key_anywhere_is_an_error_listing_the_accepted_keys(
    where: tuple[str | int, ...], path: str, accepted: str
) -> None:
    raw = sample()
    target: Any = raw
    for step in where:
        target = target[step]
    target["colour"] = "blue"
    message = error_at(raw, path)
    assert message.startswith("unknown key: expected one of ")
    assert accepted in message


def test_unknown_keys_in_nested_objects() -> None:
    raw = sample()
    raw["queues"][0]["business_hours"] = {
        "timezone": "UTC",
        "weekly": {"mon": ["08:00-17:00"], "funday": []},
        "holidays": [],
    }
    raw["chat_settings"] = {"prompts": {"hello": "hi"}}
    assert "expected one of timezone, weekly, closed_dates" in error_at(
        raw, "queues[0].business_hours.holidays"
    )
    assert "expected one of mon, tue, wed, thu, fri, sat, sun" in error_at(
        raw, "queues[0].business_hours.weekly.funday"
    )
    assert "expected one of welcome, queue_position" in error_at(raw, "chat_settings.prompts.hello")


def test_a_typo_gets_a_suggestion_and_misplaced_keys_get_a_hint() -> None:
    raw = sample()
    raw["allow_custom_endpoint"] = True
    raw["messaging_services"][0]["authentication"][0]["triggers"] = ["MESSAGE_INBOUND"]
    raw["agents"][0]["queue"] = ["support"]
    assert error_at(raw, "allow_custom_endpoint").startswith(
        "unknown key (did you mean allow_custom_endpoints?): expected one of"
    )
    assert "(triggers belong to the webhook entry, auth_id: webhook)" in error_at(
        raw, "messaging_services[0].authentication[0].triggers"
    )
    assert "(did you mean queues?)" in error_at(raw, "agents[0].queue")


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("messaging_services", {}, "expected a list of messaging services, got a mapping"),
        ("queues", None, "expected a list of queues, got null (write [] for none)"),
        ("agents", "anna", "expected a list of agents, got a string"),
        ("chat_settings", None, "expected a mapping (write {} for the defaults), got null"),
        ("chat_settings", [], "expected a mapping, got a list"),
    ],
)
def test_a_section_of_the_wrong_type(section: str, value: object, message: str) -> None:
    raw = sample()
    raw[section] = value
    assert error_at(raw, section) == message


def test_entries_of_the_wrong_type() -> None:
    raw = sample()
    raw["messaging_services"].append("sinch-br")
    raw["queues"].append(["q"])
    raw["agents"].append(None)
    assert error_at(raw, "messaging_services[2]").startswith("expected a messaging service")
    assert error_at(raw, "queues[2]").endswith("got a list")
    assert error_at(raw, "agents[1]").endswith("got null")


# =========================================================================== top level


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///data/convodesk.db",
        "sqlite:////var/lib/convodesk/cc.db",
        "postgresql://cc:pw@db.internal:5432/convodesk",
        "postgresql+psycopg://cc@db/convodesk",
    ],
)
def test_database_url_accepts_sqlite_and_postgresql(url: str) -> None:
    assert valid({"database_url": url}).database_url == url


@pytest.mark.parametrize(
    ("url", "got"),
    [
        ("mysql://cc:hunter22@db/cc", "a URL with scheme 'mysql'"),
        ("sqlite://relative.db", "a URL with scheme 'sqlite'"),
        ("data/convodesk.db", "a value without a scheme"),
    ],
)
def test_database_url_rejects_other_forms_without_echoing_a_password(url: str, got: str) -> None:
    message = error_at({"database_url": url}, "database_url")
    assert message == (
        f"expected sqlite:///PATH, postgresql://... or postgresql+psycopg://..., got {got}"
    )
    assert "hunter22" not in message


def test_top_level_defaults() -> None:
    config = valid({})
    assert config == SystemConfig()
    assert config.oauth_token_url == "https://auth.sinch.com/oauth2/token"


def test_data_dir_must_be_a_non_empty_string() -> None:
    assert valid({"data_dir": "/var/lib/convodesk"}).data_dir == "/var/lib/convodesk"
    assert error_at({"data_dir": " "}, "data_dir") == (
        "must not be empty; expected a directory path"
    )
    assert error_at({"data_dir": 3}, "data_dir") == "expected a directory path, got 3"


def test_public_base_url_https_is_clean_and_http_is_a_warning() -> None:
    assert check({"public_base_url": "https://cc.example.com/desk"}).problems == ()
    validation = check({"public_base_url": "http://cc.example.com"})
    assert validation.config is not None
    assert warning_at({"public_base_url": "http://cc.example.com"}, "public_base_url") == (
        "not https: WhatsApp rich content (media) needs a public https:// URL"
    )


@pytest.mark.parametrize(
    "url",
    [
        "ftp://cc.example.com",
        "https://cc.example.com/?a=1",
        "https://x/#top",
        "cc.example.com",
        "https://[::1",
    ],
)
def test_public_base_url_must_be_http_without_query(url: str) -> None:
    assert error_at({"public_base_url": url}, "public_base_url").startswith(
        "expected an http:// or https:// URL without query or fragment, got "
    )


def test_allow_custom_endpoints_is_a_boolean() -> None:
    assert error_at({"allow_custom_endpoints": "yes"}, "allow_custom_endpoints") == (
        "expected true or false, got 'yes'"
    )


def test_a_custom_oauth_token_url_needs_allow_custom_endpoints() -> None:
    url = "http://127.0.0.1:9000/oauth2/token"
    assert error_at({"oauth_token_url": url}, "oauth_token_url") == (
        f"expected https://auth.sinch.com/oauth2/token, got {url} "
        "(another token URL needs allow_custom_endpoints: true)"
    )
    assert valid({"oauth_token_url": url, "allow_custom_endpoints": True}).oauth_token_url == url
    assert valid({"oauth_token_url": "https://auth.sinch.com/oauth2/token"}) == SystemConfig()
    assert error_at(
        {"oauth_token_url": "tcp://x", "allow_custom_endpoints": True}, "oauth_token_url"
    ).startswith("expected an http:// or https:// URL")


# =========================================================================== messaging services


def first_service(raw: dict[str, Any]) -> dict[str, Any]:
    svc: dict[str, Any] = raw["messaging_services"][0]
    return svc


def test_service_type_is_sinchconversation_and_defaults_to_it() -> None:
    raw = sample()
    first_service(raw)["type"] = "sms"
    assert error_at(raw, "messaging_services[0].type") == "expected sinchconversation, got 'sms'"
    del first_service(raw)["type"]
    assert valid(raw).messaging_services[0].type == "sinchconversation"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must not be empty; expected a service name such as sinch-eu"),
        (None, "expected a service name such as sinch-eu, got null"),
        (
            "sinch eu",
            "expected 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit "
            "(it is part of the callback URL /sms/sinchconversation/NAME), got 'sinch eu'",
        ),
        (
            "all",
            "the name all is reserved: /sms/sinchconversation/all is the callback URL for "
            "every service",
        ),
    ],
)
def test_service_name_rules(name: object, message: str) -> None:
    raw = sample()
    first_service(raw)["name"] = name
    assert error_at(raw, "messaging_services[0].name") == message


def test_service_name_is_required_and_unique() -> None:
    raw = sample()
    del first_service(raw)["name"]
    assert error_at(raw, "messaging_services[0].name").startswith(
        "missing; expected a service name"
    )
    raw = sample()
    raw["messaging_services"][1]["name"] = "Sinch-EU"
    assert error_at(raw, "messaging_services[1].name") == (
        "name already used by messaging_services[0] (sinch-eu): names must be unique "
        "(ignoring case)"
    )


@pytest.mark.parametrize("region", REGIONS)
def test_service_connection_gives_region_and_project(region: str) -> None:
    raw = {"messaging_services": [service(region=region)]}
    svc = valid(raw).messaging_services[0]
    assert (svc.region, svc.project_id) == (region, PROJECT_EU)
    assert svc.service_connection == connection(region)


def test_project_ids_are_checked_loosely() -> None:
    upper = PROJECT_EU.upper()
    assert (
        valid({"messaging_services": [service(project=upper)]}).messaging_services[0].project_id
        == upper
    )
    raw = {"messaging_services": [service(project="my-project")]}
    assert error_at(raw, "messaging_services[0].service_connection") == (
        "expected a project id of 8-4-4-4-12 hexadecimal digits (Conversation API > Apps) in "
        "https://{eu|us|br}.conversation.api.sinch.com/v1/projects/{project}/messages:send, "
        "got 'my-project'"
    )


def test_other_hosts_need_allow_custom_endpoints() -> None:
    raw = sample()
    first_service(raw)["service_connection"] = "https://example.com/x"
    assert error_at(raw, "messaging_services[0].service_connection") == (
        "expected https://{eu|us|br}.conversation.api.sinch.com/v1/projects/{project}/"
        "messages:send, got https://example.com/x (other hosts need allow_custom_endpoints: true)"
    )


@pytest.mark.parametrize(
    "url",
    [
        f"https://ap.conversation.api.sinch.com/v1/projects/{PROJECT_EU}/messages:send",
        f"http://eu.conversation.api.sinch.com/v1/projects/{PROJECT_EU}/messages:send",
        f"https://eu.conversation.api.sinch.com/v1/projects/{PROJECT_EU}/messages",
        f"https://eu.conversation.api.sinch.com/v1/projects/{PROJECT_EU}/messages:send?x=1",
    ],
)
def test_service_connection_near_misses(url: str) -> None:
    raw = sample()
    first_service(raw)["service_connection"] = url
    message = error_at(raw, "messaging_services[0].service_connection")
    assert "{eu|us|br}" in message


def test_an_unknown_sinch_region_is_named() -> None:
    raw = sample()
    first_service(raw)["service_connection"] = connection("ap")
    assert error_at(raw, "messaging_services[0].service_connection").startswith(
        "unknown region 'ap' in the host: Sinch runs eu, us or br"
    )


def custom(url: str, **extra: Any) -> dict[str, Any]:
    svc = service()
    svc["service_connection"] = url
    svc.update(extra)
    return {"allow_custom_endpoints": True, "messaging_services": [svc]}


@pytest.mark.parametrize(
    ("url", "region", "project"),
    [
        ("http://127.0.0.1:9000/eu/v1/projects/P/messages:send", "eu", "P"),
        ("http://emulator:9000/base/br/v1/projects/proj-1/messages:send", "br", "proj-1"),
        ("https://us.sinch.test/v1/projects/P/messages:send", "us", "P"),
        (connection("br"), "br", PROJECT_EU),
    ],
)
def test_custom_endpoints_take_the_region_from_path_or_host(
    url: str, region: str, project: str
) -> None:
    svc = valid(custom(url)).messaging_services[0]
    assert (svc.region, svc.project_id, svc.service_connection) == (region, project, url)


def test_custom_endpoints_without_a_region_need_the_region_field() -> None:
    url = "http://localhost:9000/v1/projects/P/messages:send"
    assert error_at(custom(url), "messaging_services[0].region").startswith(
        f"missing; expected eu, us or br (the service connection {url} names no region"
    )
    assert valid(custom(url, region="us")).messaging_services[0].region == "us"
    assert error_at(custom(url, region="mars"), "messaging_services[0].region") == (
        "expected eu, us or br, got 'mars'"
    )


def test_an_explicit_region_must_agree_with_the_connection() -> None:
    assert valid(custom(connection("eu"), region="eu")).messaging_services[0].region == "eu"
    raw = custom("http://127.0.0.1:9000/eu/v1/projects/P/messages:send", region="us")
    assert error_at(raw, "messaging_services[0].region") == (
        "disagrees with the service connection, which names eu: remove region or write region: eu"
    )
    raw = {"messaging_services": [dict(service(), region="us")]}
    assert "disagrees" in error_at(raw, "messaging_services[0].region")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/eu/v1/projects/P/messages:send",
        "http://127.0.0.1:9000/eu/v1/projects/P/messages",
        "http://127.0.0.1:9000/eu/v1/projects//messages:send",
        "http:///eu/v1/projects/P/messages:send",
    ],
)
def test_custom_endpoints_still_need_the_messages_send_path(url: str) -> None:
    assert error_at(custom(url), "messaging_services[0].service_connection") == (
        f"expected http(s)://HOST[/{{eu|us|br}}]/v1/projects/{{project}}/messages:send, got {url}"
    )


# --------------------------------------------------------------------------- outbound entries


def auth_entry(raw: dict[str, Any], index: int = 0) -> dict[str, Any]:
    entry: dict[str, Any] = first_service(raw)["authentication"][index]
    return entry


def test_outbound_entries_become_credentials() -> None:
    svc = valid(sample()).messaging_services[0]
    assert svc.outbound == (
        OutboundCredential(key_id="KEY-0", app_id=APP_EU, secret=Secret("key-secret-0")),
        OutboundCredential(key_id="KEY-1", app_id=APP_EU_SMS, secret=Secret("key-secret-1")),
    )
    assert svc.outbound[0].auth_id == f"KEY-0@{APP_EU}"


def test_a_lower_case_app_id_is_an_error_showing_the_upper_case_one() -> None:
    raw = sample()
    auth_entry(raw)["auth_id"] = f"KEY-0@{APP_EU.lower()}"
    assert error_at(raw, "messaging_services[0].authentication[0].auth_id") == (
        f"app id must be upper case: use {APP_EU}"
    )
    # ...and the queue on that app is not reported a second time
    assert set(errors(raw)) == {"messaging_services[0].authentication[0].auth_id"}


def test_a_mixed_case_app_id_is_an_error_too() -> None:
    raw = sample()
    auth_entry(raw)["auth_id"] = f"KEY-0@{APP_EU[:10]}{APP_EU[10:].lower()}"
    assert error_at(raw, "messaging_services[0].authentication[0].auth_id") == (
        f"app id must be upper case: use {APP_EU}"
    )


@pytest.mark.parametrize(
    ("auth_id", "message"),
    [
        (
            "KEY-0",
            "expected KEYID@APPID (key id from Settings > Access keys, app id from "
            "Conversation API > Apps), got 'KEY-0'",
        ),
        (f"@{APP_EU}", None),
        ("KEY@", None),
        (f"KEY@X@{APP_EU}", None),
        (f"KEY 0@{APP_EU}", None),
        (17, None),
        (
            "KEY@01HZX4K7QW8E2R5T9Y3V6M1N0U",
            "expected an app id of 26 characters of upper-case Crockford base32 "
            "(0-9 and A-Z without I, L, O, U), got '01HZX4K7QW8E2R5T9Y3V6M1N0U'",
        ),
        ("KEY@01HZX4K7QW8E2R5T9Y3V6M1N0", None),
        ("Webhook", "expected webhook (lower case) for the inbound entry"),
    ],
)
def test_auth_id_must_be_keyid_at_appid(auth_id: object, message: str | None) -> None:
    raw = sample()
    auth_entry(raw)["auth_id"] = auth_id
    found = error_at(raw, "messaging_services[0].authentication[0].auth_id")
    assert found == message if message else found.startswith("expected ")


def test_auth_id_is_required() -> None:
    raw = sample()
    del auth_entry(raw)["auth_id"]
    assert error_at(raw, "messaging_services[0].authentication[0].auth_id").startswith(
        "missing; expected KEYID@APPID"
    )


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("", "must not be empty; expected the access key secret (Settings > Access keys)"),
        (None, "missing; expected the access key secret (Settings > Access keys)"),
        (
            12345678,
            "expected the access key secret (Settings > Access keys) as a string, "
            "got a number (quote it)",
        ),
    ],
)
def test_outbound_password_is_required(password: object, message: str) -> None:
    raw = sample()
    auth_entry(raw)["password"] = password
    assert error_at(raw, "messaging_services[0].authentication[0].password") == message


def test_one_outbound_entry_per_app() -> None:
    raw = sample()
    first_service(raw)["authentication"].insert(1, {"auth_id": f"KEY-9@{APP_EU}", "password": "p"})
    assert error_at(raw, "messaging_services[0].authentication[1].auth_id") == (
        f"app {APP_EU} has an entry already (authentication[0].auth_id): one outbound entry per app"
    )


def test_an_app_belongs_to_one_messaging_service() -> None:
    raw = sample()
    raw["messaging_services"][1] = service("sinch-us", region="us", apps=(APP_US, APP_EU_SMS))
    assert error_at(raw, "messaging_services[1].authentication[1].auth_id") == (
        f"app {APP_EU_SMS} belongs to messaging service sinch-eu already "
        "(messaging_services[0].authentication[1].auth_id): an app belongs to one messaging service"
    )


def test_a_service_needs_an_outbound_entry() -> None:
    raw = sample()
    first_service(raw)["authentication"] = [auth_entry(raw, 2)]
    assert error_at(raw, "messaging_services[0].authentication") == (
        "expected at least one outbound entry {auth_id: KEYID@APPID, password: SECRET}"
    )


def test_authentication_must_be_a_list() -> None:
    raw = sample()
    del first_service(raw)["authentication"]
    assert error_at(raw, "messaging_services[0].authentication").startswith(
        "missing; expected a list with one KEYID@APPID entry per app and one webhook entry"
    )
    first_service(raw)["authentication"] = "webhook"
    assert error_at(raw, "messaging_services[0].authentication").endswith("got a string")


# --------------------------------------------------------------------------- the webhook entry


def test_the_webhook_entry_becomes_the_inbound_webhook() -> None:
    inbound = valid(sample()).messaging_services[0].inbound
    assert inbound == InboundWebhook(
        secret=Secret("webhook-secret"), triggers=("MESSAGE_INBOUND", "MESSAGE_DELIVERY")
    )


def test_exactly_one_webhook_entry_per_service() -> None:
    raw = sample()
    first_service(raw)["authentication"].pop()
    assert error_at(raw, "messaging_services[0].authentication") == (
        "expected one webhook entry {auth_id: webhook, password: SECRET, "
        "triggers: [MESSAGE_INBOUND, ...]}, found none"
    )
    raw = sample()
    auth = first_service(raw)["authentication"]
    auth.append(dict(auth[-1]))
    assert error_at(raw, "messaging_services[0].authentication[3]") == (
        "a messaging service has one webhook entry (one webhook secret per service, valid for "
        "all its apps); the first is authentication[2]"
    )


def test_the_webhook_password_is_required() -> None:
    raw = sample()
    auth_entry(raw, 2)["password"] = ""
    assert error_at(raw, "messaging_services[0].authentication[2].password") == (
        "must not be empty; expected the webhook secret token "
        "(Conversation API > Apps > app > Webhook)"
    )


def test_an_entry_with_triggers_but_no_auth_id_is_a_webhook_missing_its_auth_id() -> None:
    raw = sample()
    del auth_entry(raw, 2)["auth_id"]
    assert error_at(raw, "messaging_services[0].authentication[2].auth_id") == (
        "missing; expected webhook"
    )


def test_an_unknown_trigger_lists_the_valid_ones() -> None:
    raw = sample()
    auth_entry(raw, 2)["triggers"] = ["MESSAGE_INBOUND", "MESSAGE_DELIVERY", "message_submit"]
    message = error_at(raw, "messaging_services[0].authentication[2].triggers[2]")
    assert message.startswith("unknown trigger 'message_submit' (did you mean MESSAGE_SUBMIT?): ")
    assert message.endswith("expected one of " + ", ".join(TRIGGERS))


def test_message_inbound_is_required() -> None:
    raw = sample()
    auth_entry(raw, 2)["triggers"] = ["MESSAGE_DELIVERY"]
    assert error_at(raw, "messaging_services[0].authentication[2].triggers") == (
        "missing MESSAGE_INBOUND: without it no customer message would arrive"
    )


def test_message_delivery_missing_is_only_a_warning() -> None:
    raw = sample()
    auth_entry(raw, 2)["triggers"] = ["MESSAGE_INBOUND", "EVENT_INBOUND"]
    assert valid(raw).messaging_services[0].inbound.triggers == ("MESSAGE_INBOUND", "EVENT_INBOUND")
    assert warning_at(raw, "messaging_services[0].authentication[2].triggers") == (
        "missing MESSAGE_DELIVERY: no delivery receipts, no delivery events in the log"
    )


def test_a_repeated_trigger_is_a_warning_and_dropped() -> None:
    raw = sample()
    auth_entry(raw, 2)["triggers"] = ["MESSAGE_INBOUND", "MESSAGE_DELIVERY", "MESSAGE_INBOUND"]
    assert valid(raw).messaging_services[0].inbound.triggers == (
        "MESSAGE_INBOUND",
        "MESSAGE_DELIVERY",
    )
    assert warning_at(raw, "messaging_services[0].authentication[2].triggers[2]") == (
        "listed twice (MESSAGE_INBOUND); the repeat is ignored"
    )


def test_triggers_must_be_a_list() -> None:
    raw = sample()
    del auth_entry(raw, 2)["triggers"]
    assert error_at(raw, "messaging_services[0].authentication[2].triggers") == (
        "missing; expected a list of triggers such as [MESSAGE_INBOUND, MESSAGE_DELIVERY]"
    )
    auth_entry(raw, 2)["triggers"] = "MESSAGE_INBOUND"
    assert error_at(raw, "messaging_services[0].authentication[2].triggers").endswith(
        "got a string"
    )


# --------------------------------------------------------------------------- secrets


def test_secrets_from_env_references_remember_their_variable() -> None:
    raw = sample()
    auth_entry(raw)["password"] = EnvStr("from-env", "SINCH_EU_KEY_SECRET")
    auth_entry(raw, 2)["password"] = EnvStr("hook", "SINCH_EU_WEBHOOK_SECRET")
    raw["agents"][0]["password"] = EnvStr("anna-password", "ANNA_PASSWORD")
    config = valid(raw)
    svc = config.messaging_services[0]
    assert svc.outbound[0].secret == Secret("from-env", env_var="SINCH_EU_KEY_SECRET")
    assert type(svc.outbound[0].secret.reveal()) is str
    assert svc.inbound.secret.env_var == "SINCH_EU_WEBHOOK_SECRET"
    assert config.agents[0].password == Secret("anna-password", env_var="ANNA_PASSWORD")


def test_the_mask_is_accepted_as_a_secret() -> None:
    raw = sample()
    auth_entry(raw)["password"] = MASK
    auth_entry(raw, 2)["password"] = MASK
    raw["agents"][0]["password"] = MASK
    config = valid(raw)
    assert config.messaging_services[0].outbound[0].secret.is_mask
    assert config.messaging_services[0].inbound.secret.is_mask
    assert config.agents[0].password is not None
    assert config.agents[0].password.is_mask


def test_no_message_contains_a_secret_value() -> None:
    raw = sample()
    raw["database_url"] = "mysql://cc:s3kr1t-db@db/cc"
    auth_entry(raw)["password"] = ["s3kr1t-1"]
    auth_entry(raw, 1)["password"] = " "
    auth_entry(raw, 2)["password"] = {"s3kr1t-2": "s3kr1t-3"}
    raw["agents"][0]["password"] = "s3kr1t4"  # too short
    raw["agents"].append({"login": "ben", "display_name": "Ben", "password": 4242424242})
    validation = check(raw)
    assert len(validation.errors) == 6, [str(p) for p in validation.problems]
    text = "\n".join(str(p) for p in validation.problems)
    for secret in ("s3kr1t", "4242424242"):
        assert secret not in text


# =========================================================================== queues


def first_queue(raw: dict[str, Any]) -> dict[str, Any]:
    queue: dict[str, Any] = raw["queues"][0]
    return queue


def test_queues_read_into_the_model_with_defaults() -> None:
    queue = valid(sample()).queues[0]
    assert queue == Queue(
        name="support",
        type="chat",
        addresses=(QueueAddress(app_id=APP_EU, subchannel="whatsapp"),),
    )
    assert (queue.priority, queue.max_size, queue.offer_timeout_seconds) == (0, None, None)
    assert queue.business_hours is None
    assert queue.sms_sender_id is None


def test_queue_type_is_chat() -> None:
    raw = sample()
    first_queue(raw)["type"] = "voice"
    assert error_at(raw, "queues[0].type") == "expected chat, got 'voice'"


def test_queue_names_are_non_empty_trimmed_and_unique() -> None:
    raw = sample()
    first_queue(raw)["name"] = ""
    assert error_at(raw, "queues[0].name") == (
        "must not be empty; expected a queue name such as support"
    )
    first_queue(raw)["name"] = "support "
    assert error_at(raw, "queues[0].name") == "must not start or end with spaces, got 'support '"
    raw = sample()
    raw["queues"][1]["name"] = "Support"
    assert error_at(raw, "queues[1].name") == (
        "name already used by queues[0] (support): names must be unique (ignoring case)"
    )


@pytest.mark.parametrize(("subchannel", "channel"), SUBCHANNEL_TO_CHANNEL.items())
def test_every_subchannel_is_an_address(subchannel: str, channel: str) -> None:
    raw = sample()
    first_queue(raw)["addresses"] = [f"{APP_EU}@{subchannel}.sinchconversation.com"]
    address = valid(raw).queues[0].addresses[0]
    assert (address.app_id, address.subchannel, address.channel) == (APP_EU, subchannel, channel)


def test_a_lower_case_app_id_in_an_address_shows_the_corrected_address() -> None:
    raw = sample()
    first_queue(raw)["addresses"] = [f"{APP_EU.lower()}@whatsapp.sinchconversation.com"]
    assert error_at(raw, "queues[0].addresses[0]") == (
        f"app id must be upper case: use {APP_EU}@whatsapp.sinchconversation.com"
    )


def test_an_upper_case_domain_shows_the_corrected_address() -> None:
    raw = sample()
    first_queue(raw)["addresses"] = [f"{APP_EU}@WhatsApp.SinchConversation.com"]
    assert error_at(raw, "queues[0].addresses[0]") == (
        f"write the domain in lower case: use {APP_EU}@whatsapp.sinchconversation.com"
    )


@pytest.mark.parametrize(
    ("address", "start"),
    [
        (
            f"{APP_EU}@fax.sinchconversation.com",
            "unknown subchannel 'fax': expected one of whatsapp",
        ),
        (f"{APP_EU}@whatsapp.example.com", "expected APPID@SUBCHANNEL.sinchconversation.com"),
        (f"{APP_EU}", "expected APPID@SUBCHANNEL.sinchconversation.com"),
        (42, "expected APPID@SUBCHANNEL.sinchconversation.com"),
        (
            "01E4556565565ERKYO@whatsapp.sinchconversation.com",
            "expected an app id of 26 characters",
        ),
    ],
)
def test_malformed_addresses(address: object, start: str) -> None:
    raw = sample()
    first_queue(raw)["addresses"] = [address]
    assert error_at(raw, "queues[0].addresses[0]").startswith(start)


def test_a_queue_needs_an_address() -> None:
    raw = sample()
    first_queue(raw)["addresses"] = []
    assert error_at(raw, "queues[0].addresses").startswith("expected at least one address APPID@")
    del first_queue(raw)["addresses"]
    assert error_at(raw, "queues[0].addresses").startswith(
        "missing; expected a list of queue addresses"
    )


def test_an_address_belongs_to_one_queue() -> None:
    raw = sample()
    raw["queues"].append(
        {"name": "other", "addresses": [f"{APP_EU}@whatsapp.sinchconversation.com"]}
    )
    assert error_at(raw, "queues[2].addresses[0]") == (
        "already an address of queue support (queues[0].addresses[0]): "
        "an address belongs to one queue"
    )
    raw = sample()
    first_queue(raw)["addresses"] *= 2
    assert error_at(raw, "queues[0].addresses[1]") == (
        f"listed twice in this queue ({APP_EU}@whatsapp.sinchconversation.com)"
    )


def test_an_address_app_must_be_an_outbound_app_of_some_service() -> None:
    raw = sample()
    first_queue(raw)["addresses"].append(f"{APP_OTHER}@whatsapp.sinchconversation.com")
    assert error_at(raw, "queues[0].addresses[1]") == (
        f"app {APP_OTHER} is not an outbound app of any messaging service: add KEYID@APPID to "
        "a service's authentication (replies could not be sent)"
    )


def test_without_a_services_section_the_app_rule_is_skipped() -> None:
    raw = sample()
    del raw["messaging_services"]
    first_queue(raw)["addresses"].append(f"{APP_OTHER}@whatsapp.sinchconversation.com")
    assert [q.name for q in valid(raw).queues] == ["support", "sms"]
    raw["messaging_services"] = []
    assert set(errors(raw)) == {
        f"queues[{q}].addresses[{a}]" for q, a in ((0, 0), (0, 1), (1, 0), (1, 1))
    }


# --------------------------------------------------------------------------- SMS sender id


SENDER_FORM = (
    'an E.164 number ("+" and 8-15 digits, e.g. "+12025550143"), a short code (3-8 digits) or '
    "an alphanumeric sender (1-11 letters, digits or spaces, at least one letter)"
)


def test_a_us_sms_address_needs_a_sender_id() -> None:
    raw = sample()
    del raw["queues"][1]["sms_sender_id"]
    assert error_at(raw, "queues[1].sms_sender_id") == (
        f"missing; addresses[1] ({APP_US}@sms.sinchconversation.com) is an sms address on the "
        f"us messaging service sinch-us, which needs an SMS sender: expected {SENDER_FORM}"
    )


def test_an_eu_sms_address_needs_no_sender_id() -> None:
    raw = sample()
    queue = raw["queues"][1]
    del queue["sms_sender_id"]
    queue["addresses"] = queue["addresses"][:1]
    assert valid(raw).queues[1].sms_sender_id is None


def test_a_us_whatsapp_address_needs_no_sender_id() -> None:
    raw = sample()
    raw["queues"][1] = {"name": "us", "addresses": [f"{APP_US}@whatsapp.sinchconversation.com"]}
    assert valid(raw).queues[1].sms_sender_id is None


@pytest.mark.parametrize(
    "sender",
    [
        "+12025550143",
        "+46701234",
        "+123456789012345",
        "12345",
        "123",
        "12345678",
        "Convodesk",
        "ACME Help",
        "A1",
    ],
)
def test_valid_sender_ids(sender: str) -> None:
    raw = sample()
    raw["queues"][1]["sms_sender_id"] = sender
    assert valid(raw).queues[1].sms_sender_id == sender


@pytest.mark.parametrize(
    "sender",
    [
        "+1 202 555 0143",
        "+1234567",
        "+1234567890123456",
        "12",
        "123456789",
        "TooLongSender",
        "Acme-Help",
        "",
        "12 34",
    ],
)
def test_invalid_sender_ids(sender: str) -> None:
    raw = sample()
    raw["queues"][1]["sms_sender_id"] = sender
    assert error_at(raw, "queues[1].sms_sender_id") == f"expected {SENDER_FORM}, got {sender!r}"


def test_a_sender_id_read_as_a_number_by_yaml_says_to_quote_it() -> None:
    raw = sample()
    raw["queues"][1]["sms_sender_id"] = 12025550143
    assert error_at(raw, "queues[1].sms_sender_id") == (
        f"expected {SENDER_FORM} as a string, got 12025550143 "
        '(quote it: YAML reads +12025550143 as a number and drops the "+")'
    )


def test_a_sender_id_without_sms_addresses_is_a_warning() -> None:
    raw = sample()
    first_queue(raw)["sms_sender_id"] = "Convodesk"
    assert valid(raw).queues[0].sms_sender_id == "Convodesk"
    assert warning_at(raw, "queues[0].sms_sender_id") == "not used: the queue has no sms address"


# --------------------------------------------------------------------------- queue extras


def test_queue_priority_size_and_offer_timeout() -> None:
    raw = sample()
    first_queue(raw).update(priority=-5, max_size=20, offer_timeout_seconds=45)
    queue = valid(raw).queues[0]
    assert (queue.priority, queue.max_size, queue.offer_timeout_seconds) == (-5, 20, 45)
    first_queue(raw).update(max_size=None, offer_timeout_seconds=None)
    assert valid(raw).queues[0].max_size is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("priority", "high", "expected an integer, got 'high'"),
        ("priority", True, "expected an integer, got true"),
        ("priority", 1.5, "expected an integer, got 1.5"),
        ("max_size", 0, "expected a positive integer, got 0"),
        ("max_size", "10", "expected a positive integer, got '10'"),
        ("offer_timeout_seconds", -30, "expected a positive integer, got -30"),
    ],
)
def test_queue_integers(field: str, value: object, message: str) -> None:
    raw = sample()
    first_queue(raw)[field] = value
    assert error_at(raw, f"queues[0].{field}") == message


def hours(**overrides: Any) -> dict[str, Any]:
    raw = sample()
    first_queue(raw)["business_hours"] = {
        "timezone": "Europe/Stockholm",
        "weekly": {"mon": ["08:00-12:00", "13:00-17:00"], "sat": []},
        **overrides,
    }
    return raw


def test_business_hours_read_into_minutes() -> None:
    raw = hours(closed_dates=["2026-12-24", date(2026, 12, 31)])
    raw["queues"][0]["business_hours"]["weekly"]["sun"] = ["13:00-24:00", "00:00-01:30"]
    assert valid(raw).queues[0].business_hours == BusinessHours(
        timezone="Europe/Stockholm",
        weekly={"mon": ((480, 720), (780, 1020)), "sun": ((0, 90), (780, 1440))},
        closed_dates=("2026-12-24", "2026-12-31"),
    )


def test_business_hours_time_zone_is_checked() -> None:
    assert error_at(hours(timezone="Mars/Olympus"), "queues[0].business_hours.timezone") == (
        "unknown time zone 'Mars/Olympus'; expected an IANA time zone such as Europe/Stockholm"
    )
    assert error_at(hours(timezone="europe/stockholm"), "queues[0].business_hours.timezone") == (
        "unknown time zone 'europe/stockholm'; expected an IANA time zone: use Europe/Stockholm"
    )
    assert error_at(hours(timezone="../etc/passwd"), "queues[0].business_hours.timezone")
    assert error_at(hours(timezone=""), "queues[0].business_hours.timezone").startswith(
        "must not be empty"
    )


@pytest.mark.parametrize(
    ("span", "message"),
    [
        (
            "17:00-08:00",
            "the start must be before the end, got 17:00-08:00 "
            "(a range cannot cross midnight: split it over two days)",
        ),
        (
            "08:00-08:00",
            "the start must be before the end, got 08:00-08:00 "
            "(a range cannot cross midnight: split it over two days)",
        ),
        ("8:00-17:00", None),
        ("08:00-24:30", None),
        ("24:00-24:00", None),
        ("08:60-17:00", None),
        (800, None),
    ],
)
def test_business_hours_ranges(span: object, message: str | None) -> None:
    raw = hours(weekly={"tue": [span]})
    found = error_at(raw, "queues[0].business_hours.weekly.tue[0]")
    assert found == message if message else found.startswith("expected HH:MM-HH:MM")


def test_business_hours_ranges_must_not_overlap() -> None:
    raw = hours(weekly={"wed": ["12:00-18:00", "08:00-12:30"]})
    assert error_at(raw, "queues[0].business_hours.weekly.wed[0]") == "overlaps 08:00-12:30"


def test_business_hours_shape() -> None:
    raw = hours()
    del first_queue(raw)["business_hours"]["weekly"]
    assert error_at(raw, "queues[0].business_hours.weekly").startswith(
        "missing; expected a mapping"
    )
    assert error_at(hours(weekly={"mon": "08:00-17:00"}), "queues[0].business_hours.weekly.mon")
    assert error_at(hours(weekly=["mon"]), "queues[0].business_hours.weekly")
    raw = sample()
    first_queue(raw)["business_hours"] = "9-5"
    assert error_at(raw, "queues[0].business_hours").startswith("expected a mapping")


@pytest.mark.parametrize(
    "day", ["2026-02-30", "24/12/2026", "20261224", 20261224, "2026-12-24T10:00"]
)
def test_closed_dates_are_iso_dates(day: object) -> None:
    raw = hours(closed_dates=[day])
    assert error_at(raw, "queues[0].business_hours.closed_dates[0]").startswith(
        "expected a date YYYY-MM-DD such as 2026-12-24, got "
    )


# =========================================================================== chat settings


def test_chat_settings_default_when_absent_or_empty() -> None:
    raw = sample()
    assert valid(raw).chat_settings == ChatSettings()
    del raw["chat_settings"]
    assert valid(raw).chat_settings == ChatSettings()


def test_every_chat_setting_is_read() -> None:
    raw = sample()
    raw["chat_settings"] = {
        "attachment_max_bytes": 1000,
        "attachment_types": ["image/JPEG", "application/vnd.ms-excel"],
        "attachment_base_url": "https://files.example.com/cc",
        "attachment_retention_days": 7,
        "whatsapp_opt_in_required": True,
        "offer_timeout_seconds": 30,
        "missed_offers_before_not_ready": 2,
        "max_concurrent_chats": 100,
        "queue_max_size": 10,
        "reopen_window_seconds": 0,
        "idle_warning_seconds": 60,
        "inactivity_close_seconds": 120,
        "event_retention_days": 90,
        "prompts": {"welcome": "Hi, this is {queue}", "closed": None},
    }
    assert valid(raw).chat_settings == ChatSettings(
        attachment_max_bytes=1000,
        attachment_types=("image/jpeg", "application/vnd.ms-excel"),
        attachment_base_url="https://files.example.com/cc",
        attachment_retention_days=7,
        whatsapp_opt_in_required=True,
        offer_timeout_seconds=30,
        missed_offers_before_not_ready=2,
        max_concurrent_chats=100,
        queue_max_size=10,
        reopen_window_seconds=0,
        idle_warning_seconds=60,
        inactivity_close_seconds=120,
        event_retention_days=90,
        prompts=Prompts(welcome="Hi, this is {queue}"),
    )


@pytest.mark.parametrize(("field", "limits"), configurator.CHAT_INTEGERS.items())
def test_chat_setting_integers_have_ranges(field: str, limits: tuple[int, int | None]) -> None:
    low, high = limits
    raw = sample()
    raw["chat_settings"] = {field: low - 1}
    assert error_at(raw, f"chat_settings.{field}").startswith("expected a")
    raw["chat_settings"] = {field: "5"}
    assert error_at(raw, f"chat_settings.{field}").endswith("got '5'")
    if high is not None:
        raw["chat_settings"] = {field: high + 1}
        assert error_at(raw, f"chat_settings.{field}") == (
            f"expected an integer from {low} to {high}, got {high + 1}"
        )


def test_attachment_types_are_mime_types() -> None:
    raw = sample()
    raw["chat_settings"] = {"attachment_types": ["image/png", "pdf", "image/", 3]}
    found = errors(raw)
    assert set(found) == {f"chat_settings.attachment_types[{i}]" for i in (1, 2, 3)}
    assert found["chat_settings.attachment_types[1]"] == [
        "expected a MIME type type/subtype such as image/jpeg, got 'pdf'"
    ]


def test_attachment_base_url_is_an_http_url() -> None:
    raw = sample()
    raw["chat_settings"] = {"attachment_base_url": "files.example.com"}
    assert error_at(raw, "chat_settings.attachment_base_url").startswith("expected an http://")
    raw["chat_settings"] = {"attachment_base_url": "http://files.example.com"}
    assert valid(raw).chat_settings.attachment_base_url == "http://files.example.com"
    assert warning_at(raw, "chat_settings.attachment_base_url").startswith("not https:")


def test_whatsapp_opt_in_is_a_boolean() -> None:
    raw = sample()
    raw["chat_settings"] = {"whatsapp_opt_in_required": 1}
    assert (
        error_at(raw, "chat_settings.whatsapp_opt_in_required") == "expected true or false, got 1"
    )


def test_the_idle_warning_comes_before_the_close() -> None:
    raw = sample()
    raw["chat_settings"] = {"idle_warning_seconds": 900, "inactivity_close_seconds": 900}
    assert error_at(raw, "chat_settings.idle_warning_seconds") == (
        "idle_warning_seconds (900) must be less than inactivity_close_seconds (900)"
    )
    raw["chat_settings"] = {"inactivity_close_seconds": 600}
    assert error_at(raw, "chat_settings.inactivity_close_seconds") == (
        "idle_warning_seconds (1500, the default) must be less than inactivity_close_seconds (600)"
    )
    raw["chat_settings"] = {"idle_warning_seconds": -1, "inactivity_close_seconds": 600}
    assert set(errors(raw)) == {"chat_settings.idle_warning_seconds"}  # no echo


@pytest.mark.parametrize(
    ("prompts", "path", "message"),
    [
        ({"welcom": "Hi"}, "chat_settings.prompts.welcom", None),
        (
            {"welcome": ""},
            "chat_settings.prompts.welcome",
            "expected a text, or null to switch the prompt off, got ''",
        ),
        (
            {"welcome": 5},
            "chat_settings.prompts.welcome",
            "expected a text, or null to switch the prompt off, got 5",
        ),
        (
            {"queue_full": "{queue} is full, {name}"},
            "chat_settings.prompts.queue_full",
            "unknown placeholder {name}: expected {queue}, {position}",
        ),
        (
            "Hi",
            "chat_settings.prompts",
            "expected a mapping of prompt names to texts, got a string",
        ),
    ],
)
def test_prompts(prompts: object, path: str, message: str | None) -> None:
    raw = sample()
    raw["chat_settings"] = {"prompts": prompts}
    found = error_at(raw, path)
    assert found == message if message else "(did you mean welcome?)" in found


# =========================================================================== agents


def test_agents_read_into_the_model() -> None:
    raw = sample()
    raw["agents"].append(
        {
            "login": "boss@example.com",
            "display_name": "The Boss",
            "role": "admin",
            "max_chats": 1,
            "password": "long enough",
        }
    )
    anna, boss = valid(raw).agents
    assert anna == Agent(login="anna", display_name="Anna", queues=("support",))
    assert (anna.role, anna.max_chats, anna.password) == ("agent", None, None)
    assert boss == Agent(
        login="boss@example.com",
        display_name="The Boss",
        role="admin",
        max_chats=1,
        password=Secret("long enough"),
    )


def first_agent(raw: dict[str, Any]) -> dict[str, Any]:
    agent: dict[str, Any] = raw["agents"][0]
    return agent


def test_an_upper_case_login_shows_the_lower_case_one() -> None:
    raw = sample()
    first_agent(raw)["login"] = "Anna.Berg"
    assert error_at(raw, "agents[0].login") == "login must be lower case: use anna.berg"


@pytest.mark.parametrize("login", ["a", "Bad Login", "-anna", "anna!", "a" * 65, ""])
def test_invalid_logins(login: str) -> None:
    raw = sample()
    first_agent(raw)["login"] = login
    assert error_at(raw, "agents[0].login").startswith(
        ("expected 2-64 characters", "must not be empty")
    )


def test_logins_are_unique_case_insensitively() -> None:
    raw = sample()
    raw["agents"].append({"login": "ANNA", "display_name": "Other Anna"})
    found = errors(raw)
    assert found["agents[1].login"] == [
        "login must be lower case: use anna",
        "login already used by agents[0]: logins must be unique (ignoring case)",
    ]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("display_name", "", "must not be empty; expected the name shown to colleagues"),
        ("role", "supervisor", "expected agent or admin, got 'supervisor'"),
        ("role", "Admin", "expected agent or admin (did you mean admin?), got 'Admin'"),
        ("max_chats", 0, "expected an integer from 1 to 100, got 0"),
        ("max_chats", 101, "expected an integer from 1 to 100, got 101"),
        ("password", "short", "too short: expected at least 8 characters"),
        ("queues", "support", "expected a list of queue names, got a string"),
    ],
)
def test_agent_fields(field: str, value: object, message: str) -> None:
    raw = sample()
    first_agent(raw)[field] = value
    assert error_at(raw, f"agents[0].{field}") == message


def test_display_name_is_required() -> None:
    raw = sample()
    del first_agent(raw)["display_name"]
    assert error_at(raw, "agents[0].display_name") == (
        "missing; expected the name shown to colleagues"
    )


def test_agent_queues_must_exist() -> None:
    raw = sample()
    first_agent(raw)["queues"] = ["support", "SMS", "billing"]
    found = errors(raw)
    assert found == {
        "agents[0].queues[1]": ["no queue named 'SMS' (did you mean sms?); queues: support, sms"],
        "agents[0].queues[2]": ["no queue named 'billing'; queues: support, sms"],
    }


def test_agent_queues_unchecked_without_a_queues_section() -> None:
    raw = {"agents": [{"login": "anna", "display_name": "Anna", "queues": ["anything"]}]}
    assert valid(raw).agents[0].queues == ("anything",)


def test_a_repeated_agent_queue_is_a_warning_and_dropped() -> None:
    raw = sample()
    first_agent(raw)["queues"] = ["support", "support"]
    assert valid(raw).agents[0].queues == ("support",)
    assert warning_at(raw, "agents[0].queues[1]") == (
        "listed twice (support); the repeat is ignored"
    )


def test_agent_password_null_means_none() -> None:
    raw = sample()
    first_agent(raw)["password"] = None
    assert valid(raw).agents[0].password is None


# =========================================================================== base


def test_a_partial_input_is_checked_against_the_base() -> None:
    base = valid(sample())
    raw = {"queues": [{"name": "new", "addresses": [f"{APP_OTHER}@sms.sinchconversation.com"]}]}
    assert valid(raw).queues[0].name == "new"  # nothing to check against
    validation = configurator.validate(raw, base=base)
    assert [str(p) for p in validation.errors] == [
        f"queues[0].addresses[0]: app {APP_OTHER} is not an outbound app of any messaging "
        "service: add KEYID@APPID to a service's authentication (replies could not be sent)",
        # the stored agent's queue is gone: that is reported too, and marked as stored
        "agents[0].queues[0]: no queue named 'support'; queues: new (in the stored configuration)",
    ]

    raw = {
        "queues": [
            {"name": "support", "addresses": [f"{APP_US}@sms.sinchconversation.com"]},
        ]
    }
    validation = configurator.validate(raw, base=base)
    assert [p.path for p in validation.errors] == ["queues[0].sms_sender_id"]


def test_with_a_base_the_config_is_whole_but_only_given_sections_are_present() -> None:
    base = valid(sample())
    config = configurator.validate({"chat_settings": {"queue_max_size": 5}}, base=base).config
    assert config is not None
    assert config.present_sections == frozenset({"chat_settings"})
    assert config.messaging_services == base.messaging_services
    assert config.chat_settings.queue_max_size == 5


def test_problems_in_inherited_sections_say_so() -> None:
    base = valid(sample())
    raw = {
        "messaging_services": [service("sinch-us", region="us", project=PROJECT_US, apps=(APP_US,))]
    }
    validation = configurator.validate(raw, base=base)
    assert [str(p) for p in validation.errors] == [
        f"queues[0].addresses[0]: app {APP_EU} is not an outbound app of any messaging service: "
        "add KEYID@APPID to a service's authentication (replies could not be sent) "
        "(in the stored configuration)",
        f"queues[1].addresses[0]: app {APP_EU_SMS} is not an outbound app of any messaging "
        "service: add KEYID@APPID to a service's authentication (replies could not be sent) "
        "(in the stored configuration)",
    ]


# =========================================================================== dump


def test_dump_round_trips_the_valid_fixture() -> None:
    config = valid(yaml.safe_load((FIXTURES / "valid.yaml").read_text()))
    dumped = configurator.dump(config, secrets="reveal")
    assert valid(yaml.safe_load(yaml.safe_dump(dumped))) == config


def test_dump_omits_defaults() -> None:
    config = valid(
        {
            "messaging_services": [service()],
            "queues": [{"name": "q", "addresses": [f"{APP_EU}@line.sinchconversation.com"]}],
        }
    )
    assert configurator.dump(config, secrets="mask") == {
        "database_url": "sqlite:///data/convodesk.db",
        "data_dir": "data",
        "messaging_services": [
            {
                "name": "sinch-eu",
                "type": "sinchconversation",
                "service_connection": connection("eu"),
                "authentication": [
                    {"auth_id": f"KEY-0@{APP_EU}", "password": MASK},
                    {
                        "auth_id": "webhook",
                        "password": MASK,
                        "triggers": ["MESSAGE_INBOUND", "MESSAGE_DELIVERY"],
                    },
                ],
            }
        ],
        "queues": [
            {"name": "q", "type": "chat", "addresses": [f"{APP_EU}@line.sinchconversation.com"]}
        ],
    }


def test_dump_writes_the_sections_that_were_present() -> None:
    config = valid({"agents": [], "chat_settings": {}})
    assert configurator.dump(config, secrets="mask") == {
        "database_url": "sqlite:///data/convodesk.db",
        "data_dir": "data",
        "chat_settings": {},
        "agents": [],
    }


def test_dump_placeholder_uses_the_env_var_or_a_generated_name() -> None:
    raw = sample()
    auth_entry(raw)["password"] = EnvStr("x", "MY_KEY_SECRET")
    raw["agents"][0]["password"] = "anna-password"
    dumped = configurator.dump(valid(raw), secrets="placeholder")
    eu_auth = dumped["messaging_services"][0]["authentication"]
    assert [a["password"] for a in eu_auth] == [
        "${MY_KEY_SECRET}",
        "${CONVODESK_SINCH_EU_KEY_KEY_1_SECRET}",
        "${CONVODESK_SINCH_EU_WEBHOOK_SECRET}",
    ]
    assert dumped["agents"][0]["password"] == "${CONVODESK_AGENT_ANNA_PASSWORD}"
    assert "anna-password" not in yaml.safe_dump(dumped)


def test_generated_names_that_clash_get_a_suffix_unless_the_secret_is_the_same() -> None:
    raw = sample()
    raw["messaging_services"][1]["name"] = "sinch_eu"
    for entry in raw["messaging_services"][1]["authentication"]:
        entry["password"] = "a different secret"
    first_service(raw)["authentication"][1]["auth_id"] = f"KEY-0@{APP_EU_SMS}"  # same key id
    auth_entry(raw, 1)["password"] = "key-secret-0"  # same access key, same secret
    dumped = configurator.dump(valid(raw), secrets="placeholder")
    passwords = [a["password"] for s in dumped["messaging_services"] for a in s["authentication"]]
    assert passwords == [
        "${CONVODESK_SINCH_EU_KEY_KEY_0_SECRET}",
        "${CONVODESK_SINCH_EU_KEY_KEY_0_SECRET}",
        "${CONVODESK_SINCH_EU_WEBHOOK_SECRET}",
        "${CONVODESK_SINCH_EU_KEY_KEY_0_SECRET_2}",
        "${CONVODESK_SINCH_EU_WEBHOOK_SECRET_2}",
    ]


def test_env_var_name() -> None:
    assert (
        configurator.env_var_name("sinch-eu", "WEBHOOK_SECRET")
        == "CONVODESK_SINCH_EU_WEBHOOK_SECRET"
    )
    assert (
        configurator.env_var_name("AGENT", "a.b@c", "PASSWORD") == "CONVODESK_AGENT_A_B_C_PASSWORD"
    )


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("reveal", "postgresql://cc:pw@db:5432/cc"),
        ("mask", "postgresql://cc:********@db:5432/cc"),
        ("placeholder", "postgresql://cc:${CONVODESK_DATABASE_PASSWORD}@db:5432/cc"),
    ],
)
def test_dump_hides_a_database_password(mode: configurator.SecretsMode, expected: str) -> None:
    config = valid({"database_url": "postgresql://cc:pw@db:5432/cc"})
    assert configurator.dump(config, secrets=mode)["database_url"] == expected
    plain = valid({"database_url": "postgresql://cc@db/cc"})
    assert configurator.dump(plain, secrets=mode)["database_url"] == "postgresql://cc@db/cc"


def test_dump_writes_the_region_only_when_the_connection_lacks_it() -> None:
    url = "http://localhost:9000/v1/projects/P/messages:send"
    config = valid(custom(url, region="br"))
    dumped = configurator.dump_service(config.messaging_services[0], secrets="mask")
    assert dumped["region"] == "br"
    assert "region" not in configurator.dump_service(
        valid(sample()).messaging_services[0], secrets="mask"
    )


def test_section_dumps_for_the_admin_api() -> None:
    config = valid(yaml.safe_load((FIXTURES / "valid.yaml").read_text()))
    assert configurator.dump_queue(config.queues[0]) == {
        "name": "whatsapp-support",
        "type": "chat",
        "addresses": [f"{APP_EU}@whatsapp.sinchconversation.com"],
        "priority": 10,
        "offer_timeout_seconds": 60,
        "business_hours": {
            "timezone": "Europe/Stockholm",
            "weekly": {
                "mon": ["08:00-12:00", "13:00-17:00"],
                "tue": ["08:00-17:00"],
                "wed": ["08:00-17:00"],
                "thu": ["08:00-17:00"],
                "fri": ["08:00-16:00"],
            },
            "closed_dates": ["2026-12-24", "2026-12-25"],
        },
    }
    assert configurator.dump_agent(config.agents[0], secrets="mask") == {
        "login": "admin",
        "display_name": "Ada Admin",
        "role": "admin",
        "queues": [],
        "password": MASK,
    }
    assert "password" not in configurator.dump_agent(config.agents[1], secrets="mask")
    chat = configurator.dump_chat_settings(config.chat_settings)
    assert chat["max_concurrent_chats"] == 4
    assert "queue_max_size" not in chat
    assert chat["prompts"] == {
        "welcome": "Hi! You are through to {queue}; an agent will be with you shortly.",
        "queue_position": "You are number {position} in the queue.",
        "outside_business_hours": "We are closed right now; we will answer when we open.",
    }
    service_dump = configurator.dump_service(config.messaging_services[0], secrets="mask")
    assert "example-eu" not in repr(service_dump)


# --------------------------------------------------------------------------- round trip


CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# No control characters or line separators: PyYAML folds some of them (not our rules).
printable = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))
app_ids = st.text(alphabet=CROCKFORD, min_size=26, max_size=26)
secret_values = st.one_of(
    st.just(MASK), st.text(printable, min_size=1, max_size=12).filter(str.strip)
)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_. ", min_size=1, max_size=12)
queue_names = names.filter(lambda s: s == s.strip() and s != "")
senders = st.one_of(
    st.from_regex(r"\+[0-9]{8,15}", fullmatch=True),
    st.from_regex(r"[0-9]{3,8}", fullmatch=True),
    st.from_regex(r"[A-Za-z][A-Za-z0-9 ]{0,10}", fullmatch=True),
)
prompt_texts = st.one_of(
    st.none(),
    st.text(printable, min_size=1, max_size=20).filter(
        lambda s: s.strip() and "{" not in s and "}" not in s
    ),
    st.sampled_from(["You are number {position} in {queue}.", "Welcome to {queue}"]),
)


template_parameters = st.sampled_from(
    [
        "body[1]text",
        "body[2]text",
        "header[1]text",
        "header[1]image.link",
        "header[1]document.filename",
        "button[0]url[1]text",
        "button[1]quick_reply[1]payload",
        "carousel[0]body[1]text",
    ]
)


@st.composite
def templates_strategy(draw: st.DrawFn, apps: list[str]) -> tuple[WhatsAppTemplate, ...]:
    keys = draw(
        st.lists(
            st.tuples(
                st.sampled_from(apps),
                st.from_regex(r"[a-z0-9_]{1,12}", fullmatch=True),
                st.sampled_from(["en", "sv_SE", "pt_BR", "fil"]),
            ),
            unique=True,
            max_size=3,
        )
    )
    found = []
    for app, name, language in keys:
        parameters = tuple(draw(st.lists(template_parameters, unique=True, max_size=3)))
        text = draw(
            st.one_of(
                st.none(),
                st.text(printable, min_size=1, max_size=12).filter(
                    lambda s: s.strip() and "{" not in s and "}" not in s
                ),
                st.just(" ".join(f"{{{p}}}" for p in parameters) or "Hello"),
            )
        )
        found.append(
            WhatsAppTemplate(
                app_id=app, name=name, language=language, parameters=parameters, text=text
            )
        )
    return tuple(found)


@st.composite
def services_strategy(draw: st.DrawFn, custom: bool) -> list[MessagingService]:
    count = draw(st.integers(0, 3))
    apps = draw(st.lists(app_ids, min_size=2 * count, max_size=2 * count, unique=True))
    service_names = draw(
        st.lists(
            st.from_regex(r"[a-z0-9][a-z0-9-]{0,10}", fullmatch=True).filter(lambda s: s != "all"),
            min_size=count,
            max_size=count,
            unique_by=str.lower,
        )
    )
    found = []
    for index, name in enumerate(service_names):
        region = draw(st.sampled_from(REGIONS))
        project = str(draw(st.uuids()))
        url = connection(region, project)
        if custom:
            url = draw(
                st.sampled_from(
                    [
                        url,
                        f"http://127.0.0.1:9000/{region}/v1/projects/{project}/messages:send",
                        f"http://emulator/v1/projects/{project}/messages:send",
                    ]
                )
            )
        own = apps[2 * index : 2 * index + draw(st.integers(1, 2))]
        found.append(
            MessagingService(
                name=name,
                type="sinchconversation",
                service_connection=url,
                region=region,
                project_id=project,
                outbound=tuple(
                    OutboundCredential(
                        key_id=draw(st.from_regex(r"[A-Za-z0-9-]{1,12}", fullmatch=True)),
                        app_id=app,
                        secret=Secret(draw(secret_values)),
                    )
                    for app in own
                ),
                inbound=InboundWebhook(
                    secret=Secret(draw(secret_values)),
                    triggers=tuple(
                        draw(
                            st.permutations(
                                [
                                    "MESSAGE_INBOUND",
                                    *draw(
                                        st.lists(
                                            st.sampled_from(TRIGGERS[1:]), unique=True, max_size=3
                                        )
                                    ),
                                ]
                            )
                        )
                    ),
                ),
                whatsapp_templates=draw(templates_strategy(own)),
            )
        )
    return found


@st.composite
def business_hours_strategy(draw: st.DrawFn) -> BusinessHours:
    weekly = {}
    for day in draw(st.lists(st.sampled_from(configurator.WEEKDAYS), unique=True, max_size=7)):
        edges = sorted(draw(st.lists(st.integers(0, 1440), min_size=2, max_size=6, unique=True)))
        edges = edges[: len(edges) // 2 * 2]
        weekly[day] = tuple(zip(edges[::2], edges[1::2], strict=True))
    return BusinessHours(
        timezone=draw(st.sampled_from(["Europe/Stockholm", "America/New_York", "UTC"])),
        weekly=weekly,
        closed_dates=tuple(d.isoformat() for d in draw(st.lists(st.dates(), max_size=3))),
    )


@st.composite
def queues_strategy(draw: st.DrawFn, services: list[MessagingService]) -> list[Queue]:
    regions = {app: s.region for s in services for app in s.app_ids}
    pool = [
        QueueAddress(app_id=a, subchannel=sub) for a in regions for sub in SUBCHANNEL_TO_CHANNEL
    ]
    found: list[Queue] = []
    taken_names: set[str] = set()
    for _ in range(draw(st.integers(0, 3)) if pool else 0):
        free = [a for a in pool if all(a not in q.addresses for q in found)]
        name = draw(queue_names)
        if not free or name.lower() in taken_names:
            break
        taken_names.add(name.lower())
        addresses = draw(st.lists(st.sampled_from(free), min_size=1, max_size=3, unique=True))
        us_sms = any(a.subchannel == "sms" and regions[a.app_id] == "us" for a in addresses)
        found.append(
            Queue(
                name=name,
                type="chat",
                addresses=tuple(addresses),
                sms_sender_id=draw(senders if us_sms else st.one_of(st.none(), senders)),
                priority=draw(st.integers(-100, 100)),
                max_size=draw(st.one_of(st.none(), st.integers(1, 10_000))),
                offer_timeout_seconds=draw(st.one_of(st.none(), st.integers(1, 3600))),
                business_hours=draw(st.one_of(st.none(), business_hours_strategy())),
            )
        )
    return found


@st.composite
def chat_settings_strategy(draw: st.DrawFn) -> ChatSettings:
    values = {
        name: draw(st.integers(low, high or 10**9))
        for name, (low, high) in configurator.CHAT_INTEGERS.items()
    }
    close = draw(st.integers(2, 10**6))
    values.update(
        idle_warning_seconds=draw(st.integers(1, close - 1)), inactivity_close_seconds=close
    )
    return ChatSettings(
        **values,
        attachment_types=tuple(
            draw(
                st.lists(
                    st.from_regex(r"[a-z]{1,8}/[a-z0-9][a-z0-9.+-]{0,7}", fullmatch=True),
                    max_size=4,
                )
            )
        ),
        attachment_base_url=draw(st.sampled_from([None, "https://files.example.com/x"])),
        whatsapp_opt_in_required=draw(st.booleans()),
        prompts=Prompts(**{f.name: draw(prompt_texts) for f in dataclasses.fields(Prompts)}),
    )


@st.composite
def agents_strategy(draw: st.DrawFn, queue_list: list[Queue]) -> list[Agent]:
    logins = draw(
        st.lists(
            st.from_regex(r"[a-z0-9][a-z0-9._@-]{1,12}", fullmatch=True), unique=True, max_size=3
        )
    )
    queue_names_ = [q.name for q in queue_list]
    return [
        Agent(
            login=login,
            display_name=draw(st.text(printable, min_size=1, max_size=15).filter(str.strip)),
            role=draw(st.sampled_from(["admin", "agent"])),
            queues=tuple(
                draw(st.lists(st.sampled_from(queue_names_), unique=True)) if queue_names_ else ()
            ),
            max_chats=draw(st.one_of(st.none(), st.integers(1, 100))),
            password=draw(
                st.one_of(
                    st.none(),
                    st.just(Secret(MASK)),
                    st.text(printable, min_size=8, max_size=16).filter(str.strip).map(Secret),
                )
            ),
        )
        for login in logins
    ]


@st.composite
def configs(draw: st.DrawFn) -> SystemConfig:
    custom = draw(st.booleans())
    services = draw(services_strategy(custom))
    queue_list = draw(queues_strategy(services))
    config = SystemConfig(
        database_url=draw(st.sampled_from(["sqlite:///x.db", "postgresql://cc:pw@db/cc"])),
        data_dir=draw(st.sampled_from(["data", "/var/lib/convodesk"])),
        public_base_url=draw(
            st.sampled_from([None, "https://cc.example.com", "http://localhost:8000"])
        ),
        allow_custom_endpoints=custom,
        oauth_token_url="http://127.0.0.1:9000/oauth2/token"
        if custom
        else SystemConfig().oauth_token_url,
        messaging_services=tuple(services),
        queues=tuple(queue_list),
        chat_settings=draw(st.one_of(st.just(ChatSettings()), chat_settings_strategy())),
        agents=tuple(draw(agents_strategy(queue_list))),
    )
    # A section is present when chosen, and always when it is not at its default.
    chosen = draw(st.sets(st.sampled_from(configurator.SECTIONS)))
    defaults = SystemConfig()
    changed = {s for s in configurator.SECTIONS if getattr(config, s) != getattr(defaults, s)}
    return dataclasses.replace(config, present_sections=frozenset(chosen | changed))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(configs())
def test_dump_then_validate_gives_the_same_config(config: SystemConfig) -> None:
    dumped = configurator.dump(config, secrets="reveal")
    text = yaml.safe_dump(dumped, sort_keys=False, allow_unicode=True)
    validation = configurator.validate(yaml.safe_load(text))
    assert validation.errors == ()
    assert validation.config == config


@settings(max_examples=50, deadline=None)
@given(configs())
def test_masked_dumps_validate_and_hide_every_secret(config: SystemConfig) -> None:
    dumped = configurator.dump(config, secrets="mask")
    validation = configurator.validate(copy.deepcopy(dumped))
    assert validation.errors == ()
    assert validation.config is not None
    secrets = [c.secret for s in validation.config.messaging_services for c in s.outbound]
    secrets += [s.inbound.secret for s in validation.config.messaging_services]
    secrets += [a.password for a in validation.config.agents if a.password is not None]
    assert all(s.is_mask for s in secrets)


def test_values_from_env_references_dump_as_plain_yaml() -> None:
    def wrap(value: Any) -> Any:
        if isinstance(value, str):
            return EnvStr(value, "SOME_VAR")
        if isinstance(value, dict):
            return {k: wrap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [wrap(v) for v in value]
        return value

    config = valid(wrap(yaml.safe_load((FIXTURES / "valid.yaml").read_text())))
    for mode in ("reveal", "placeholder", "mask"):
        yaml.safe_dump(configurator.dump(config, secrets=mode))  # EnvStr would fail here


# --------------------------------------------------------------------------- robustness

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


def slots(value: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) in a nested structure: the places a value can be replaced."""
    found: list[tuple[Any, Any]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found += [(value, key), *slots(item)]
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += [(value, index), *slots(item)]
    return found


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_value_anywhere_gives_problems_not_exceptions(data: st.DataObject) -> None:
    raw = sample()
    for _ in range(data.draw(st.integers(1, 3))):
        container, key = data.draw(st.sampled_from(slots(raw)))
        container[key] = data.draw(json_values)
    validation = configurator.validate(raw)
    assert (validation.config is None) == bool(validation.errors)
    for problem in validation.problems:
        assert problem.message
        assert problem.message[0].islower(), problem


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(configurator.TOP_LEVEL_KEYS), json_values))
def test_any_top_level_values_give_problems_not_exceptions(raw: dict[str, Any]) -> None:
    validation = configurator.validate(raw)
    assert (validation.config is None) == bool(validation.errors)
