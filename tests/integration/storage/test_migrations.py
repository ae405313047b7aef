from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from convodesk.storage import db, migrate
from convodesk.storage.tables import Base
from tests.support.databases import POSTGRES_ENV, PostgresServer, require


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_server: PostgresServer | None
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    require(postgres_server is not None, f"PostgreSQL tests need {POSTGRES_ENV}")
    assert postgres_server is not None
    url = postgres_server.new_database(migrated=False)
    yield url
    postgres_server.drop(url)


def test_migrations_from_empty_equal_the_models(empty_database_url: str) -> None:
    engine = db.create_db_engine(empty_database_url)
    try:
        migrate.upgrade(engine)
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
            )
        assert diff == []
        assert migrate.current_revision(engine) == migrate.head_revision()
    finally:
        engine.dispose()


def test_upgrade_twice_is_harmless_and_downgrade_empties(empty_database_url: str) -> None:
    engine = db.create_db_engine(empty_database_url)
    try:
        migrate.upgrade(engine)
        migrate.upgrade(engine)
        assert "messaging_services" in inspect(engine).get_table_names()
        migrate.downgrade(engine, "base")
        assert "messaging_services" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    engine = db.create_db_engine(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        with engine.connect() as conn:
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
        assert mode == "wal"
        assert sync == 1  # NORMAL
    finally:
        engine.dispose()
