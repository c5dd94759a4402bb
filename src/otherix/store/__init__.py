"""Persistence: the only package that imports SQLAlchemy.

``Database`` (engine.py) opens SQLite or PostgreSQL by URL scheme and hands out
read and write transactions. One module per noun holds the shared Core
statements (users, nodes, pools, tasks, settings, idempotency), used by both
backends. ``migrate.upgrade`` runs the Alembic migrations. Transactions are
opaque ``Tx`` handles (tx.py): callers never see a SQLAlchemy connection.
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
