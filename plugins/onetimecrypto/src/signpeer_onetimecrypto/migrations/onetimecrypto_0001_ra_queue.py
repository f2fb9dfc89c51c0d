"""The RA queue: certificate requests for a CA peer and the CA peers that poll (signpeer's schema version 3).

Revision ID: onetimecrypto_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "onetimecrypto_0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "ra_requests",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("queue", sa.Text, nullable=False),
        sa.Column("worker_id", sa.Integer, nullable=False),
        sa.Column("worker", sa.Text, nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("deadline", sa.Float, nullable=False),
        sa.Column("claimed_at", sa.Float),
        sa.Column("claimed_by", sa.Text),
        sa.Column("claims", sa.Integer, nullable=False, server_default="0"),
        sa.Column("answered_at", sa.Float),
        sa.Column("answered_by", sa.Text),
        sa.Column("chain", sa.Text),
        sa.Column("error", sa.Text),
    )
    op.create_index("ra_requests_open", "ra_requests", ["state", "queue", "created"])
    op.create_table(
        "ra_pollers",
        sa.Column("identity", sa.Text, primary_key=True),
        sa.Column("queues", sa.Text, nullable=False),
        sa.Column("first_poll", sa.Float, nullable=False),
        sa.Column("last_poll", sa.Float, nullable=False),
        sa.Column("polls", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ra_pollers")
    op.drop_index("ra_requests_open", "ra_requests")
    op.drop_table("ra_requests")
