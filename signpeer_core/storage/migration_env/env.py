"""Alembic's environment for every owner: run by :mod:`signpeer_core.storage.migrations`.

The runner opens the transaction (and holds the migration lock) and passes the connection, the
owner's version table and its metadata in ``config.attributes``; nothing here opens a database.
"""

from __future__ import annotations

from alembic import context

attributes = context.config.attributes
context.configure(
    connection=attributes["connection"],
    version_table=attributes["version_table"],
    target_metadata=attributes.get("metadata"),
)
with context.begin_transaction():  # nothing of its own: the runner's transaction is open
    context.run_migrations()
