"""Per-owner migrations: mark the database so that a signpeer from before them refuses it.

Until this revision the core kept one ``schema_version`` (1 to 4) in ``meta`` for every table,
plugins' tables included. Those signpeer releases refuse a database whose ``schema_version`` is
higher than theirs ("newer than this signpeer understands; upgrade signpeer"), so 5 keeps an
older signpeer from writing to a database whose tables it no longer knows.

Revision ID: core_0003
Revises: core_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "core_0003"
down_revision: str | None = "core_0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.execute(sa.text("DELETE FROM meta WHERE key = 'schema_version'"))
    op.execute(sa.text("INSERT INTO meta (key, value) VALUES ('schema_version', '5')"))


def downgrade() -> None:
    op.execute(sa.text("UPDATE meta SET value = '4' WHERE key = 'schema_version'"))
