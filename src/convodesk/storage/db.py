"""Engine and session factory for SQLite (the embedded default) and PostgreSQL.

SQLite runs in WAL mode with ``synchronous=NORMAL`` by default: a committed transaction
survives a crash of the process, and after a power loss the last transactions before the
loss may roll back (docs/architecture/durability.md). ``sqlite_synchronous: FULL`` in the
config trades write speed for durability across power loss as well.

PostgreSQL URLs (``postgresql://``) are served by psycopg 3.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

SQLITE_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


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
            connect_args={"timeout": 30, "check_same_thread": False},
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
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")  # deferred: readers never wait for the writer
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE")


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
    """Raise if the database cannot answer a trivial query."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
