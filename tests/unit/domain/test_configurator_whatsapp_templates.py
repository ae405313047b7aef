"""WhatsApp templates in the configuration: `messaging_services[].whatsapp_templates`.

Each rule from both sides with its exact path and message; the dump round trip; any value in
any place gives problems, never an exception.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from convodesk.domain import configurator
from convodesk.domain.config_model import WhatsAppTemplate
from tests.unit.domain.test_configurator import (
    APP_EU,
    APP_EU_SMS,
    APP_US,
    error_at,
    json_values,
    sample,
    slots,
    valid,
)

PARAMETER_FORM = (
    "a Sinch WhatsApp parameter key such as body[1]text, header[1]text, header[1]image.link, "
    "button[0]url[1]text or button[0]quick_reply[1]payload"
)


def order_update(**changes: Any) -> dict[str, Any]:
    template: dict[str, Any] = {
        "app_id": APP_EU,
        "name": "order_update",
        "language": "sv_SE",
        "parameters": ["body[1]text", "body[2]text"],
        "text": "Hej {body[1]text}! Din order {body[2]text} har skickats.",
    }
    template.update(changes)
    return {k: v for k, v in template.items() if v is not ...}


def with_templates(*templates: Any) -> dict[str, Any]:
    raw = sample()
    raw["messaging_services"][0]["whatsapp_templates"] = list(templates)
    return raw


PATH = "messaging_services[0].whatsapp_templates"


def test_a_service_with_templates_validates() -> None:
    raw = with_templates(
        order_update(),
        order_update(language="en", text="Hi {body[1]text}! Order {body[2]text} shipped."),
        order_update(app_id=APP_EU_SMS),
        {
            "app_id": APP_EU,
            "name": "invoice_ready",
            "language": "en_GB",
            "parameters": [
                "header[1]document.link",
                "header[1]document.filename",
                "body[1]text",
                "button[0]url[1]text",
                "button[1]quick_reply[1]payload",
            ],
        },
        {"app_id": APP_EU, "name": "hello_world", "language": "en_US"},
    )
    config = valid(raw)
    service = config.messaging_services[0]
    assert service.whatsapp_templates[0] == WhatsAppTemplate(
        app_id=APP_EU,
        name="order_update",
        language="sv_SE",
        parameters=("body[1]text", "body[2]text"),
        text="Hej {body[1]text}! Din order {body[2]text} har skickats.",
    )
    assert service.whatsapp_templates[-1] == WhatsAppTemplate(
        app_id=APP_EU, name="hello_world", language="en_US", parameters=(), text=None
    )
    assert [t.name for t in service.templates_for(APP_EU_SMS)] == ["order_update"]
    assert len(service.templates_for(APP_EU)) == 4
    assert config.messaging_services[1].whatsapp_templates == ()


def test_templates_dump_and_read_back_equal() -> None:
    config = valid(with_templates(order_update(), order_update(language="en", text=None)))
    dumped = configurator.dump(config, secrets="reveal")
    assert dumped["messaging_services"][0]["whatsapp_templates"] == [
        {
            "app_id": APP_EU,
            "name": "order_update",
            "language": "sv_SE",
            "parameters": ["body[1]text", "body[2]text"],
            "text": "Hej {body[1]text}! Din order {body[2]text} har skickats.",
        },
        {
            "app_id": APP_EU,
            "name": "order_update",
            "language": "en",
            "parameters": ["body[1]text", "body[2]text"],
        },
    ]
    assert "whatsapp_templates" not in dumped["messaging_services"][1]  # none: not written
    assert valid(yaml.safe_load(yaml.safe_dump(dumped))) == config
    masked = configurator.dump(config, secrets="mask")
    assert (
        configurator.dump_service(config.messaging_services[0], secrets="mask")
        == (masked["messaging_services"][0])
    )


@pytest.mark.parametrize(
    ("value", "path", "message"),
    [
        (
            "not a list",
            PATH,
            "expected a list of WhatsApp templates {app_id, name, language, parameters, text}, "
            "got a string",
        ),
        (
            ["order_update"],
            f"{PATH}[0]",
            "expected a WhatsApp template {app_id, name, language, parameters, text}, got a string",
        ),
    ],
)
def test_the_list_and_its_entries_have_a_shape(value: Any, path: str, message: str) -> None:
    raw = sample()
    raw["messaging_services"][0]["whatsapp_templates"] = value
    assert error_at(raw, path) == message


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        (
            {"app_id": APP_EU.lower()},
            "app_id",
            f"app id must be upper case: use {APP_EU}",
        ),
        (
            {"app_id": "whatsapp-app"},
            "app_id",
            "expected an app id of 26 characters of upper-case Crockford base32 (0-9 and A-Z "
            "without I, L, O, U), got 'whatsapp-app'",
        ),
        (
            {"app_id": APP_US},
            "app_id",
            f"app {APP_US} is not an outbound app of this messaging service: expected "
            f"{APP_EU} or {APP_EU_SMS} (templates are sent by the service's own apps)",
        ),
        (
            {"app_id": ...},
            "app_id",
            "missing; expected the app id of one of this service's outbound entries (KEYID@APPID)",
        ),
        (
            {"name": "Order_Update"},
            "name",
            "WhatsApp template names are lower case: use order_update",
        ),
        (
            {"name": "order-update"},
            "name",
            "expected the approved template name: 1-512 lower-case letters, digits and "
            "underscores, such as order_update, got 'order-update'",
        ),
        (
            {"name": ...},
            "name",
            "missing; expected the name WhatsApp approved, such as order_update",
        ),
        (
            {"language": "en-US"},
            "language",
            "WhatsApp writes language codes with an underscore and an upper-case country: "
            "use en_US",
        ),
        (
            {"language": "sv_se"},
            "language",
            "WhatsApp writes language codes with an underscore and an upper-case country: "
            "use sv_SE",
        ),
        (
            {"language": "Swedish"},
            "language",
            "expected a WhatsApp language code such as sv_SE or en, got 'Swedish'",
        ),
        (
            {"language": 1},
            "language",
            "expected a WhatsApp language code such as sv_SE or en, got 1",
        ),
        (
            {"parameters": "body[1]text"},
            "parameters",
            f"expected a list of parameter keys ({PARAMETER_FORM}), got a string",
        ),
        (
            {"parameters": ["body[1]text", "body[2]text", "body[1]text"]},
            "parameters[2]",
            "listed twice (body[1]text): parameter keys are unique",
        ),
        (
            {"parameters": ["body[0]text"], "text": None},
            "parameters[0]",
            "parameter indexes start at 1: use body[1]text",
        ),
        (
            {"parameters": ["BODY[1]TEXT"], "text": None},
            "parameters[0]",
            "parameter keys are lower case: use body[1]text",
        ),
        (
            {"parameters": ["{{1}}"], "text": None},
            "parameters[0]",
            f"expected {PARAMETER_FORM}, got '{{{{1}}}}' (WhatsApp's {{{{1}}}} in the body is "
            "body[1]text)",
        ),
        (
            {"parameters": ["body.1"], "text": None},
            "parameters[0]",
            f"expected {PARAMETER_FORM}, got 'body.1'",
        ),
        (
            {"parameters": ["body[1]image.link"], "text": None},
            "parameters[0]",
            f"expected {PARAMETER_FORM}, got 'body[1]image.link'",
        ),
        (
            {"parameters": [7], "text": None},
            "parameters[0]",
            f"expected {PARAMETER_FORM}, got 7",
        ),
        (
            {"text": "Hej {body[3]text}"},
            "text",
            "unknown placeholder {body[3]text}: the placeholders are the template's parameters: "
            "{body[1]text}, {body[2]text}",
        ),
        (
            {"text": "Hej {{1}}"},
            "text",
            "unknown placeholder {1} (write WhatsApp's {{1}} as {body[1]text}): the placeholders "
            "are the template's parameters: {body[1]text}, {body[2]text}",
        ),
        (
            {"text": "  "},
            "text",
            "must not be empty; expected a preview text with {body[1]text} placeholders",
        ),
        (
            {"template_id": "order_update"},
            "template_id",
            "unknown key (the approved template name goes in name): expected one of app_id, "
            "name, language, parameters, text",
        ),
        (
            {"language_code": "sv_SE"},
            "language_code",
            "unknown key (did you mean language?): expected one of app_id, name, language, "
            "parameters, text",
        ),
    ],
)
def test_each_template_rule_names_its_path_and_the_fix(
    changes: dict[str, Any], field: str, message: str
) -> None:
    raw = with_templates(order_update(), order_update(**changes))
    assert error_at(raw, f"{PATH}[1].{field}") == message


def test_one_entry_per_app_name_and_language() -> None:
    raw = with_templates(
        order_update(), order_update(language="en"), order_update(parameters=[], text=None)
    )
    assert error_at(raw, f"{PATH}[2]") == (
        f"template order_update (sv_SE) of app {APP_EU} is listed already "
        "(whatsapp_templates[0]): one entry per app, name and language"
    )
    # The same name and language on another app of the service is a different template.
    assert valid(with_templates(order_update(), order_update(app_id=APP_EU_SMS)))


def test_a_misspelt_section_key_is_named() -> None:
    raw = sample()
    raw["messaging_services"][0]["templates"] = [order_update()]
    assert error_at(raw, "messaging_services[0].templates").startswith(
        "unknown key (did you mean whatsapp_templates?)"
    )


def test_removing_an_app_that_has_templates_is_an_error_on_the_template() -> None:
    raw = with_templates(order_update(app_id=APP_EU_SMS))
    raw["messaging_services"][0]["authentication"].pop(1)  # the KEY@APP_EU_SMS entry
    raw["queues"][1]["addresses"].pop(0)
    assert error_at(raw, f"{PATH}[0].app_id") == (
        f"app {APP_EU_SMS} is not an outbound app of this messaging service: expected {APP_EU} "
        "(templates are sent by the service's own apps)"
    )


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_value_in_a_template_gives_problems_not_exceptions(data: st.DataObject) -> None:
    raw = with_templates(order_update(), order_update(language="en"))
    templates = raw["messaging_services"][0]
    for _ in range(data.draw(st.integers(1, 3))):
        container, key = data.draw(st.sampled_from(slots(templates["whatsapp_templates"])))
        container[key] = data.draw(json_values)
    validation = configurator.validate(copy.deepcopy(raw))
    assert (validation.config is None) == bool(validation.errors)
    for problem in validation.problems:
        assert problem.message[0].islower(), problem
