"""Opening the store: backend picked by URL scheme, connection setup, transactions.

``sqlite:///PATH`` (the embedded default) gets WAL, ``foreign_keys=ON``,
``synchronous=FULL`` (a commit is on the disk before it returns, so an
acknowledged write survives a power cut) and a busy timeout; write
transactions start with ``BEGIN IMMEDIATE`` so concurrent writers queue
instead of failing half-way. The database file is created 0600 (SQLite gives
its ``-wal`` and ``-shm`` the same mode), and an existing one, with its
``-wal``/``-shm``, is set to 0600 when it is opened.

A SQLite database is a file that can be deleted or replaced under the running
process, and SQLite would go on writing to the unlinked inode. ``Database``
keeps a descriptor on the file it opened (which also keeps the inode from
being reused) and compares it with what the path names now: before and after
every write transaction, in :meth:`Database.check` (``/readyz`` and a worker
call it) and never again once it has found the file lost. A lost store raises
:class:`StoreLost` for every transaction until the process restarts, and is
never written, checkpointed or closed.

``postgresql+psycopg://`` gets a pre-pinged connection pool and a connect
timeout. JSON columns are written and read through ``jsontext`` on both.
Everything above this module is backend-neutral SQLAlchemy Core.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from otherix.store import jsontext
from otherix.store.capacity import store as capacity_store
from otherix.store.errors import StoreError, StoreLost, StoreUnavailable, translate
from otherix.store.events import store as event_store
from otherix.store.idempotency import store as idempotency_store
from otherix.store.nodes import store as node_store
from otherix.store.pools import store as pool_store
from otherix.store.ports.capacity import CapacityStore
from otherix.store.ports.events import EventStore
from otherix.store.ports.idempotency import IdempotencyStore
from otherix.store.ports.nodes import NodeStore
from otherix.store.ports.pools import PoolStore
from otherix.store.ports.settings import SettingsStore
from otherix.store.ports.tasks import TaskStore
from otherix.store.ports.users import UserStore
from otherix.store.ports.vms import VmStore
from otherix.store.settings import store as settings_store
from otherix.store.tasks import store as task_store
from otherix.store.tx import Tx, sql
from otherix.store.users import store as user_store
from otherix.store.vms import store as vm_store

_WRITE = "otherix_write"
_SINGLE = "otherix_single_statement"
FILE_MODE = 0o600
DIR_MODE = 0o700
SIDE_FILES = ("-wal", "-shm", "-journal")
#: seconds before a PostgreSQL connection attempt gives up (unless the URL sets
#: ``connect_timeout``): an unreachable server answers 503 instead of hanging.
PG_CONNECT_TIMEOUT = 10
log = logging.getLogger(__name__)


def sqlite_path(url_text: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL; None for other URLs and memory."""
    url = sa.make_url(url_text)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def display_url(url_text: str) -> str:
    """The URL with its password hidden, for messages."""
    return sa.make_url(url_text).render_as_string(hide_password=True)


class DbFile:
    """The SQLite file this process opened: a read-only descriptor held for the
    life of the engine, and the (device, inode) it had at open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=DIR_MODE)
            path.parent.chmod(DIR_MODE)  # mkdir's mode is filtered by the umask
        # Created 0600 before SQLite opens it: SQLite then makes -wal and -shm
        # with the mode of the database file, whatever the umask.
        self.fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        st = os.fstat(self.fd)
        if stat.S_IMODE(st.st_mode) != FILE_MODE:
            os.fchmod(self.fd, FILE_MODE)
        for suffix in SIDE_FILES:
            with contextlib.suppress(FileNotFoundError):
                side = Path(f"{path}{suffix}")
                if stat.S_IMODE(side.stat().st_mode) != FILE_MODE:
                    side.chmod(FILE_MODE)
        self.identity = (st.st_dev, st.st_ino)

    def problem(self) -> str | None:
        """What happened to the file, or None while the path still names it."""
        try:
            st = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return f"the database file {self.path} was deleted"
        if (st.st_dev, st.st_ino) != self.identity:
            return (
                f"the database file {self.path} was replaced by another file "
                f"(inode {self.identity[1]} at open, {st.st_ino} now)"
            )
        return None

    def close(self) -> None:
        """Close the descriptor once (a second close could hit a reused fd number).

        Only after the engine is disposed: closing any descriptor of a file
        drops the process's POSIX locks on it, SQLite's included."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


def _sqlite_engine(url: sa.URL) -> Engine:
    codec = jsontext.JsonText()
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        # As many pooled connections as the server has worker threads (anyio's
        # default is 40): overflow connections are closed on return, and
        # re-opening one re-runs the PRAGMAs on every request.
        pool_size=40,
        max_overflow=10,
        json_serializer=codec.dumps,
        json_deserializer=codec.loads,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        # FULL: the WAL is synced at every commit. NORMAL syncs only at
        # checkpoints, and a power cut then loses commits already answered.
        cur.execute("PRAGMA synchronous=FULL")
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


def _postgres_engine(url: sa.URL) -> Engine:
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    connect_args = {} if "connect_timeout" in url.query else {"connect_timeout": PG_CONNECT_TIMEOUT}
    codec = jsontext.JsonText()
    return sa.create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        connect_args=connect_args,
        json_serializer=codec.dumps,
        json_deserializer=codec.loads,
    )


