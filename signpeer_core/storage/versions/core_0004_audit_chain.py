"""The audit log's HMAC chain: each record's ``mac`` (see ``signpeer_core/storage/audit.py``).

Records written before this revision are chained when the data protection key is first set up
(``signpeer_core/storage/protection.py``), which the store does right after migrating.

Revision ID: core_0004
Revises: core_0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "core_0004"
down_revision: str | None = "core_0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # A database adopted from before per-owner migrations may already have the column (made by the
    # current tables on a copied or re-stamped database): add it only when missing.
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("audit_log")}
    if "mac" not in columns:
        op.add_column("audit_log", sa.Column("mac", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("mac")
