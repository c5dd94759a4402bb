"""Persistence: the only package that imports SQLAlchemy.

``Database`` (engine.py) opens SQLite or PostgreSQL by URL scheme and hands out
read and write transactions. One module per noun holds the shared Core
statements (users, nodes, pools, tasks, settings, idempotency), used by both
backends. ``migrate.upgrade`` runs the Alembic migrations.
"""

from otherix.store.engine import Database
from otherix.store.errors import (
    ForeignKeyViolation,
    StoreError,
    StoreLost,
    StoreUnavailable,
    UniqueViolation,
)

__all__ = [
    "Database",
    "ForeignKeyViolation",
    "StoreError",
    "StoreLost",
    "StoreUnavailable",
    "UniqueViolation",
]