def create_engine(url_text: str) -> Engine:
    url = sa.make_url(url_text)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    if url.get_backend_name() == "postgresql":
        return _postgres_engine(url)
    raise StoreError(f"unsupported database URL scheme {url.drivername!r} (sqlite or postgresql)")


def _translated(exc: Exception) -> StoreError:
    if isinstance(exc, sa_exc.DBAPIError):
        return translate(exc)
    # the connection pool ran dry for pool_timeout seconds: the database is too slow
    return StoreUnavailable(f"no database connection available: {exc}")


class Database:
    """An engine plus the two transaction shapes every caller uses, and the
    aggregate stores (``pools``, ...) a composition root hands to services."""

    def __init__(self, url: str) -> None:
        self.url = url
        scheme = sa.make_url(url).drivername
        if sa.make_url(url).get_backend_name() not in ("sqlite", "postgresql"):
            raise StoreError(f"unsupported database URL scheme {scheme!r} (sqlite or postgresql)")
        path = sqlite_path(url)
        try:
            self.file = DbFile(path) if path is not None else None
        except OSError as exc:
            raise StoreUnavailable(f"cannot open the database file {path}: {exc}") from exc
        self.engine = create_engine(url)
        self.backend = self.engine.dialect.name
        self._lost: str | None = None
        self._lost_lock = threading.Lock()
        self.pools: PoolStore = pool_store
        self.idempotency: IdempotencyStore = idempotency_store
        self.tasks: TaskStore = task_store
        self.events: EventStore = event_store
        self.settings: SettingsStore = settings_store
        self.users: UserStore = user_store
        self.nodes: NodeStore = node_store
        self.vms: VmStore = vm_store
        #: pool capacity samples (issue 16.6)
        self.capacity: CapacityStore = capacity_store

    @property
    def lost(self) -> str | None:
        """Why the database file is lost (deleted or replaced), or None."""
        return self._lost

    def _mark_lost(self, reason: str) -> None:
        with self._lost_lock:
            if self._lost is not None:
                return
            self._lost = reason
        log.error(
            "%s while the control plane was running. It will not write to the "
            "lost file again and answers 503 store_unavailable until it is "
            "restarted on a restored database (see 'otherix-api serve --help').",
            reason,
        )

    def check(self) -> None:
        """Raise :class:`StoreLost` when the SQLite file was deleted or replaced
        (one ``stat``); a no-op on PostgreSQL."""
        if self._lost is not None:
            raise StoreLost(self._lost)
        if self.file is None:
            return
        problem = self.file.problem()
        if problem is not None:
            self._mark_lost(problem)
            raise StoreLost(problem)

    def _usable(self) -> None:
        if self._lost is not None:
            raise StoreLost(self._lost)

    @contextlib.contextmanager
    def read(self) -> Iterator[Tx]:
        self._usable()
        try:
            with self.engine.connect() as conn, conn.begin():
                yield Tx(conn)
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
            raise _translated(exc) from exc

    @contextlib.contextmanager
    def read_one(self) -> Iterator[Tx]:
        """For exactly one SELECT on a hot path: no explicit transaction on
        SQLite (the statement is atomic by itself); a normal one elsewhere."""
        self._usable()
        try:
            with self.engine.connect().execution_options(**{_SINGLE: True}) as conn, conn.begin():
                yield Tx(conn)
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
            raise _translated(exc) from exc

    @contextlib.contextmanager
    def write(self) -> Iterator[Tx]:
        """A read-write transaction; on SQLite it holds the write lock from the start.

        The file is checked before (nothing is written to a lost file) and after
        the commit (a commit that went to a file lost meanwhile is not
        acknowledged: the caller gets :class:`StoreLost`, not success)."""
        self.check()
        try:
            with self.engine.connect().execution_options(**{_WRITE: True}) as conn, conn.begin():
                yield Tx(conn)
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
            raise _translated(exc) from exc
        self.check()

    @contextlib.contextmanager
    def rehearse(self) -> Iterator[Tx]:
        """A write transaction that is always rolled back: a dry run.

        It takes the same locks and runs into the same constraints as
        :meth:`write` (a unique violation raises as there), so a dry run decides
        exactly as the real write would; at the end of the block nothing is kept."""
        self.check()
        try:
            with self.engine.connect().execution_options(**{_WRITE: True}) as conn:
                trans = conn.begin()
                try:
                    yield Tx(conn)
                finally:
                    trans.rollback()
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as exc:
            raise _translated(exc) from exc

    def ping(self) -> bool:
        try:
            self.check()
            with self.read() as tx:
                sql(tx).execute(sa.text("SELECT 1"))
        except StoreError:
            return False
        return True

    def close(self) -> None:
        if self._lost is not None:
            # Closing the last connection would checkpoint the WAL into the lost
            # file and unlink the WAL by name, which may be a restored one now.
            log.error("not closing the lost database: %s", self._lost)
            return
        self.engine.dispose()
        if self.file is not None:
            self.file.close()
            self.file = None
