"""The incoming peer connections registry (what signpeer's schema version 2 added).

Every call with a client certificate, authorized or not, shared by every server process.

Revision ID: peerconnector_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "peerconnector_0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "incoming_peers",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("issuer", sa.Text, nullable=False),
        sa.Column("serial", sa.Text, nullable=False),
        sa.Column("remote_address", sa.Text, nullable=False),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.UniqueConstraint("serial", "issuer", "remote_address"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("incoming_peers")
