"""The node that last saw each incoming peer (several nodes on one database, docs/cluster.md).

Revision ID: peerconnector_0002
Revises: peerconnector_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "peerconnector_0002"
down_revision: str | None = "peerconnector_0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("incoming_peers") as batch:
        batch.add_column(sa.Column("node", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("incoming_peers") as batch:
        batch.drop_column("node")
