"""`db._WriteLock`: SQLite write transactions take turns through a lock of their own.

A write transaction (``BEGIN IMMEDIATE``: `db.transaction`, ``engine.begin()``) holds a
thread lock and an ``flock`` on ``<database>-writelock`` from its BEGIN until it commits,
rolls back or its connection closes; a read transaction (`db.read_transaction`) takes
neither, and an in-memory database has no lock file. Tested here: who holds the lock file
when, that a writer waits for the lock file held elsewhere, and that writers in one process
and in two processes take turns without ever meeting SQLite's own lock. For the last, some
tests switch SQLite's busy wait off (``PRAGMA busy_timeout=0``): a writer that meets another
writer's SQLite lock then fails at once with "database is locked" instead of sleeping in the
busy handler, so only the write lock can keep them apart.
"""

from __future__ import annotations

import fcntl
import functools
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, insert, select
from sqlalchemy.exc import OperationalError

from convodesk.storage import db, migrate
from convodesk.storage.tables import QueueRow

WAIT_SECONDS = 10  # generous: the machine is shared


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'x.db'}"


@pytest.fixture
def lock_path(tmp_path: Path) -> Path:
    return tmp_path / "x.db-writelock"


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    """A migrated SQLite database (the migration's writes create the lock file)."""
    eng = db.create_db_engine(url)
    migrate.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def lock_fd(engine: Engine, lock_path: Path) -> Iterator[int]:
    """The lock file opened by the test: an open file description of its own, so its
    ``flock`` contends with the engine's as another process's would."""
    fd = os.open(lock_path, os.O_RDWR)
    yield fd
    os.close(fd)


def no_busy_wait(engine: Engine) -> None:
    """Switch SQLite's busy wait off on the engine's new connections (closing its pooled ones)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")

    engine.dispose()


def is_free(fd: int) -> bool:
    """Whether the lock file can be locked now (it is unlocked again at once)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def queue_names(engine: Engine) -> list[str]:
    with db.read_transaction(db.make_session_factory(engine)) as session:
        return sorted(session.scalars(select(QueueRow.name)).all())


class Background:
    """A function run in a thread; `done` is set when it has returned or raised."""

    def __init__(self, target: Callable[[], None]) -> None:
        self.done = threading.Event()
        self.errors: list[BaseException] = []

        def run() -> None:
            try:
                target()
            except BaseException as exc:  # reported by the test
                self.errors.append(exc)
            finally:
                self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def finish(self) -> None:
        assert self.done.wait(WAIT_SECONDS), "the thread did not finish"
        self.thread.join(WAIT_SECONDS)
        assert self.errors == []


def write_queue(engine: Engine, name: str) -> None:
    with db.transaction(db.make_session_factory(engine)) as session:
        session.add(QueueRow(name=name, type="chat"))


@contextmanager
def session_write(engine: Engine) -> Iterator[None]:
    with db.transaction(db.make_session_factory(engine)) as session:
        session.add(QueueRow(name="support", type="chat"))
        session.flush()  # the session's transaction begins with its first statement
        yield


@contextmanager
def engine_begin_write(engine: Engine) -> Iterator[None]:
    with engine.begin() as conn:
        conn.execute(insert(QueueRow).values(name="support", type="chat"))
        yield


