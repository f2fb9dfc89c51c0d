"""Finding a worker by name without reading the others: an index on ``(key, lower(value))``.

A command, the Admin Web or a peer naming one worker (``getconfig Signer5001``) looked at every
worker's properties; with the index it reads the one ``NAME`` row it wants (``Configuration
.worker_id_by_name``), whatever the number of workers.

Revision ID: core_0006
Revises: core_0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "core_0006"
down_revision: str | None = "core_0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # if_not_exists: a database rebuilt from an older schema version may already have it.
    op.create_index("ix_worker_properties_key_lower_value", "worker_properties",
                    ["key", sa.text("lower(value)")], if_not_exists=True)


def downgrade() -> None:
    op.drop_index("ix_worker_properties_key_lower_value", table_name="worker_properties", if_exists=True)
