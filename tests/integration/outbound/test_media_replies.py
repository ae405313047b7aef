"""Media out, on SQLite and PostgreSQL: uploads checked against the chat settings, media
replies that send them through the outbox to the emulator, the public URL that serves them,
and the retention that expires them."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from convodesk.emulator.server import running_emulator
from convodesk.runtime import Runtime
from convodesk.services import attachments, configuration, replies
from convodesk.services.errors import ConflictError
from convodesk.storage.api_tokens import Principal
from convodesk.storage.attachments import attachment_path
from convodesk.storage.db import transaction
from convodesk.storage.tables import AttachmentRow, ChatSettingsRow, MessageRow, OutboxRow
from convodesk.web.app import create_app
from convodesk.web.serving import serve_in_thread
from convodesk.workers import housekeeping
from tests.integration.outbound.test_replies_e2e import (
    Stack,
    convodesk_config,
    customer_writes,
    emulator_config,
    sent_bodies,
    status_of,
    wait_for,
)
from tests.integration.test_cli import free_port
from tests.support.apps import APP_EU, client_for, make_runtime, make_token
from tests.support.factories import make_agent, make_attachment, make_conversation

PUBLIC = "https://cc.example.com"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" + bytes(500)


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    rt = make_runtime(database_url, tmp_path, public_base_url=PUBLIC)
    yield rt
    rt.close()


@dataclasses.dataclass
class Desk:
    runtime: Runtime
    agent: TestClient  # anna, in queue support
    mine: int  # a WhatsApp conversation of support, window open
    other: int  # a conversation of another queue


@pytest.fixture
def desk(runtime: Runtime) -> Iterator[Desk]:
    now = datetime.now(UTC)
    with transaction(runtime.sessions) as session:
        make_agent(session, "anna", queues=("support",))
        mine = make_conversation(session, queue="support", last_inbound_at=now).id
        other = make_conversation(session, queue="billing", last_inbound_at=now).id
    with client_for(runtime, make_token(runtime, "agent", "anna")) as agent:
        yield Desk(runtime, agent, mine, other)


def upload(
    client: TestClient | httpx.Client,
    conversation: int,
    content: bytes = PNG,
    *,
    filename: str = "photo.png",
    content_type: str | None = "image/png",
) -> httpx.Response:
    file: tuple[str, bytes] | tuple[str, bytes, str] = (
        (filename, content, content_type) if content_type else (filename, content)
    )
    return client.post(f"/api/v1/conversations/{conversation}/attachments", files={"file": file})


def set_chat_settings(runtime: Runtime, **values: Any) -> None:
    """Straight into the stored settings: the desk's queues have no addresses, which the
    configurator would refuse."""
    with transaction(runtime.sessions) as session:
        row = session.get(ChatSettingsRow, 1)
        if row is None:
            session.add(ChatSettingsRow(id=1, settings=values))
        else:
            row.settings = {**row.settings, **values}


def stored_rows(runtime: Runtime) -> list[AttachmentRow]:
    with transaction(runtime.sessions) as session:
        return list(session.scalars(select(AttachmentRow).order_by(AttachmentRow.id)))


def files_in_store(runtime: Runtime) -> list[Path]:
    root = Path(runtime.config.data_dir) / "attachments"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# ------------------------------------------------------------------------------ uploads


def test_an_upload_is_stored_and_served_by_its_token(desk: Desk) -> None:
    answer = upload(desk.agent, desk.mine, filename="../../Order photo.png")
    assert answer.status_code == 201, answer.text
    body = answer.json()
    token = body["token"]
    assert body == {
        "id": body["id"],
        "token": token,
        "url": f"/sms/richcontent/{token}",
        "content_type": "image/png",
        "size": len(PNG),
        "filename": "Order photo.png",
    }
    assert len(token) >= 32
    [row] = stored_rows(desk.runtime)
    assert (row.conversation_id, row.uploaded_by, row.message_id, row.state) == (
        desk.mine,
        "anna",
        None,
        "stored",
    )
    path = attachment_path(desk.runtime.config.data_dir, token)
    assert path.read_bytes() == PNG
    assert files_in_store(desk.runtime) == [path]  # no temporary file left behind

    with client_for(desk.runtime) as anonymous:  # public: no login
        served = anonymous.get(body["url"])
        head = anonymous.head(body["url"])
    assert served.status_code == 200
    assert served.content == PNG
    assert served.headers["content-type"] == "image/png"
    assert served.headers["content-disposition"] == "inline; filename*=utf-8''Order%20photo.png"
    assert served.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in served.headers["content-security-policy"]
    cache = served.headers["cache-control"]
    assert cache.startswith("public, max-age=")
    assert 0 < int(cache.rsplit("=", 1)[1]) <= 86400
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == str(len(PNG))


def test_an_admin_may_upload_too_and_a_pdf_is_served_as_a_download(
    runtime: Runtime, desk: Desk
) -> None:
    pdf = b"%PDF-1.7\n" + bytes(300)
    with client_for(runtime, make_token(runtime)) as admin:
        # No extension: the client declares application/octet-stream; the content decides.
        answer = upload(admin, desk.other, pdf, filename="invoice", content_type=None)
        assert answer.status_code == 201, answer.text
        assert answer.json()["content_type"] == "application/pdf"
        served = admin.get(answer.json()["url"])
    assert served.headers["content-disposition"] == 'attachment; filename="invoice"'
    assert stored_rows(runtime)[0].uploaded_by == "admin"


def test_a_file_over_the_limit_is_refused_with_413_and_nothing_kept(desk: Desk) -> None:
    set_chat_settings(desk.runtime, attachment_max_bytes=len(PNG))
    assert upload(desk.agent, desk.mine, PNG).status_code == 201  # exactly the limit
    answer = upload(desk.agent, desk.mine, PNG + b"!")
    assert answer.status_code == 413
    error = answer.json()
    assert error["error"]["code"] == "payload_too_large"
    assert str(len(PNG)) in error["error"]["message"]
    assert error["max_bytes"] == len(PNG)
    assert len(stored_rows(desk.runtime)) == 1
    assert len(files_in_store(desk.runtime)) == 1


def test_a_type_not_allowed_is_refused_with_415_naming_the_allowed_types(desk: Desk) -> None:
    set_chat_settings(desk.runtime, attachment_types=["image/jpeg", "application/pdf"])
    answer = upload(desk.agent, desk.mine, PNG)
    assert answer.status_code == 415
    error = answer.json()
    assert error["error"]["code"] == "unsupported_media_type"
    assert "image/png are not allowed" in error["error"]["message"]
    assert "allowed types: image/jpeg, application/pdf" in error["error"]["message"]
    assert error["allowed"] == ["image/jpeg", "application/pdf"]
    assert stored_rows(desk.runtime) == []
    assert files_in_store(desk.runtime) == []


def test_a_program_declared_as_an_image_is_refused(desk: Desk) -> None:
    answer = upload(desk.agent, desk.mine, EXE, filename="cute-cat.png")
    assert answer.status_code == 415
    assert (
        "declared image/png but its content is application/x-msdownload"
        in (answer.json()["error"]["message"])
    )
    octet = upload(desk.agent, desk.mine, EXE, filename="setup.exe", content_type=None)
    assert octet.status_code == 415
    assert stored_rows(desk.runtime) == []
    assert files_in_store(desk.runtime) == []


def test_uploads_need_a_visible_open_conversation_and_a_multipart_body(
    runtime: Runtime, desk: Desk
) -> None:
    assert upload(desk.agent, desk.other).status_code == 404  # another queue's conversation
    assert upload(desk.agent, 999_999).status_code == 404
    with client_for(runtime) as anonymous:
        assert upload(anonymous, desk.mine).status_code == 401
    not_multipart = desk.agent.post(
        f"/api/v1/conversations/{desk.mine}/attachments",
        content=PNG,
        headers={"content-type": "image/png"},
    )
    assert not_multipart.status_code == 415
    assert "multipart/form-data" in not_multipart.json()["error"]["message"]
    wrong_field = desk.agent.post(
        f"/api/v1/conversations/{desk.mine}/attachments", files={"upload": ("a.png", PNG)}
    )
    assert wrong_field.status_code == 422
    assert wrong_field.json()["errors"][0]["path"] == "file"
    with transaction(runtime.sessions) as session:
        closed = make_conversation(session, queue="support", status="closed").id
    assert upload(desk.agent, closed).status_code == 409
    assert stored_rows(runtime) == []


def test_a_declared_length_over_the_limit_is_refused_before_reading(desk: Desk) -> None:
    """Through the ASGI interface, counting what the app takes from the body stream."""
    set_chat_settings(desk.runtime, attachment_max_bytes=100_000)
    token = make_token(desk.runtime, "agent", "anna")
    app = create_app(desk.runtime)
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    taken: list[int] = []

    async def body(size: int) -> AsyncIterator[bytes]:
        yield head + PNG
        for _ in range(size // 8192):
            taken.append(1)
            yield bytes(8192)
        yield f"\r\n--{boundary}--\r\n".encode()

    async def send(size: int, declared: int | None) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        }
        if declared is not None:
            headers["Content-Length"] = str(declared)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(
                f"/api/v1/conversations/{desk.mine}/attachments",
                content=body(size),
                headers=headers,
            )

    declared = asyncio.run(send(8 * 1024 * 1024, 8 * 1024 * 1024))
    assert declared.status_code == 413
    assert "the request is 8388608 bytes" in declared.json()["error"]["message"]
    assert declared.headers["connection"] == "close"
    assert taken == []  # not a byte of the file was read

    chunked = asyncio.run(send(8 * 1024 * 1024, None))  # no length: stopped past the limit
    assert chunked.status_code == 413
    assert 100_000 // 8192 <= len(taken) <= 100_000 // 8192 + 2
    assert files_in_store(desk.runtime) == []


# ------------------------------------------------------------------------ media replies


def test_a_media_reply_links_its_upload_and_shows_it_in_the_transcript(desk: Desk) -> None:
    uploaded = upload(desk.agent, desk.mine, filename="receipt.png").json()
    reply = desk.agent.post(
        f"/api/v1/conversations/{desk.mine}/messages", json={"attachment": uploaded["token"]}
    )
    assert reply.status_code == 202, reply.text
    message = reply.json()
    assert (message["kind"], message["text"], message["status"]) == ("media", None, "pending")
    assert message["content"] == {
        "attachment": {
            "id": uploaded["id"],
            "token": uploaded["token"],
            "filename": "receipt.png",
            "content_type": "image/png",
            "size": len(PNG),
        }
    }
    expected = [
        {
            "id": uploaded["id"],
            "state": "stored",
            "content_type": "image/png",
            "size": len(PNG),
            "filename": "receipt.png",
            "url": uploaded["url"],
        }
    ]
    assert message["attachments"] == expected
    transcript = desk.agent.get(f"/api/v1/conversations/{desk.mine}/messages").json()["items"]
    assert [(m["id"], m["attachments"]) for m in transcript] == [(message["id"], expected)]
    with transaction(desk.runtime.sessions) as session:
        row = session.get(AttachmentRow, uploaded["id"])
        assert row is not None
        assert row.message_id == message["id"]
        assert session.scalar(select(OutboxRow.state)) == "pending"

    again = desk.agent.post(
        f"/api/v1/conversations/{desk.mine}/messages", json={"attachment": uploaded["token"]}
    )
    assert again.status_code == 409
    assert f"already sent by message {message['id']}" in again.json()["error"]["message"]


def test_an_idempotent_retry_of_a_media_reply_answers_the_same_message(desk: Desk) -> None:
    token = upload(desk.agent, desk.mine).json()["token"]
    path = f"/api/v1/conversations/{desk.mine}/messages"
    headers = {"Idempotency-Key": "media-1"}
    first = desk.agent.post(path, json={"attachment": token}, headers=headers)
    second = desk.agent.post(path, json={"attachment": token}, headers=headers)
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json() == second.json()


def test_two_replies_racing_for_one_upload_send_it_once(desk: Desk) -> None:
    token = upload(desk.agent, desk.mine).json()["token"]
    principal = Principal(token_id=1, role="admin", agent_login=None)
    start = threading.Barrier(4)

    def reply(_: int) -> str:
        start.wait()
        try:
            replies.send_agent_reply(desk.runtime, desk.mine, principal, {"attachment": token})
        except ConflictError as exc:
            return str(exc)
        return "sent"

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(reply, range(4)))
    assert outcomes.count("sent") == 1, outcomes
    assert all(o == "sent" or "already sent by message" in o for o in outcomes), outcomes
    with transaction(desk.runtime.sessions) as session:
        assert len(session.scalars(select(MessageRow)).all()) == 1
        assert len(session.scalars(select(OutboxRow)).all()) == 1


def test_media_replies_refuse_tokens_that_are_not_uploads_of_this_conversation(
    runtime: Runtime, desk: Desk
) -> None:
    with client_for(runtime, make_token(runtime)) as admin:
        elsewhere = upload(admin, desk.other).json()["token"]
    path = f"/api/v1/conversations/{desk.mine}/messages"

    def refused(body: dict[str, Any], status: int, fragment: str) -> None:
        answer = desk.agent.post(path, json=body)
        assert answer.status_code == status, answer.text
        assert fragment in answer.text

    refused({"attachment": elsewhere}, 422, "belongs to another conversation")
    refused({"attachment": "no-such-token"}, 422, "no upload with this token")
    refused({"attachment": ""}, 422, "expected the token of an upload")
    refused({"attachment": 42}, 422, "expected the token of an upload")
    refused({"attachment": "x" * 65}, 422, "expected the token of an upload")
    refused({"attachment": elsewhere, "text": "hi"}, 422, "exactly one of text, template or")
    with transaction(runtime.sessions) as session:
        assert session.scalars(select(MessageRow)).all() == []
        assert session.scalars(select(AttachmentRow.message_id)).all() == [None]


def test_an_expired_upload_cannot_be_sent(desk: Desk) -> None:
    token = upload(desk.agent, desk.mine).json()["token"]
    with transaction(desk.runtime.sessions) as session:
        row = session.scalars(select(AttachmentRow)).one()
        row.created_at = datetime.now(UTC) - timedelta(days=40)
    result = attachments.cleanup_attachments(desk.runtime, unused_after=timedelta(days=365))
    assert result.expired == 1
    answer = desk.agent.post(
        f"/api/v1/conversations/{desk.mine}/messages", json={"attachment": token}
    )
    assert answer.status_code == 409
    assert "expired" in answer.json()["error"]["message"]


def test_media_replies_need_a_public_url(database_url: str, tmp_path: Path) -> None:
    runtime = make_runtime(database_url, tmp_path)  # no public_base_url
    try:
        with transaction(runtime.sessions) as session:
            conversation = make_conversation(session, channel="SMS", identity="12025550100").id
        with client_for(runtime, make_token(runtime)) as admin:
            token = upload(admin, conversation).json()["token"]
            path = f"/api/v1/conversations/{conversation}/messages"
            answer = admin.post(path, json={"attachment": token})
            assert answer.status_code == 409
            message = answer.json()["error"]["message"]
            assert "chat_settings.attachment_base_url or public_base_url" in message
            configuration.replace_chat_settings(
                runtime, {"attachment_base_url": "https://media.example.com"}
            )
            assert admin.post(path, json={"attachment": token}).status_code == 202
    finally:
        runtime.close()


# ------------------------------------------------------------ end to end, via the emulator


@pytest.fixture
def stack(database_url: str, tmp_path: Path) -> Iterator[Stack]:
    port = free_port()
    emulator_url = f"http://127.0.0.1:{port}"
    runtime = make_runtime(
        database_url,
        tmp_path,
        allow_custom_endpoints=True,
        oauth_token_url=f"{emulator_url}/oauth2/token",
        send_rate_per_app=1000,
        send_rate_per_project=5000,
    )
    try:
        app = create_app(runtime, workers=True)
        with serve_in_thread(app, name="convodesk") as app_url:
            raw = convodesk_config(emulator_url)
            # The emulator fetches media URLs as Sinch does: point them at this server.
            raw["chat_settings"] = {"attachment_base_url": app_url}
            configuration.apply_config(runtime, raw)
            app.state.directory.invalidate()
            token = make_token(runtime)
            with (
                running_emulator(emulator_config(app_url), port=port),
                httpx.Client(base_url=app_url, headers={"Authorization": f"Bearer {token}"}) as api,
                httpx.Client(base_url=emulator_url) as emulator,
            ):
                yield Stack(runtime, api, emulator, app)
    finally:
        runtime.close()


def test_a_media_reply_reaches_sinch_with_our_public_url_and_expires(stack: Stack) -> None:
    conversation = customer_writes(stack, APP_EU, "WHATSAPP", "46701000077")
    uploaded = upload(stack.api, conversation, filename="Kvitto åäö.png")
    assert uploaded.status_code == 201, uploaded.text
    token = uploaded.json()["token"]
    reply = stack.api.post(
        f"/api/v1/conversations/{conversation}/messages", json={"attachment": token}
    )
    assert reply.status_code == 202, reply.text
    message_id = reply.json()["id"]
    # READ means the emulator fetched the URL (else FAILED with MEDIA_NOT_REACHABLE).
    wait_for(lambda: status_of(stack, message_id) == "READ")
    [sent] = sent_bodies(stack, "46701000077")
    base = str(stack.api.base_url).rstrip("/")
    assert sent["message"] == {
        "media_message": {
            "url": f"{base}/sms/richcontent/{token}",
            "filename_override": "Kvitto åäö.png",
        }
    }
    served = httpx.get(f"{base}/sms/richcontent/{token}")
    assert (served.status_code, served.content) == (200, PNG)
    assert served.headers["content-disposition"] == (
        "inline; filename*=utf-8''Kvitto%20%C3%A5%C3%A4%C3%B6.png"
    )

    # Past the retention the URL answers 410 at once; the cleanup then deletes the file.
    with transaction(stack.runtime.sessions) as session:
        row = session.scalars(select(AttachmentRow).where(AttachmentRow.token == token)).one()
        row.created_at = datetime.now(UTC) - timedelta(days=31)
    assert httpx.get(f"{base}/sms/richcontent/{token}").status_code == 410
    asyncio.run(housekeeping.run_once(stack.runtime))
    assert not attachment_path(stack.runtime.config.data_dir, token).exists()
    gone = httpx.get(f"{base}/sms/richcontent/{token}")
    assert gone.status_code == 410
    assert gone.headers["cache-control"] == "no-store"
    transcript = stack.api.get(f"/api/v1/conversations/{conversation}/messages").json()
    [media] = [m for m in transcript["items"] if m["id"] == message_id]
    assert [(a["state"], a["url"], a["filename"]) for a in media["attachments"]] == [
        ("expired", None, "Kvitto åäö.png")
    ]


# ---------------------------------------------------------------------------- retention


def test_cleanup_expires_old_files_and_deletes_unused_uploads(desk: Desk) -> None:
    runtime = desk.runtime
    set_chat_settings(runtime, attachment_retention_days=7)
    tokens = [upload(desk.agent, desk.mine).json()["token"] for _ in range(4)]
    sent_old, sent_new, unused_old, unused_new = tokens
    for token in (sent_old, sent_new):
        answer = desk.agent.post(
            f"/api/v1/conversations/{desk.mine}/messages", json={"attachment": token}
        )
        assert answer.status_code == 202
    now = datetime.now(UTC)
    ages = {sent_old: timedelta(days=8), unused_old: timedelta(hours=25)}
    with transaction(runtime.sessions) as session:
        for row in session.scalars(select(AttachmentRow)):
            row.created_at = now - ages.get(row.token, timedelta(hours=1))

    result = attachments.cleanup_attachments(runtime, now=now, batch=1)  # batches of one
    assert (result.expired, result.unused_deleted, result.retention_days) == (1, 1, 7)
    rows = {row.token: row for row in stored_rows(runtime)}
    assert set(rows) == {sent_old, sent_new, unused_new}
    assert (rows[sent_old].state, rows[sent_old].path) == ("expired", None)
    assert rows[sent_new].state == rows[unused_new].state == "stored"
    store = runtime.config.data_dir
    assert not attachment_path(store, sent_old).exists()
    assert not attachment_path(store, unused_old).exists()
    assert attachment_path(store, sent_new).exists()
    assert attachment_path(store, unused_new).exists()
    with client_for(runtime) as anonymous:
        assert anonymous.get(f"/sms/richcontent/{sent_old}").status_code == 410
        assert anonymous.get(f"/sms/richcontent/{unused_old}").status_code == 404
        assert anonymous.get(f"/sms/richcontent/{sent_new}").status_code == 200
        assert anonymous.get("/sms/richcontent/" + "x" * 200).status_code == 404

    again = attachments.cleanup_attachments(runtime, now=now)
    assert (again.expired, again.unused_deleted) == (0, 0)  # idempotent


def test_cleanup_expires_inbound_media_too_and_tolerates_a_missing_file(
    runtime: Runtime,
) -> None:
    now = datetime.now(UTC)
    with transaction(runtime.sessions) as session:
        old = make_attachment(session, created_at=now - timedelta(days=31))
        pending = make_attachment(session, state="pending", created_at=now - timedelta(days=31))
        ids = (old.id, pending.id)
    result = attachments.cleanup_attachments(runtime, now=now)
    assert (result.expired, result.unused_deleted) == (1, 0)
    with transaction(runtime.sessions) as session:
        states = [session.get(AttachmentRow, i).state for i in ids]  # type: ignore[union-attr]
    assert states == ["expired", "pending"]
