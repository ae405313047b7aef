"""Engine and session factory for SQLite (the embedded default) and PostgreSQL.

SQLite runs in WAL mode with ``synchronous=NORMAL`` by default: a committed transaction
survives a crash of the process, and after a power loss the last transactions before the
loss may roll back (docs/architecture/durability.md). ``sqlite_synchronous: FULL`` in the
config trades write speed for durability across power loss as well.

PostgreSQL URLs (``postgresql://``) are served by psycopg 3.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
SQLITE_BUSY_SECONDS = 30
# The longest pause between two tries for another process's write lock (`_WriteLock`).
FILE_LOCK_POLL_SECONDS = 0.001


def normalize_url(database_url: str) -> URL:
    """Map the user-facing URL forms onto SQLAlchemy drivers."""
    url = make_url(database_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def is_sqlite(engine_or_url: Engine | URL) -> bool:
    url = engine_or_url.url if isinstance(engine_or_url, Engine) else engine_or_url
    return url.get_backend_name() == "sqlite"


def create_db_engine(database_url: str, *, sqlite_synchronous: str = "NORMAL") -> Engine:
    url = normalize_url(database_url)
    if is_sqlite(url):
        if sqlite_synchronous.upper() not in SQLITE_SYNCHRONOUS:
            raise ValueError(f"sqlite_synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}")
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_SECONDS, "check_same_thread": False},
            pool_size=8,
            max_overflow=8,
        )
        _configure_sqlite(engine, sqlite_synchronous.upper())
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling is switched off so that BEGIN IMMEDIATE
        # below takes the write lock up front (no deadlock between two readers that
        # both want to write later).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
        cursor.close()

    database = engine.url.database
    lock_path = (  # absolute: the same file whatever the working directory is later
        Path(f"{os.path.abspath(database)}-writelock")
        if database and database != ":memory:"
        else None
    )
    writers = _WriteLock(engine, lock_path)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")  # deferred: readers never wait for the writer
            return
        writers.acquire(conn.connection)
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            writers.release(conn.connection)
            raise


_FORKED = threading.Lock()  # guards a `_WriteLock`'s reset in a forked child


class _WriteLock:
    """SQLite lets one write transaction run at a time. A connection that finds the
    database locked sleeps in SQLite's busy handler (1, 2, 5, 10 ... 100 ms) and tries
    again, so under load the writers of one process (event writer, processor, router,
    sender) and of the processes sharing the file (`serve` and its intake process, the CLI)
    lost up to tens of milliseconds per hand-over (docs/benchmarks.md, "Agent desktops").

    This lock hands the turn over at once instead. A write transaction takes it before
    ``BEGIN IMMEDIATE`` and lets it go when the transaction ends (commit, rollback, or its
    connection closed). In the process it is a `threading.Lock`; across processes, an
    ``flock`` on ``<database>-writelock`` beside the file, tried without blocking every
    `FILE_LOCK_POLL_SECONDS` at most (so a wait can end; the other holder is another
    process, busy for a few milliseconds). The two waits together give up after SQLite's
    busy timeout and let ``BEGIN IMMEDIATE`` meet SQLite's lock as before, with its own busy
    timeout after that: only a writer stuck for that long (or one of another program, an
    older convodesk, which does not take this lock) ever gets there.
    """

    def __init__(self, engine: Engine, path: Path | None) -> None:
        self._lock = threading.Lock()
        self._holder: Any = None
        self._path = path
        self._file: int | None = None
        self._pid = os.getpid()
        self._file_held = False
        dialect = engine.dialect
        commit, rollback, close = dialect.do_commit, dialect.do_rollback, dialect.do_close

        def do_commit(dbapi_connection: Any) -> None:
            try:
                commit(dbapi_connection)
            finally:
                self.release(dbapi_connection)

        def do_rollback(dbapi_connection: Any) -> None:
            try:
                rollback(dbapi_connection)
            finally:
                self.release(dbapi_connection)

        def do_close(dbapi_connection: Any) -> None:
            try:
                close(dbapi_connection)
            finally:
                self.release(dbapi_connection)

        dialect.do_commit = do_commit  # type: ignore[method-assign]
        dialect.do_rollback = do_rollback  # type: ignore[method-assign]
        dialect.do_close = do_close  # type: ignore[method-assign]

    def acquire(self, connection: Any) -> None:
        if self._pid != os.getpid():  # in a forked child: the parent's state is not ours
            with _FORKED:
                if self._pid != os.getpid():
                    self._lock = threading.Lock()
                    self._holder = None
                    self._file = None
                    self._file_held = False
                    self._pid = os.getpid()
        deadline = time.monotonic() + SQLITE_BUSY_SECONDS
        # A thread that already holds the lock through another connection would wait for
        # itself: after SQLite's own busy timeout, go on and let SQLite answer "locked".
        if not self._lock.acquire(timeout=SQLITE_BUSY_SECONDS):
            return
        self._holder = _raw(connection)
        self._file_held = self._lock_file(deadline)

    def release(self, connection: Any) -> None:
        if self._holder is None or self._holder is not _raw(connection):
            return
        self._holder = None
        try:
            if self._file_held and self._file is not None:
                self._file_held = False
                fcntl.flock(self._file, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def _lock_file(self, deadline: float) -> bool:
        """Take the cross-process lock (with the thread lock held); False if there is no
        file to lock or it cannot be had before `deadline`."""
        if self._path is None:
            return False
        try:
            if self._file is None:
                # Read-only is enough for flock, so a file another user made (a CLI run as
                # root) still serves; it holds nothing, so anyone may read it.
                flags = os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC
                self._file = os.open(self._path, flags, 0o644)
                weakref.finalize(self, os.close, self._file)  # with its engine
            pause = FILE_LOCK_POLL_SECONDS / 8
            while True:
                try:
                    fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return True
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        return False
                    time.sleep(pause)
                    pause = min(pause * 2, FILE_LOCK_POLL_SECONDS)
        except OSError:  # no lock file to be had (read-only directory): SQLite's wait only
            return False


def _raw(connection: Any) -> Any:
    """The sqlite3 connection behind the pool's proxy (the dialect is handed either)."""
    return getattr(connection, "dbapi_connection", connection)


READ_ONLY = "convodesk_read_only"  # execution option: see `read_transaction`


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose work commits at the end of the block, or rolls back on error."""
    with factory() as session, session.begin():
        yield session


@contextmanager
def read_transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reading only, rolled back at the end. On SQLite it begins with a plain
    (deferred) ``BEGIN`` instead of ``BEGIN IMMEDIATE``: it reads the last committed state
    (WAL) without taking, or waiting for, the write lock. Writing in it is a mistake: on
    SQLite it could fail with "database is locked"."""
    with factory() as session:
        session.connection(execution_options={READ_ONLY: True})
        try:
            yield session
        finally:
            session.rollback()


def ping(engine: Engine) -> None:
    """Raise if the database cannot answer a trivial query (reading: on SQLite it does
    not wait for the writers)."""
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn:
        conn.execute(text("SELECT 1"))
