from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from convodesk.storage import db, migrate
from tests.support.databases import POSTGRES_ENV, PostgresServer, connect_postgres, require

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer | None]:
    server = connect_postgres()
    yield server
    if server is not None:
        server.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_server: PostgresServer | None
) -> Iterator[str]:
    """A migrated, empty database: each test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'convodesk.db'}"
        engine = db.create_db_engine(url)
        migrate.upgrade(engine)
        engine.dispose()
        yield url
        return
    require(postgres_server is not None, f"PostgreSQL tests need {POSTGRES_ENV}")
    assert postgres_server is not None
    url = postgres_server.new_database()
    yield url
    postgres_server.drop(url)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer | None) -> Iterator[str]:
    """A migrated, empty PostgreSQL database, for tests that are about PostgreSQL alone."""
    require(postgres_server is not None, f"PostgreSQL tests need {POSTGRES_ENV}")
    assert postgres_server is not None
    url = postgres_server.new_database()
    yield url
    postgres_server.drop(url)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = db.create_db_engine(database_url)
    yield eng
    eng.dispose()
