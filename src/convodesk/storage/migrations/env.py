"""Alembic environment. Always run through `convodesk.storage.migrate`, which hands over an
open connection in ``config.attributes["connection"]``."""

from __future__ import annotations

from alembic import context

from convodesk.storage.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - guarded by storage.migrate
    raise RuntimeError("run migrations with `convodesk db upgrade`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
