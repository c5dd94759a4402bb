"""A row in every table of a database at some schema revision, for the upgrade and
migration-kill tests (``tests/store/test_store_upgrade.py``,
``tests/faults/test_fault_migrate_kill.py``).

Tables and columns are reflected from the database, never listed here, so a
new table is never forgotten; each column gets a value of its type, a foreign
key the referenced row's value.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa

#: the last released schema revision (before issue 16's migrations)
PREVIOUS = "0011"
T0 = datetime(2026, 3, 1, 12, 0, 0)


def _value(table: sa.Table, col: sa.Column[Any], n: int) -> Any:
    kind = col.type
    if isinstance(kind, sa.JSON):
        return {"from": table.name, "column": col.name}
    if isinstance(kind, sa.Boolean):
        return False
    if isinstance(kind, sa.DateTime):
        return T0
    if isinstance(kind, sa.Integer):
        return n
    if isinstance(kind, sa.Float | sa.Numeric):
        return 1.5
    if isinstance(kind, sa.LargeBinary):
        return b"\x00bytes"
    if isinstance(kind, sa.String):
        length = kind.length or 64
        if length >= 36 and (col.name == "id" or col.name.endswith("_id") or col.primary_key):
            return str(uuid.uuid4())
        return f"{table.name[:8]}-{col.name}-{n}"[:length]
    raise AssertionError(f"no value for {table.name}.{col.name} of type {kind!r}: add one")


def populate(engine: sa.Engine) -> tuple[sa.MetaData, dict[str, dict[str, Any]]]:
    """One row in every table the database has now (reflected), foreign keys
    pointing at the referenced table's row; returns the metadata and the rows."""
    meta = sa.MetaData()
    meta.reflect(engine)
    rows: dict[str, dict[str, Any]] = {}
    with engine.begin() as conn:
        for table in meta.sorted_tables:
            if table.name == "alembic_version":
                continue
            row: dict[str, Any] = {}
            for n, col in enumerate(table.columns, start=1):
                fks = list(col.foreign_keys)
                if fks:
                    ref = fks[0].column
                    row[col.name] = rows[ref.table.name][ref.name]
                else:
                    row[col.name] = _value(table, col, n)
            conn.execute(table.insert().values(row))
            rows[table.name] = row
    return meta, rows


def read_all(engine: sa.Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, by table name."""
    meta = sa.MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        return {
            t.name: [dict(r._mapping) for r in conn.execute(sa.select(t))]
            for t in meta.sorted_tables
            if t.name != "alembic_version"
        }
