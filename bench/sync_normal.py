"""``python -m bench.sync_normal serve ...``: ``otherix-api`` with SQLite at
``synchronous=NORMAL``, for the B side of ``bench/durability.py`` only.

Production code has no way to ask for NORMAL (a power cut would lose
acknowledged writes); this launcher adds a connection hook after the store's
own, so every connection ends up at NORMAL, and then runs the normal CLI.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

import otherix.store.engine as store_engine
from otherix.api.main import main

_full_engine = store_engine._sqlite_engine


def _normal_engine(url: Any) -> Engine:
    engine = _full_engine(url)

    @event.listens_for(engine, "connect")
    def _normal(dbapi_conn: sqlite3.Connection, _record: Any) -> None:  # after the store's hook
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    return engine


store_engine._sqlite_engine = _normal_engine

if __name__ == "__main__":
    main()
