"""signpeer's storage: the database, per-owner migrations, and the core's tables by concept.

=====================  ==============================================================
module                 concern
=====================  ==============================================================
``database``           the engine from a database URL; transactions, reads, upserts
``migrations``         Alembic migrations per owner (core, each plugin); adoption of
                       databases made before them
``tables``             the core's tables (SQLAlchemy Core metadata)
``configuration``      worker and global properties, ``config_generation``
``audit``              :class:`Admin`, :class:`AuditEvent`, the audit log
``keystores``          INTERNAL keystores
``activations``        token activation shared by a node's server processes
``generations``        the generation counters in ``meta``
``store``              :class:`Store`, the facade ``Services.store`` holds
=====================  ==============================================================
"""

from signpeer_core.storage.audit import Admin, AuditEvent
from signpeer_core.storage.database import Database
from signpeer_core.storage.migrations import MigrationSource
from signpeer_core.storage.store import Store, open_store

__all__ = ["Admin", "AuditEvent", "Database", "MigrationSource", "Store", "open_store"]
