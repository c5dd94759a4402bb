"""The transaction handle services hold: ``Tx``.

``Database.read()``, ``read_one()`` and ``write()`` (engine.py) yield a ``Tx``;
every store function takes one. A ``Tx`` is opaque above the store: it has no
methods, and its SQLAlchemy connection is reached only through :func:`sql`,
which the store modules (and store tests) call. Services annotate ``Tx`` and
never see a ``Connection``.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection


class Tx:
    """One open transaction (read or write), valid inside its ``with`` block."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def __repr__(self) -> str:
        return "<Tx>"


def sql(tx: Tx) -> Connection:
    """The connection behind ``tx``: for store modules and store tests only."""
    return tx._conn
