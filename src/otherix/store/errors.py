"""Store errors: the only exceptions that leave ``otherix.store``.

Driver exceptions (sqlite3, psycopg) are translated here and nowhere else, in
:func:`translate`, chained with ``from exc``. Services map these to the
user-facing tree in ``otherix.errors`` with a message that fits the request.
"""

from __future__ import annotations

import re

import sqlalchemy.exc as sa_exc


class StoreError(Exception):
    """Base of every store error."""


class UniqueViolation(StoreError):
    def __init__(self, table: str, detail: str) -> None:
        self.table = table
        super().__init__(f"unique violation on {table}: {detail}")


class ForeignKeyViolation(StoreError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"foreign key violation: {detail}")


class StoreUnavailable(StoreError):
    """The database cannot be reached or is locked; the caller may retry."""


_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (\w+)\.")


def translate(exc: sa_exc.DBAPIError) -> StoreError:
    """Map a SQLAlchemy/driver error to a store error (called at one choke point)."""
    orig = exc.orig
    text = str(orig)
    if isinstance(exc, sa_exc.IntegrityError):
        diag = getattr(orig, "diag", None)
        sqlstate = getattr(orig, "sqlstate", None)
        if sqlstate == "23505" or "UNIQUE constraint failed" in text:
            table = getattr(diag, "table_name", None) if diag is not None else None
            if table is None and (m := _SQLITE_UNIQUE.search(text)):
                table = m.group(1)
            return UniqueViolation(table or "?", text)
        if sqlstate == "23503" or "FOREIGN KEY constraint failed" in text:
            return ForeignKeyViolation(text)
        return StoreError(text)
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return StoreUnavailable(text)
    return StoreError(text)


class StoreLost(StoreUnavailable):
    """The SQLite database file was deleted or replaced under the running process;
    nothing is read or written until a restart."""
