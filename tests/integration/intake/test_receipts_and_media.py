"""Delivery reports move outbound messages forward only; inbound media is downloaded."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from convodesk.runtime import Runtime
from convodesk.services.chain_matcher import apply_parked_reports
from convodesk.storage.db import transaction
from convodesk.storage.tables import AttachmentRow, ConversationRow, DeliveryReportRow, MessageRow
from convodesk.workers.media import MAX_ATTEMPTS, MediaFetcher, attachment_path
from tests.support.apps import APP_EU
from tests.support.intake import post_sinch_fixture, process

SINCH_ID = "01J0B7Q2ZK9M3N4P5R6S7T8V9W"


def outbound_message(
    runtime: Runtime, sinch_id: str | None = SINCH_ID, status: str = "accepted"
) -> int:
    with transaction(runtime.sessions) as session:
        conv = ConversationRow(
            service="sinch-eu",
            app_id=APP_EU,
            channel="WHATSAPP",
            identity="46701234567",
            queue="whatsapp",
            status="active",
            open_key=f"sinch-eu|{APP_EU}|WHATSAPP|46701234567",
        )
        session.add(conv)
        session.flush()
        msg = MessageRow(
            conversation_id=conv.id,
            direction="outbound",
            sinch_message_id=sinch_id,
            kind="text",
            text="hello",
            content={},
            status=status,
        )
        session.add(msg)
        session.flush()
        return msg.id


def report(status: str, reason: str | None = None):
    def change(data: dict[str, Any]) -> None:
        data["message_delivery_report"]["message_id"] = SINCH_ID
        data["message_delivery_report"]["status"] = status
        if reason:
            data["message_delivery_report"]["reason"] = {
                "code": reason,
                "description": "Channel says no",
                "sub_code": "UNSPECIFIED_SUB_CODE",
            }

    return change


def message(runtime: Runtime, message_id: int) -> MessageRow:
    with transaction(runtime.sessions) as session:
        row = session.get(MessageRow, message_id)
        assert row is not None
        return row


@pytest.mark.parametrize(
    "order",
    list(itertools.permutations(["QUEUED_ON_CHANNEL", "DELIVERED", "READ"])),
)
def test_status_never_moves_backwards(
    order: tuple[str, ...], served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, app = served
    msg_id = outbound_message(runtime)
    for status in order:
        assert (
            post_sinch_fixture(
                client, "message_delivery__delivered", change=report(status)
            ).status_code
            == 200
        )
        process(app)
    assert message(runtime, msg_id).status == "READ"


def test_duplicated_reports_are_one_receipt(
    served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, app = served
    outbound_message(runtime)
    for _ in range(3):
        post_sinch_fixture(client, "message_delivery__delivered", change=report("DELIVERED"))
    process(app)
    with transaction(runtime.sessions) as session:
        assert len(list(session.scalars(select(DeliveryReportRow)))) == 1


def test_failed_keeps_the_reason(served: tuple[TestClient, FastAPI], runtime: Runtime) -> None:
    client, app = served
    msg_id = outbound_message(runtime)
    post_sinch_fixture(
        client,
        "message_delivery__failed",
        change=report("FAILED", "OUTSIDE_ALLOWED_SENDING_WINDOW"),
    )
    process(app)
    row = message(runtime, msg_id)
    assert (row.status, row.reason_code, row.reason_text) == (
        "FAILED",
        "OUTSIDE_ALLOWED_SENDING_WINDOW",
        "Channel says no",
    )


def test_report_before_the_send_answer_is_parked_then_applied(
    served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, app = served
    post_sinch_fixture(client, "message_delivery__delivered", change=report("DELIVERED"))
    process(app)
    msg_id = outbound_message(runtime, sinch_id=None, status="sending")
    with transaction(runtime.sessions) as session:
        row = session.get(MessageRow, msg_id)
        assert row is not None
        row.sinch_message_id = SINCH_ID  # the send answer arrives
        row.status = "accepted"
        apply_parked_reports(session, row, datetime.now(UTC))
    assert message(runtime, msg_id).status == "DELIVERED"
    with transaction(runtime.sessions) as session:
        assert all(r.applied for r in session.scalars(select(DeliveryReportRow)))


def test_switching_channel_is_recorded_but_changes_nothing(
    served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, app = served
    msg_id = outbound_message(runtime)
    post_sinch_fixture(
        client,
        "message_delivery__switching_channel",
        change=report("SWITCHING_CHANNEL", "CHANNEL_FAILURE"),
    )
    process(app)
    assert message(runtime, msg_id).status == "accepted"
    with transaction(runtime.sessions) as session:
        [stored] = session.scalars(select(DeliveryReportRow))
        assert stored.status == "SWITCHING_CHANNEL"


# --------------------------------------------------------------------------- media


def attachments(runtime: Runtime) -> list[AttachmentRow]:
    with transaction(runtime.sessions) as session:
        return list(session.scalars(select(AttachmentRow)))


def fetch_all(runtime: Runtime, handler: Any, *, rounds: int = 1) -> None:
    fetcher = MediaFetcher(runtime, transport=httpx.MockTransport(handler), base_backoff=0.0)

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            for _ in range(rounds):
                with transaction(runtime.sessions) as session:  # make every attachment due now
                    for row in session.scalars(
                        select(AttachmentRow).where(AttachmentRow.state == "pending")
                    ):
                        row.next_attempt_at = datetime.now(UTC)
                await fetcher.run_once(client)

    asyncio.run(go())


def test_media_is_downloaded_and_served(
    served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, app = served
    post_sinch_fixture(client, "message_inbound__media")
    process(app)
    [pending] = attachments(runtime)
    assert pending.state == "pending"
    fetch_all(
        runtime,
        lambda request: httpx.Response(
            200, content=b"JPEGDATA", headers={"content-type": "image/jpeg"}
        ),
    )
    [stored] = attachments(runtime)
    assert (stored.state, stored.content_type, stored.size) == ("stored", "image/jpeg", 8)
    assert attachment_path(runtime.config.data_dir, stored.token).read_bytes() == b"JPEGDATA"
    served_file = client.get(f"/sms/richcontent/{stored.token}")
    assert served_file.status_code == 200
    assert served_file.content == b"JPEGDATA"
    assert client.get("/sms/richcontent/not-a-token").status_code == 404


def test_failed_download_keeps_the_message(
    served: tuple[TestClient, FastAPI], runtime: Runtime
) -> None:
    client, app = served
    post_sinch_fixture(client, "message_inbound__media")
    process(app)
    fetch_all(runtime, lambda request: httpx.Response(404), rounds=MAX_ATTEMPTS + 1)
    [failed] = attachments(runtime)
    assert failed.state == "failed"
    assert failed.attempts == MAX_ATTEMPTS
    assert "404" in (failed.error or "")
    with transaction(runtime.sessions) as session:
        [msg] = session.scalars(select(MessageRow))
        assert msg.kind == "media"
    assert client.get(f"/sms/richcontent/{failed.token}").status_code == 404
