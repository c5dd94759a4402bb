"""Running Alembic migrations programmatically (at API start and ``otherix-api migrate``).

Called by ``otherix.api.bootstrap.open_deps`` (``serve``, ``quickstart``) and by
``otherix-api migrate``. :func:`upgrade` runs under :func:`migration_lock`, so
two replicas that start together never race: the second waits, then finds
nothing (or less) to do.

- PostgreSQL: a session-level ``pg_advisory_lock`` (:data:`PG_LOCK_KEY`) on a
  connection of its own, held from before the current revision is read until
  the last migration's transaction committed; a process that dies loses its
  session and so the lock.
- SQLite: an ``flock`` on the database file itself, through the descriptor
  ``Database`` holds on it (a SQLite file is shared only by processes of one
  host). SQLite's own write lock covers each migration's transaction, not the
  read of the revision before it, hence the extra lock; SQLite uses POSIX
  locks, which do not interact with ``flock`` on Linux.

Each migration runs in its own transaction (``migrations/env.py``), DDL
included on both backends, with its ``alembic_version`` update: a process
killed inside one leaves the database at the revision before it, and the next
``migrate`` or start runs it again from there.

``pause_at`` is a fault-test hook (``debug.pause_at`` of the API settings):
``{"migrate.step": seconds}`` logs ``fault point migrate.step revision=ID``
after each migration's changes, before its commit, and sleeps, so a test can
kill the process inside the transaction; ``migrate.step.ID`` pauses at that
revision only. Empty by default: no pause.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from otherix.store.engine import Database

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: the advisory lock key on PostgreSQL ("otherix" as a number, any fixed int64)
PG_LOCK_KEY = 0x6F7468657269
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Step:
    """One migration: its revision id and the first line of its docstring."""

    revision: str
    title: str


def alembic_config(db: Database) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = db.engine
    return cfg


@contextlib.contextmanager
def migration_lock(db: Database) -> Iterator[None]:
    """Held while migrations are read and run (module docstring)."""
    if db.backend == "postgresql":
        with db.engine.connect() as conn:
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
            if not got.scalar():
                log.info("another process is migrating this database; waiting for it")
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": PG_LOCK_KEY})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LOCK_KEY})
                conn.commit()
        return
    if db.file is None:  # in-memory SQLite: one process by definition
        yield
        return
    # flock (not SQLite's POSIX locks, which it does not touch on Linux) on the
    # descriptor the Database holds for its file: no lock file, and released
    # with LOCK_UN, never by closing a descriptor (which would drop SQLite's locks)
    fd = db.file.fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("another process is migrating %s; waiting for it", db.file.path)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _pause_hook(pause_at: Mapping[str, float]) -> Any:
    every = float(pause_at.get("migrate.step", 0))
    by_revision = {
        point.removeprefix("migrate.step."): float(seconds)
        for point, seconds in pause_at.items()
        if point.startswith("migrate.step.")
    }
    if every <= 0 and not any(v > 0 for v in by_revision.values()):
        return None

    def on_version_apply(*, step: Any, **_: Any) -> None:
        seconds = by_revision.get(step.up_revision_id, every)
        if seconds > 0:
            log.warning("fault point migrate.step revision=%s", step.up_revision_id)
            time.sleep(seconds)

    return on_version_apply


def pending(db: Database, revision: str = "head") -> list[Step]:
    """The migrations an :func:`upgrade` to ``revision`` would run, oldest first."""
    script = ScriptDirectory.from_config(alembic_config(db))
    current = current_revision(db)
    steps = [
        Step(rev.revision, (rev.doc or "").strip().splitlines()[0] if rev.doc else "")
        for rev in script.iterate_revisions(revision, current)
    ]
    return list(reversed(steps))


def upgrade(
    db: Database, revision: str = "head", *, pause_at: Mapping[str, float] | None = None
) -> list[Step]:
    """Run the pending migrations under the lock; returns those that ran."""
    with migration_lock(db):
        steps = pending(db, revision)
        if steps:
            cfg = alembic_config(db)
            hook = _pause_hook(pause_at or {})
            if hook is not None:
                cfg.attributes["on_version_apply"] = hook
            command.upgrade(cfg, revision)
    return steps


def current_revision(db: Database) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
