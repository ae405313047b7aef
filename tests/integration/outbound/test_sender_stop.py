"""A stopping sender finishes the sends on their way to Sinch and gives the others back."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import select

from convodesk.services import configuration
from convodesk.services.directory import DirectoryCache
from convodesk.storage.db import transaction
from convodesk.storage.tables import MessageRow, OutboxRow
from convodesk.workers.sender import Sender
from tests.integration.outbound.test_replies_e2e import convodesk_config
from tests.support.apps import make_runtime
from tests.support.factories import make_conversation, make_message

REPLIES = 6


class FakeSinch(httpx.AsyncBaseTransport):
    """Tokens and accepted sends, each send answered after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sends: list[str] = []
        self.first_send = threading.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/oauth2/token"):
            body = {"access_token": "token", "expires_in": 3600, "token_type": "bearer"}
            return httpx.Response(200, json=body)
        self.sends.append(json.loads(request.content)["message_metadata"])
        self.first_send.set()
        await asyncio.sleep(self.delay)
        n = len(self.sends)
        return httpx.Response(200, json={"message_id": f"01SINCHMESSAGE{n:012d}"})


def test_stop_finishes_sends_in_flight_and_releases_the_waiting_ones(
    database_url: str, tmp_path: Path
) -> None:
    url = "http://sinch.invalid"
    runtime = make_runtime(
        database_url,
        tmp_path,
        allow_custom_endpoints=True,
        oauth_token_url=f"{url}/oauth2/token",
        send_rate_per_app=1,  # one send a second: the others wait for their slots
    )
    try:
        configuration.apply_config(runtime, convodesk_config(url))
        with transaction(runtime.sessions) as session:
            conversation = make_conversation(session)
            for n in range(REPLIES):
                message = make_message(
                    session,
                    conversation,
                    direction="outbound",
                    sinch_message_id=None,
                    status="pending",
                    text=f"Reply {n}",
                )
                session.add(OutboxRow(message_id=message.id, state="pending", attempts=0))
        sinch = FakeSinch(delay=0.3)
        sender = Sender(runtime, DirectoryCache(runtime), transport=sinch)

        async def main() -> None:
            stop = asyncio.Event()
            running = asyncio.create_task(sender.run(stop))
            await asyncio.to_thread(sinch.first_send.wait, 10)
            stop.set()  # while the first send waits for Sinch's answer
            await asyncio.wait_for(running, 10)

        asyncio.run(main())
        with transaction(runtime.sessions) as session:
            rows = session.execute(select(OutboxRow.state, OutboxRow.attempts)).all()
            sent = session.scalars(
                select(MessageRow.sinch_message_id).where(MessageRow.sinch_message_id.is_not(None))
            ).all()
    finally:
        runtime.close()
    assert len(sinch.sends) == 1
    assert Counter(rows) == {("done", 1): 1, ("pending", 0): REPLIES - 1}
    assert sent == ["01SINCHMESSAGE000000000001"]
