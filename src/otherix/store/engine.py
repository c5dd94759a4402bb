"""Opening the store: backend picked by URL scheme, connection setup, transactions.

``sqlite:///PATH`` (the embedded default) gets WAL, ``foreign_keys=ON``,
``synchronous=NORMAL`` and a busy timeout; write transactions start with
``BEGIN IMMEDIATE`` so concurrent writers queue instead of failing half-way.
``postgresql+psycopg://`` gets a pre-pinged connection pool. JSON columns are
written and read through ``jsontext`` on both. Everything above
this module is backend-neutral SQLAlchemy Core.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from otherix.store import jsontext
from otherix.store.errors import StoreError, translate

_WRITE = "otherix_write"
_SINGLE = "otherix_single_statement"


def _sqlite_engine(url: sa.URL) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        # As many pooled connections as the server has worker threads (anyio's
        # default is 40): overflow connections are closed on return, and
        # re-opening one re-runs the PRAGMAs on every request.
        pool_size=40,
        max_overflow=10,
        json_serializer=jsontext.dumps,
        json_deserializer=jsontext.loads,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        # Pages come from one shared memory map instead of a private cache per
        # pooled connection (40 of them), so a large table stays warm for all.
        cur.execute("PRAGMA mmap_size=1073741824")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        opts = conn.get_execution_options()
        if opts.get(_SINGLE, False):
            return  # one statement: SQLite makes it atomic on its own
        conn.exec_driver_sql("BEGIN IMMEDIATE" if opts.get(_WRITE, False) else "BEGIN")

    return engine


def create_engine(url_text: str) -> Engine:
    url = sa.make_url(url_text)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    if url.get_backend_name() == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        return sa.create_engine(
            url,
            pool_pre_ping=True,
            pool_size=10,
            max_overflow=20,
            json_serializer=jsontext.dumps,
            json_deserializer=jsontext.loads,
        )
    raise StoreError(f"unsupported database URL scheme {url.drivername!r} (sqlite or postgresql)")


class Database:
    """An engine plus the two transaction shapes every caller uses."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        self.backend = self.engine.dialect.name

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except sa_exc.DBAPIError as exc:
            raise translate(exc) from exc

    @contextlib.contextmanager
    def read_one(self) -> Iterator[Connection]:
        """For exactly one SELECT on a hot path: no explicit transaction on
        SQLite (the statement is atomic by itself); a normal one elsewhere."""
        try:
            with self.engine.connect().execution_options(**{_SINGLE: True}) as conn, conn.begin():
                yield conn
        except sa_exc.DBAPIError as exc:
            raise translate(exc) from exc

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """A read-write transaction; on SQLite it holds the write lock from the start."""
        try:
            with self.engine.connect().execution_options(**{_WRITE: True}) as conn, conn.begin():
                yield conn
        except sa_exc.DBAPIError as exc:
            raise translate(exc) from exc

    def ping(self) -> bool:
        try:
            with self.read() as conn:
                conn.execute(sa.text("SELECT 1"))
        except StoreError:
            return False
        return True

    def close(self) -> None:
        self.engine.dispose()
