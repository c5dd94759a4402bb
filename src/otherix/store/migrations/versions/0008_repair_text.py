"""Repair stored JSON values that strict input now refuses

Before strict input (``otherix.api.inputguard``) the API stored whatever
Python's ``json`` module accepts. SQLite kept strings with unpaired
surrogates (``"\\ud800"``, as escaped text) and ``NaN``/``Infinity`` in its
JSON columns; both backends kept nesting up to about 1,000 levels
(PostgreSQL's JSONB refused surrogates and NaN: the API answered 500 there).
Afterwards every answer holding such a value failed with 500: a VM's
``image_url`` bricked its node's heartbeat and watch, a pool's ``config``
broke ``pool list`` for everyone, nesting past about 250 levels broke any
serialisation of the row.

What this migration does to old rows: it reads every JSON column of every
row, in batches of 500 by primary key (``storage_pools.config``,
``pool_status.images``, ``node_observed.capabilities``/``resources``,
``tasks.args``/``result``/``error``, ``vms.spec``/``status_details``), and
rewrites only the values that break a rule (``otherix.models.jsonrepair``):

- every unpaired surrogate, in strings and object keys, becomes U+FFFD;
- ``NaN``, ``Infinity`` and ``-Infinity`` become ``null`` (how the API
  always showed them);
- a container nested deeper than 64 levels (the column's value counting as
  1) becomes a string holding its JSON text, so nothing is lost.

Rows without such a value are not written. Each repaired row is logged at
WARNING on the ``otherix.store.migrations`` logger (table, column, primary
key, what changed), with a total at the end. No schema change; the
downgrade changes nothing (the repair cannot and need not be undone).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from otherix.models.jsonrepair import Repairs, repair_text

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

log = logging.getLogger("otherix.store.migrations")
BATCH = 500
#: table -> (primary key, JSON columns)
COLUMNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "storage_pools": ("id", ("config",)),
    "pool_status": ("pool_id", ("images",)),
    "node_observed": ("node_id", ("capabilities", "resources")),
    "tasks": ("id", ("args", "result", "error")),
    "vms": ("id", ("spec", "status_details")),
}


def _repair_table(conn: sa.Connection, name: str, pk: str, columns: tuple[str, ...]) -> Repairs:
    table = sa.table(name, sa.column(pk, sa.String), *(sa.column(c, sa.Text) for c in columns))
    key = table.c[pk]
    as_text = [sa.cast(table.c[c], sa.Text).label(c) for c in columns]
    pg = conn.dialect.name == "postgresql"
    total = Repairs()
    last = ""
    while True:
        rows = conn.execute(
            sa.select(key, *as_text).where(key > last).order_by(key).limit(BATCH)
        ).all()
        if not rows:
            return total
        for row in rows:
            last = row[0]
            values: dict[str, object] = {}
            for column, text in zip(columns, row[1:], strict=True):
                if text is None:
                    continue
                repaired, counts = repair_text(text)
                if repaired is None:
                    continue
                total.add(counts)
                log.warning(
                    "0008: repaired %s.%s of %s %s: %s",
                    name,
                    column,
                    pk,
                    last,
                    counts.describe(),
                )
                values[column] = (
                    sa.cast(sa.literal(repaired, sa.Text), postgresql.JSONB) if pg else repaired
                )
            if values:
                conn.execute(sa.update(table).where(key == last).values(**values))


def upgrade() -> None:
    conn = op.get_bind()
    total = Repairs()
    for name, (pk, columns) in COLUMNS.items():
        total.add(_repair_table(conn, name, pk, columns))
    if total:
        log.warning("0008: stored JSON repaired: %s", total.describe())
    else:
        log.info("0008: no stored JSON value needed a repair")


def downgrade() -> None:
    """Nothing to undo: the repaired values are valid under both revisions."""
