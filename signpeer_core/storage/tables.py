"""The core's tables, as SQLAlchemy Core metadata: what the core's queries are written against.

The schema itself is made by the core's Alembic revisions (``signpeer_core/storage/versions``);
a test checks that a freshly migrated database matches this metadata. Plugins keep their own
tables in their own metadata and migrations (``signpeer_migrations`` hook).
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, LargeBinary, MetaData, PrimaryKeyConstraint, Table, Text
from sqlalchemy import func as sql_func
from sqlalchemy import text as sql_text

metadata = MetaData()

#: Key/value pairs of the core: ``config_generation``, ``activation_generation``, ``schema_version``
#: (kept so that a signpeer older than the per-owner migrations refuses the database) and the
#: migration runner's ``migrations.<owner>`` records.
meta = Table(
    "meta", metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

worker_properties = Table(
    "worker_properties", metadata,
    Column("worker_id", Integer, nullable=False),
    Column("key", Text, nullable=False),
    Column("value", Text, nullable=False),
    PrimaryKeyConstraint("worker_id", "key"),
    # One worker by NAME (case-insensitive) without reading the others (core_0006).
    Index("ix_worker_properties_key_lower_value", "key", sql_func.lower(sql_text("value"))),
)

global_properties = Table(
    "global_properties", metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

audit_log = Table(
    "audit_log", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", Float, nullable=False),
    Column("event", Text, nullable=False),
    Column("module", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("admin", Text, nullable=False),
    Column("issuer", Text),
    Column("serial", Text),
    Column("worker_id", Integer),
    Column("details", Text, nullable=False),
    #: The node (``node_id``) of the process that wrote the record; NULL in records from before core_0007.
    Column("node", Text),
    #: The record's link in the HMAC chain (storage/audit.py); NULL only before the chain was set up.
    Column("mac", Text),
    Index("audit_log_time", "time"),
    sqlite_autoincrement=True,  # ids of deleted rows are never reused
)

keystores = Table(
    "keystores", metadata,
    Column("worker_id", Integer, primary_key=True, autoincrement=False),
    Column("data", LargeBinary, nullable=False),
    Column("updated", Float, nullable=False),
)

token_activations = Table(
    "token_activations", metadata,
    Column("worker_id", Integer, nullable=False),
    Column("node", Text, nullable=False),
    Column("active", Integer, nullable=False),
    Column("sealed", LargeBinary),
    Column("updated", Float, nullable=False),
    PrimaryKeyConstraint("worker_id", "node"),
)

#: The node registry (:mod:`signpeer_core.storage.nodes`): one row per running server process.
nodes = Table(
    "nodes", metadata,
    Column("process", Text, primary_key=True),  # "<node>:<host>:<pid>:<random>"
    Column("node", Text, nullable=False),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("address", Text, nullable=False),
    Column("generation", Integer, nullable=False),  # the config_generation its workers were built from
    Column("activation_generation", Integer, nullable=False),
    Column("active_tokens", Text, nullable=False),  # ids of the token owners active there, comma-separated
    Column("started", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
)
