"""Persistence: the only package that imports SQLAlchemy.

``Database`` (engine.py) opens SQLite or PostgreSQL by URL scheme and hands out
read and write transactions, and the aggregate stores: one module per noun
(users, nodes, pools, vms, tasks, events, settings, idempotency) holds one
SQLAlchemy Core class, used by both backends, that implements the
``typing.Protocol`` of ``ports/<noun>.py`` and speaks its frozen rows; a
service is handed the protocol, never the class. ``migrate.upgrade`` runs the
Alembic migrations. Transactions are opaque ``Tx`` handles (tx.py): callers
never see a SQLAlchemy connection.
"""

from otherix.store.engine import Database
from otherix.store.errors import (
    ForeignKeyViolation,
    StoreError,
    StoreLost,
    StoreUnavailable,
    UniqueViolation,
)
from otherix.store.tx import Tx

__all__ = [
    "Database",
    "ForeignKeyViolation",
    "StoreError",
    "StoreLost",
    "StoreUnavailable",
    "Tx",
    "UniqueViolation",
]