WRITES: dict[str, Callable[[Engine], AbstractContextManager[None]]] = {
    "db.transaction": session_write,
    "engine.begin": engine_begin_write,
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_a_write_transaction_holds_the_lock_file_until_it_commits(
    engine: Engine,
    lock_fd: int,
    write: Callable[[Engine], AbstractContextManager[None]],
) -> None:
    assert is_free(lock_fd)
    with write(engine):
        assert not is_free(lock_fd)
    assert is_free(lock_fd)
    assert queue_names(engine) == ["support"]


def test_a_write_transaction_rolled_back_by_an_error_releases_the_lock_file(
    engine: Engine, lock_fd: int
) -> None:
    def fail() -> None:
        with session_write(engine):
            assert not is_free(lock_fd)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail()
    assert is_free(lock_fd)
    assert queue_names(engine) == []
    write_queue(engine, "sales")  # the thread lock was let go as well
    assert queue_names(engine) == ["sales"]


def test_closing_the_connection_of_an_open_write_transaction_releases_the_lock_file(
    engine: Engine, lock_fd: int
) -> None:
    conn = engine.connect()
    try:
        conn.begin()
        conn.execute(insert(QueueRow).values(name="support", type="chat"))
        assert not is_free(lock_fd)
        conn.invalidate()  # closes the DBAPI connection
        assert is_free(lock_fd)
    finally:
        conn.close()
    assert queue_names(engine) == []
    write_queue(engine, "sales")
    assert queue_names(engine) == ["sales"]


def test_a_read_transaction_does_not_take_the_lock_file(engine: Engine, lock_fd: int) -> None:
    write_queue(engine, "support")
    sessions = db.make_session_factory(engine)
    with db.read_transaction(sessions) as session:
        assert session.scalars(select(QueueRow.name)).all() == ["support"]
        assert is_free(lock_fd)

    names: list[str] = []

    def read() -> None:
        with db.read_transaction(sessions) as session:
            names.extend(session.scalars(select(QueueRow.name)).all())

    fcntl.flock(lock_fd, fcntl.LOCK_EX)  # a writer elsewhere: readers do not wait for it
    try:
        Background(read).finish()
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
    assert names == ["support"]


def test_a_writer_waits_for_the_lock_file_held_elsewhere_and_goes_on_when_it_is_let_go(
    engine: Engine, lock_fd: int
) -> None:
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        writer = Background(lambda: write_queue(engine, "waited"))
        assert not writer.done.wait(0.3), writer.errors
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
    writer.finish()
    assert queue_names(engine) == ["waited"]


def test_a_second_writer_in_the_process_waits_for_the_first_to_commit(
    engine: Engine, lock_fd: int
) -> None:
    no_busy_wait(engine)  # without the thread lock, the second writer would fail at once
    with session_write(engine):
        writer = Background(lambda: write_queue(engine, "second"))
        assert not writer.done.wait(0.3), writer.errors
    writer.finish()
    assert queue_names(engine) == ["second", "support"]
    assert is_free(lock_fd)


def test_writers_in_two_threads_take_turns(engine: Engine, lock_fd: int) -> None:
    no_busy_wait(engine)
    held: list[bool] = []

    def hammer(prefix: str) -> None:
        sessions = db.make_session_factory(engine)
        for i in range(200):
            with db.transaction(sessions) as session:
                session.add(QueueRow(name=f"{prefix}-{i}", type="chat"))
                session.flush()
                held.append(not is_free(lock_fd))

    writers = [Background(functools.partial(hammer, prefix)) for prefix in ("a", "b")]
    for writer in writers:
        writer.finish()
    assert held == [True] * 400
    expected = sorted(f"{prefix}-{i}" for prefix in ("a", "b") for i in range(200))
    assert queue_names(engine) == expected
    assert is_free(lock_fd)


CHILD = """
import sys

from sqlalchemy import event

from convodesk.storage import db
from convodesk.storage.tables import QueueRow

url, prefix, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
engine = db.create_db_engine(url)


@event.listens_for(engine, "connect")
def _no_busy_wait(dbapi_connection, _record):
    dbapi_connection.execute("PRAGMA busy_timeout=0")


with engine.connect():  # connected before the start
    pass
sessions = db.make_session_factory(engine)
print("ready", flush=True)
sys.stdin.readline()
for i in range(count):
    with db.transaction(sessions) as session:
        session.add(QueueRow(name=f"{prefix}-{i}", type="chat"))
engine.dispose()
"""


def test_writers_in_two_processes_take_turns(
    engine: Engine, url: str, lock_fd: int, tmp_path: Path
) -> None:
    count = 150
    with ExitStack() as stack:
        children = [
            stack.enter_context(
                subprocess.Popen(
                    [sys.executable, "-c", CHILD, url, prefix, str(count)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    cwd=tmp_path,
                )
            )
            for prefix in ("a", "b")
        ]
        try:
            for child in children:  # both imported and connected ...
                assert child.stdout is not None
                assert child.stdout.readline() == "ready\n", child.communicate()[1]
            for child in children:  # ... then they start together
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            results = [child.communicate(timeout=60) for child in children]
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
    for child, (_out, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err
        assert err == ""
    expected = sorted(f"{prefix}-{i}" for prefix in ("a", "b") for i in range(count))
    assert queue_names(engine) == expected
    assert is_free(lock_fd)


def test_a_write_transaction_whose_begin_fails_does_not_keep_the_lock(
    engine: Engine, url: str, lock_fd: int
) -> None:
    """Another program holds SQLite's write lock without taking ours: BEGIN IMMEDIATE
    fails ("database is locked", the busy wait switched off), and lets our lock go."""
    no_busy_wait(engine)
    other = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="database is locked"):
            write_queue(engine, "refused")
        assert is_free(lock_fd)
        other.execute("ROLLBACK")
    finally:
        other.close()
    Background(lambda: write_queue(engine, "next")).finish()  # the thread lock is free too
    assert queue_names(engine) == ["next"]


@pytest.mark.parametrize("memory_url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_database_writes_without_a_lock_file(
    memory_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Set up as `db.create_db_engine` sets up a file's engine: that function itself refuses
    # in-memory URLs (its pool_size/max_overflow do not fit their SingletonThreadPool).
    monkeypatch.chdir(tmp_path)
    eng = create_engine(memory_url, connect_args={"check_same_thread": False})
    db._configure_sqlite(eng, "NORMAL")
    try:
        migrate.upgrade(eng)
        write_queue(eng, "support")
        with eng.begin() as conn:
            conn.execute(insert(QueueRow).values(name="sales", type="chat"))
        assert queue_names(eng) == ["sales", "support"]
    finally:
        eng.dispose()
    assert list(tmp_path.iterdir()) == []  # no "None-writelock", no ":memory:-writelock"
