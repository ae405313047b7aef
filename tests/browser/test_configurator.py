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
