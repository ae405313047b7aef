"""Several nodes starting at once on an empty database: `convodesk db upgrade` in four
processes together. Every one succeeds and the schema ends at head, migrated once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from sqlalchemy import text

from convodesk.storage import db, migrate
from tests.integration.storage.test_migrations import empty_database_url  # noqa: F401 - fixture
from tests.support.apps import TEST_SECRET_KEY

NODES = 4


def test_nodes_upgrading_at_once_all_succeed(empty_database_url: str, tmp_path: Path) -> None:  # noqa: F811
    config = tmp_path / "convodesk.yaml"
    config.write_text(
        yaml.safe_dump({"database_url": empty_database_url, "data_dir": str(tmp_path / "data")})
    )
    env = {**os.environ, "CONVODESK_SECRET_KEY": TEST_SECRET_KEY}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "convodesk", "db", "upgrade", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for _ in range(NODES)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [0] * NODES, "\n---\n".join(outputs)
    engine = db.create_db_engine(empty_database_url)
    try:
        assert migrate.current_revision(engine) == migrate.head_revision()
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM alembic_version")) == 1
    finally:
        engine.dispose()
