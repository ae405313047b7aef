"""`serve --intake-port`: the callbacks in a child process (`web.intake_process`).

The child stores callbacks with the same checks and answers as `serve`, wakes the
processor of its parent, is started again when it dies, refuses to start on a taken port,
stops with its parent (SIGTERM, and SIGKILL of the parent too), and gets its settings
without putting secrets on its command line or in its environment."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from convodesk.runtime import Runtime
from convodesk.storage import db
from convodesk.storage.tables import ConversationRow, EventRow
from convodesk.web.intake_process import IntakeProcess, IntakeProcessError
from tests.integration.test_cli import free_port
from tests.reliability.test_intake_crash import Node, wait_for
from tests.support.apps import TEST_SECRET_KEY
from tests.support.factories import inbound_body
from tests.support.intake import WEBHOOK_SECRET, configured_runtime, intake_config, signed_post


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[Runtime]:
    runtime = configured_runtime(database_url, tmp_path / "data")
    try:
        yield runtime
    finally:
        runtime.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "State:\tZ" in status.read_text())


def _post(port: int, body: bytes, secret: str = WEBHOOK_SECRET) -> httpx.Response:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        return signed_post(client, body, secret=secret)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _events(runtime: Runtime) -> list[tuple[str, str | None]]:
    with db.read_transaction(runtime.sessions) as session:
        rows = session.execute(select(EventRow.outcome, EventRow.state).order_by(EventRow.id))
        return [(outcome, state) for outcome, state in rows]


def test_the_child_stores_callbacks_and_wakes_the_processor(runtime: Runtime) -> None:
    port = free_port()

    stopped: list[int | None] = []

    async def scenario() -> tuple[int, list[int], int]:
        woken = asyncio.Event()
        intake = IntakeProcess(runtime, host="127.0.0.1", port=port, on_wake=woken.set)
        await intake.start()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                forged = await asyncio.to_thread(
                    _post,
                    port,
                    inbound_body(),
                    secret="not-the-secret",
                )
                await asyncio.sleep(0.3)
                assert not woken.is_set()  # a rejected callback wakes nobody
                answers = [
                    await asyncio.to_thread(
                        _post,
                        port,
                        inbound_body(identity="46700000001"),
                    )
                    for _ in range(2)
                ]
                await asyncio.wait_for(woken.wait(), 10)
                health = await client.get("/readyz")
                metrics = await client.get("/metrics")
            assert health.status_code == 200
            assert "convodesk_callbacks_total" in metrics.text
            pid = intake.pid
            assert pid is not None
            return forged.status_code, [a.status_code for a in answers], pid
        finally:
            await intake.stop()
            stopped.append(intake.returncode)

    forged, answers, pid = asyncio.run(scenario())
    assert forged == 401
    assert answers == [200, 200]
    # Stored by the child (the same Intake): one rejection, then the message, pending for
    # the parent's processor.
    assert _events(runtime) == [
        ("rejected", "none"),
        ("accepted", "pending"),
        ("accepted", "pending"),
    ]
    assert not _alive(pid)


def test_a_child_that_dies_is_started_again(runtime: Runtime) -> None:
    port = free_port()

    async def scenario() -> tuple[int, int, int]:
        intake = IntakeProcess(runtime, host="127.0.0.1", port=port, on_wake=lambda: None)
        await intake.start()
        try:
            first = intake.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            for _ in range(600):  # started again after a second, then listening
                if intake.starts == 2 and intake.pid != first and _listening(port):
                    break
                await asyncio.sleep(0.05)
            second = intake.pid
            assert second is not None
            assert second != first
            answer = await asyncio.to_thread(_post, port, inbound_body())
            return first, second, answer.status_code
        finally:
            await intake.stop()

    first, second, status = asyncio.run(scenario())
    assert status == 200
    assert not _alive(first)
    assert not _alive(second)


def test_a_taken_port_fails_the_start_with_the_port_named(runtime: Runtime) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def scenario() -> None:
            intake = IntakeProcess(runtime, host="127.0.0.1", port=port, on_wake=lambda: None)
            try:
                await intake.start()
            finally:
                await intake.stop()

        with pytest.raises(IntakeProcessError, match=f"port {port}"):
            asyncio.run(scenario())


# --------------------------------------------------------------------------- serve itself


class Serve(Node):
    """`convodesk serve --intake-port` as users run it, on a configured database."""

    intake_port: int  # always given here

    def __init__(self, tmp_path: Path, database_url: str) -> None:
        raw = {**intake_config(), "database_url": database_url, "data_dir": str(tmp_path / "d")}
        config = tmp_path / "convodesk.yaml"
        config.write_text(yaml.safe_dump(raw))
        self.env = {**os.environ, "CONVODESK_SECRET_KEY": TEST_SECRET_KEY}
        applied = subprocess.run(
            [sys.executable, "-m", "convodesk", "config", "apply", str(config)],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
        )
        assert applied.returncode == 0, applied.stdout + applied.stderr
        super().__init__(config, free_port(), tmp_path / "serve.log", intake_port=free_port())

    def child(self) -> int:
        assert self.proc is not None
        children = [
            int(pid)
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir()
            for pid in (task / "children").read_text().split()
        ]
        assert len(children) == 1, children
        return children[0]


@pytest.fixture
def serve(tmp_path: Path, database_url: str) -> Iterator[Serve]:
    node = Serve(tmp_path, database_url)
    node.start()
    try:
        yield node
    finally:
        node.stop()


@pytest.mark.slow
def test_serve_threads_what_its_intake_process_stores_and_stops_it(
    serve: Serve, database_url: str
) -> None:
    child = serve.child()
    with httpx.Client(base_url=f"http://127.0.0.1:{serve.intake_port}") as client:
        answer = signed_post(client, inbound_body(identity="46709999999"))
    assert answer.status_code == 200
    engine = db.create_db_engine(database_url)
    try:

        def threaded() -> bool:
            with engine.connect() as conn:
                return bool(conn.scalar(select(func.count()).select_from(ConversationRow)))

        wait_for(threaded, 30, "the parent's processor never threaded the callback")
    finally:
        engine.dispose()
    # No secret on the child's command line or in its environment.
    cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
    environ = Path(f"/proc/{child}/environ").read_bytes()
    for secret in (TEST_SECRET_KEY.encode(), WEBHOOK_SECRET.encode()):
        assert secret not in cmdline
        assert secret not in environ
    assert serve.proc is not None
    serve.proc.send_signal(signal.SIGTERM)
    assert serve.proc.wait(timeout=30) == 0
    wait_for(lambda: not _alive(child), 10, "the intake process outlived serve")


@pytest.mark.slow
def test_the_intake_process_stops_when_serve_is_killed(serve: Serve) -> None:
    child = serve.child()
    assert serve.proc is not None
    serve.proc.send_signal(signal.SIGKILL)
    serve.proc.wait(timeout=30)
    wait_for(lambda: not _alive(child), 20, "the intake process outlived a killed serve")


@pytest.mark.slow
def test_serve_does_not_start_when_its_intake_port_is_taken(
    tmp_path: Path, database_url: str
) -> None:
    node = Serve(tmp_path, database_url)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", node.intake_port))
        taken.listen()
        done = subprocess.run(
            node.command(),
            capture_output=True,
            text=True,
            env=node.env,
            timeout=90,
        )
    assert done.returncode != 0
    assert f"port {node.intake_port}" in done.stdout + done.stderr


@pytest.mark.slow
def test_sigterm_to_both_at_once_stops_both_without_a_restart(serve: Serve) -> None:
    """systemd's default (`KillMode=control-group`) signals every process of the unit."""
    child = serve.child()
    assert serve.proc is not None
    os.kill(child, signal.SIGTERM)
    serve.proc.send_signal(signal.SIGTERM)
    assert serve.proc.wait(timeout=30) == 0
    wait_for(lambda: not _alive(child), 10, "the intake process outlived serve")
    assert not _listening(serve.intake_port)
    assert "starting it again" not in serve.log.read_text()
