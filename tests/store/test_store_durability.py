"""SQLite durability at the store's level: file modes, ``synchronous=FULL``, and a
database file deleted or replaced under an open ``Database``.

The control plane's own view of the same faults (503, logs, restart) is
``tests/faults/test_fault_lost_database.py``; this checks the store's rules on
real files: nothing is written once the file is lost, a commit that went to a
file lost meanwhile is not reported as a success, and the modes are 0600 for
new and for existing files whatever the umask.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from otherix.store import Database, StoreLost
from otherix.store.migrate import upgrade
from otherix.store.settings import store as qs
from otherix.store.tx import sql

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def db(tmp_path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/data/otherix.db")
    upgrade(database)
    try:
        yield database
    finally:
        database.close()


def put(db: Database, key: str) -> None:
    with db.write() as conn:
        qs.put_setting(conn, key, "v", T0)


def keys_in(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT key FROM cluster_settings")}
    finally:
        conn.close()


def test_synchronous_is_full_on_every_connection(db):
    with db.read() as conn:
        assert sql(conn).exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert sql(conn).exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_new_database_files_are_0600_and_a_new_directory_0700(tmp_path, mask):
    with umask(mask):
        database = Database(f"sqlite:///{tmp_path}/new/otherix.db")
        try:
            upgrade(database)
            put(database, "x")
            with database.read() as conn:  # -shm exists once a reader mapped it
                sql(conn).execute(sa.text("SELECT 1"))
            files = {p.name: mode(p) for p in (tmp_path / "new").iterdir()}
        finally:
            database.close()
    assert files == {"otherix.db": 0o600, "otherix.db-wal": 0o600, "otherix.db-shm": 0o600}
    assert mode(tmp_path / "new") == 0o700


def test_existing_database_files_are_set_to_0600_at_open(tmp_path):
    path = tmp_path / "otherix.db"
    old = sqlite3.connect(path)
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE t (x)")
    old.execute("INSERT INTO t VALUES (1)")
    old.commit()  # the connection stays open: -wal and -shm stay too
    try:
        for p in tmp_path.iterdir():
            p.chmod(0o644)
        Database(f"sqlite:///{path}").close()
        modes = {p.name: mode(p) for p in tmp_path.iterdir()}
    finally:
        old.close()
    assert modes == {"otherix.db": 0o600, "otherix.db-wal": 0o600, "otherix.db-shm": 0o600}


def test_a_deleted_file_is_never_written_again(db, tmp_path):
    put(db, "before")
    path = tmp_path / "data" / "otherix.db"
    assert db.file is not None
    held = f"/proc/self/fd/{db.file.fd}"
    path.unlink()
    size = os.stat(held).st_size
    with pytest.raises(StoreLost, match="was deleted"), db.write() as conn:
        qs.put_setting(conn, "after", "v", T0)
    with pytest.raises(StoreLost), db.read():
        pass
    assert db.lost is not None
    assert not db.ping()
    assert os.stat(held).st_size == size
    shutil.copyfile(held, tmp_path / "lost.db")
    shutil.copyfile(f"{path}-wal", tmp_path / "lost.db-wal")
    assert "after" not in keys_in(tmp_path / "lost.db")
    assert "before" in keys_in(tmp_path / "lost.db")


def test_a_commit_that_went_to_a_file_lost_meanwhile_is_not_a_success(db, tmp_path):
    path = tmp_path / "data" / "otherix.db"

    def racing() -> None:
        with db.write() as conn:
            qs.put_setting(conn, "racing", "v", T0)
            path.unlink()  # between the check before and the commit

    with pytest.raises(StoreLost, match="was deleted"):
        racing()
    assert db.lost is not None


def test_a_replaced_file_is_noticed_by_check_and_the_old_one_kept_as_it_was(db, tmp_path):
    put(db, "before")
    path = tmp_path / "data" / "otherix.db"
    os.rename(path, tmp_path / "data" / "moved.db")
    shutil.copyfile(tmp_path / "data" / "moved.db", path)
    with pytest.raises(StoreLost, match="was replaced by another file"):
        db.check()
    with pytest.raises(StoreLost), db.write() as conn:
        qs.put_setting(conn, "after", "v", T0)
    assert db.lost is not None
    assert "replaced" in db.lost


def test_close_leaves_a_lost_database_alone(db, tmp_path):
    """Closing would checkpoint into the lost inode and unlink the WAL by name."""
    put(db, "before")
    path = tmp_path / "data" / "otherix.db"
    path.unlink()
    with pytest.raises(StoreLost):
        db.check()
    wal = Path(f"{path}-wal")
    size = wal.stat().st_size
    db.close()
    assert wal.exists()
    assert wal.stat().st_size == size


def test_postgresql_has_no_file_to_lose(pg_database):
    database = Database(pg_database)
    try:
        assert database.file is None
        database.check()  # a no-op
    finally:
        database.close()
