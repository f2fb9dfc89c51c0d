"""The node registry: every running server process of every node, and what it has applied.

Revision ID: core_0005
Revises: core_0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "core_0005"
down_revision: str | None = "core_0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("process", sa.Text, primary_key=True),
        sa.Column("node", sa.Text, nullable=False),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("activation_generation", sa.Integer, nullable=False),
        sa.Column("active_tokens", sa.Text, nullable=False),
        sa.Column("started", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("nodes")
