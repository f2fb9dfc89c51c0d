"""Alembic's environment script (``env.py``), shared by every owner's migrations."""
