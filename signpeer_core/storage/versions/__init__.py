"""The core's Alembic revisions (owner ``core``, version table ``alembic_version_core``)."""
