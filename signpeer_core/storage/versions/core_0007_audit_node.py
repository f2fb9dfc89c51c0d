"""The node that wrote each audit record (``audit_log.node``; see ``signpeer_core/storage/audit.py``).

Records written before this revision keep ``node`` NULL; their HMAC covers what it covered when
they were written, so an existing chain still verifies.

Revision ID: core_0007
Revises: core_0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "core_0007"
down_revision: str | None = "core_0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # A database adopted from before per-owner migrations may already have the column (made by the
    # current tables on a copied or re-stamped database): add it only when missing.
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("audit_log")}
    if "node" not in columns:
        op.add_column("audit_log", sa.Column("node", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("node")
