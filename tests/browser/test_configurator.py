"""The System Configurator pages: problems shown next to their fields, secrets masked."""

from __future__ import annotations

from typing import Any

from convodesk.services import configuration
from tests.browser.conftest import ADMIN, HOOK_EU, KEY_EU, KEY_US, WebStack, log_in, screenshot
from tests.support.apps import APP_EU


def test_lower_case_app_id_is_shown_at_its_field_with_the_corrected_value(
    page: Any, stack: WebStack
) -> None:
    log_in(page, *ADMIN, target="/admin/queues/whatsapp-support")
    page.wait_for_url("**/admin/queues/whatsapp-support")
    page.get_by_role("button", name="Add address").click()
    typed = f"{APP_EU.lower()}@sms.sinchconversation.com"
    corrected = f"{APP_EU}@sms.sinchconversation.com"
    new_field = page.get_by_label("Address 2")
    assert new_field.evaluate("el => el === document.activeElement")  # focus moved to it
    new_field.fill(typed)
    page.get_by_role("button", name="Save queue").click()

    field = page.locator('.field[data-path="addresses[1]"]')
    error = field.locator(".field-error")
    error.wait_for(state="visible")
    assert f"app id must be upper case: use {corrected}" in error.inner_text()
    assert new_field.get_attribute("aria-invalid") == "true"
    assert error.get_attribute("id") in (new_field.get_attribute("aria-describedby") or "")
    summary = page.locator(".error-summary")
    assert summary.is_visible()
    assert "Address 2" in summary.inner_text()
    assert page.locator('.field[data-path="addresses[0]"] .field-error').is_hidden()
    screenshot(page, "configurator.png")
    # nothing was stored
    stored = configuration.get_resource(stack.runtime, "queues", "whatsapp-support")
    assert len(stored["addresses"]) == 1

    error.get_by_role("button", name=f"Use {corrected}").click()
    assert new_field.input_value() == corrected
    page.get_by_role("button", name="Save queue").click()
    page.wait_for_url("**/admin/queues?saved=whatsapp-support")
    assert page.get_by_role("status").inner_text() == "Saved queue whatsapp-support."
    stored = configuration.get_resource(stack.runtime, "queues", "whatsapp-support")
    assert stored["addresses"][1] == corrected


def test_secrets_are_masked_and_a_blank_secret_keeps_the_stored_one(
    page: Any, stack: WebStack
) -> None:
    log_in(page, *ADMIN, target="/admin/services/sinch-eu")
    page.wait_for_url("**/admin/services/sinch-eu")
    html = page.content()
    for secret in (KEY_EU, HOOK_EU, KEY_US):
        assert secret not in html
    assert "********" not in html
    key = page.get_by_label("Access key secret")
    assert key.input_value() == ""
    assert key.get_attribute("placeholder") == "stored — leave blank to keep"
    assert page.get_by_label("Webhook secret").input_value() == ""
    # the list shows what the connection URL says, and no secret either
    page.goto("/admin/services")
    assert KEY_EU not in page.content()
    assert HOOK_EU not in page.content()
    assert page.get_by_role("row", name="sinch-eu").get_by_role("cell").nth(0).inner_text() == "eu"

    # Saving with blank secrets changes a trigger and keeps both secrets.
    page.goto("/admin/services/sinch-eu")
    page.get_by_label("MESSAGE_SUBMIT").check()
    page.get_by_role("button", name="Save service").click()
    page.wait_for_url("**/admin/services?saved=sinch-eu")
    exported = configuration.export_config(stack.runtime, secrets="reveal")
    [service] = [s for s in exported["messaging_services"] if s["name"] == "sinch-eu"]
    assert [a["password"] for a in service["authentication"]] == [KEY_EU, HOOK_EU]
    assert "MESSAGE_SUBMIT" in service["authentication"][1]["triggers"]


