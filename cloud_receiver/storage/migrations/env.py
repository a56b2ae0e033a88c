"""Alembic's entry point, run on the connection that `..migrate` passes in (no ini
file, no engine of its own: the caller already holds the set-up lock)."""

from __future__ import annotations

from alembic import context

from cloud_receiver.storage.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
