"""Token activation shared by a node's server processes (what signpeer's schema version 4 added).

The authentication code is stored sealed with a secret that only the running server's processes
hold (never on disk).

Revision ID: core_0002
Revises: core_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "core_0002"
down_revision: str | None = "core_0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "token_activations",
        sa.Column("worker_id", sa.Integer, nullable=False),
        sa.Column("node", sa.Text, nullable=False),
        sa.Column("active", sa.Integer, nullable=False),
        sa.Column("sealed", sa.LargeBinary),
        sa.Column("updated", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("worker_id", "node"),
    )
    op.execute(sa.text("INSERT INTO meta (key, value) VALUES ('activation_generation', '0')"))


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM meta WHERE key = 'activation_generation'"))
    op.drop_table("token_activations")