def test_a_new_key_without_its_secret_is_refused_at_the_secret_field(
    page: Any, stack: WebStack
) -> None:
    log_in(page, *ADMIN, target="/admin/services/sinch-eu")
    page.wait_for_url("**/admin/services/sinch-eu")
    page.get_by_role("button", name="Add access key").click()
    page.get_by_label("Key id @ app id").nth(1).fill("KEY-2@01HZX4K7QW8E2R5T9Y3V6M1N0Q")
    page.get_by_role("button", name="Save service").click()
    error = page.locator('.field[data-path="authentication[1].password"] .field-error')
    error.wait_for(state="visible")
    assert "must not be empty" in error.inner_text()
    # the webhook entry moved to index 2 and keeps its stored secret: no problem there
    assert page.locator('.field[data-path="authentication[2].password"] .field-error').is_hidden()


def test_chat_settings_save_as_shown_and_problems_land_on_their_fields(
    page: Any, stack: WebStack
) -> None:
    log_in(page, *ADMIN, target="/admin/chat-settings")
    page.wait_for_url("**/admin/chat-settings")
    page.get_by_role("button", name="Save chat settings").click()  # unchanged: valid
    page.wait_for_url("**/admin/chat-settings?saved=1")
    assert page.get_by_role("status").first.inner_text() == "Saved the chat settings."

    page.get_by_label("Offer timeout (seconds)").fill("soon")
    page.get_by_label("Welcome").fill("Hi! You are number {place} in {queue}.")
    page.get_by_role("button", name="Save chat settings").click()
    timeout_error = page.locator('.field[data-path="offer_timeout_seconds"] .field-error')
    timeout_error.wait_for(state="visible")
    assert "'soon'" in timeout_error.inner_text()
    prompt_error = page.locator('.field[data-path="prompts.welcome"] .field-error')
    assert "place" in prompt_error.inner_text()

    page.get_by_label("Offer timeout (seconds)").fill("45")
    page.get_by_label("Welcome").fill("Hi! You are in the {queue} queue.")
    with page.expect_navigation(url="**/admin/chat-settings?saved=1"):
        page.get_by_role("button", name="Save chat settings").click()
    stored = configuration.get_chat_settings(stack.runtime)
    assert stored["offer_timeout_seconds"] == 45
    assert stored["prompts"] == {"welcome": "Hi! You are in the {queue} queue."}


def test_add_an_agent_who_can_then_log_in_and_delete_it(page: Any, stack: WebStack) -> None:
    log_in(page, *ADMIN, target="/admin/agents/new")
    page.wait_for_url("**/admin/agents/new")
    page.get_by_label("Login").fill("cleo")
    page.get_by_label("Display name").fill("Cleo Berg")
    page.get_by_label("whatsapp-support").check()
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Add agent").click()
    error = page.locator('.field[data-path="password"] .field-error')
    error.wait_for(state="visible")
    assert "8" in error.inner_text()
    page.get_by_label("Password").fill("cleo-password-1")
    page.get_by_role("button", name="Add agent").click()
    page.wait_for_url("**/admin/agents?saved=cleo")
    assert page.get_by_role("row", name="cleo").get_by_role("cell").nth(2).inner_text() == (
        "whatsapp-support"
    )

    page.get_by_role("link", name="cleo").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete agent").click()
    page.wait_for_url("**/admin/agents?deleted=cleo")
    assert page.get_by_role("status").inner_text() == "Deleted agent cleo."
    assert [a["login"] for a in configuration.list_resources(stack.runtime, "agents")] == [
        "ada",
        "anna",
    ]


def test_deleting_a_service_a_queue_uses_shows_the_problem(page: Any, stack: WebStack) -> None:
    log_in(page, *ADMIN, target="/admin/services/sinch-us")
    page.wait_for_url("**/admin/services/sinch-us")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete service").click()
    summary = page.locator(".error-summary")
    summary.wait_for(state="visible")
    assert "queues[1].addresses[0]" in summary.inner_text()
    assert configuration.get_resource(stack.runtime, "messaging_services", "sinch-us")
