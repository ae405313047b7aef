"""Test databases: SQLite files in a temporary folder, and PostgreSQL databases made from a
migrated template (CREATE DATABASE ... TEMPLATE is far faster than migrating each time).

PostgreSQL comes from CONVODESK_TEST_POSTGRES_URL (scripts/start-postgres prints one).
Without it the PostgreSQL half of the suite is skipped with a reason, except under CI=true,
where a missing server is a failure: CI must test both databases.
"""

from __future__ import annotations

import os
import uuid

import pytest
from sqlalchemy import create_engine, make_url, text

from convodesk.storage import db, migrate

POSTGRES_ENV = "CONVODESK_TEST_POSTGRES_URL"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip when something optional is missing, but fail under CI=true."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{reason} (CI=true: this must not be skipped)")
    pytest.skip(reason)


class PostgresServer:
    def __init__(self, admin_url: str) -> None:
        self.admin_url = make_url(admin_url).set(drivername="postgresql+psycopg")
        self._admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        self.template = f"cdk_template_{os.getpid()}"
        self._made: list[str] = []

    def url_for(self, name: str) -> str:
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def _execute(self, sql: str) -> None:
        with self._admin.connect() as conn:
            conn.execute(text(sql))

    def prepare_template(self) -> None:
        self._execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        self._execute(f'CREATE DATABASE "{self.template}"')
        engine = db.create_db_engine(self.url_for(self.template))
        try:
            migrate.upgrade(engine)
        finally:
            engine.dispose()

    def new_database(self, *, migrated: bool = True) -> str:
        name = f"cdk_{uuid.uuid4().hex[:12]}"
        template = f' TEMPLATE "{self.template}"' if migrated else ""
        self._execute(f'CREATE DATABASE "{name}"{template}')
        self._made.append(name)
        return self.url_for(name)

    def drop(self, url: str) -> None:
        name = make_url(url).database
        self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        for name in self._made:
            self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
        self._admin.dispose()


def connect_postgres() -> PostgresServer | None:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        return None
    server = PostgresServer(url)
    try:
        server.prepare_template()
    except Exception as exc:
        raise RuntimeError(f"{POSTGRES_ENV}={url} is set but unusable: {exc}") from exc
    return server
