"""Configuration, audit log and keystores (what signpeer's schema version 1 had).

Revision ID: core_0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "core_0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    meta = op.create_table(
        "meta",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "worker_properties",
        sa.Column("worker_id", sa.Integer, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("worker_id", "key"),
    )
    op.create_table(
        "global_properties",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
        sa.Column("module", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("admin", sa.Text, nullable=False),
        sa.Column("issuer", sa.Text),
        sa.Column("serial", sa.Text),
        sa.Column("worker_id", sa.Integer),
        sa.Column("details", sa.Text, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("audit_log_time", "audit_log", ["time"])
    op.create_table(
        "keystores",
        sa.Column("worker_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.bulk_insert(meta, [{"key": "config_generation", "value": "0"}])


def downgrade() -> None:
    for table in ("keystores", "audit_log", "global_properties", "worker_properties", "meta"):
        op.drop_table(table)
