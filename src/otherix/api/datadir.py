"""The control plane's data directory: its mode, and the marker that says which
cluster it belongs to.

Called by ``bootstrap.open_deps`` (``serve``, ``quickstart``) and by
``otherix-api migrate``. The directory holds password and token hashes, so it
is kept 0700 (files in it are 0600). The marker ``{data_dir}/cluster-id``
holds the cluster id (``cluster_settings.cluster_id``); it is written once the
database holds that id. A later start compares the two: a data directory that
names a cluster whose database is missing, empty or another cluster's is a
lost, dropped or wrong database, and the start is refused
(:class:`DataDirMismatch`) instead of creating an empty cluster. ``--init``
accepts the database as it is and rewrites the marker.

:func:`mismatch` is the rule, without I/O (table-tested).

The lock ``{data_dir}/serve.lock``: every control plane on the directory
(``serve``, ``quickstart``) holds a shared ``flock`` on it for its life
(:func:`hold_shared`, taken by ``bootstrap.open_store``); ``otherix-api
restore`` takes it exclusively (:func:`hold_exclusive`), so a restore is refused
while a control plane runs there, and a control plane does not start during a restore.
"""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import time
import uuid
from pathlib import Path

from otherix.fsatomic import atomic_write

log = logging.getLogger("otherix.api")

MARKER = "cluster-id"
LOCK = "serve.lock"
DIR_MODE = 0o700
#: files of ours: a directory holding one of them is ours to chmod
OWN_FILES = (MARKER, "otherix.db", "jwt-secret")


class DataDirMismatch(Exception):
    """The data directory belongs to a cluster the database does not hold."""


def prepare(data_dir: Path) -> None:
    """Create the data directory 0700, or set an existing one of ours to 0700.

    A directory that already holds other things and none of ours (``data_dir``
    pointed at a shared directory such as ``/var/lib``) keeps its mode, with a
    warning: changing it would break whatever else lives there."""
    if not data_dir.exists():
        data_dir.mkdir(parents=True, mode=DIR_MODE)
        data_dir.chmod(DIR_MODE)  # mkdir's mode is filtered by the umask
        return
    secret = data_dir / "jwt-secret"
    if secret.exists() and stat.S_IMODE(secret.stat().st_mode) != 0o600:
        secret.chmod(0o600)
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    if mode == DIR_MODE:
        return
    entries = {p.name for p in data_dir.iterdir()}
    if entries and not entries & set(OWN_FILES):
        log.warning(
            "data_dir %s (mode %o) holds files that are not the control plane's; "
            "leaving its mode alone: give the control plane a directory of its own",
            data_dir,
            mode,
        )
        return
    data_dir.chmod(DIR_MODE)
    log.info("data_dir %s: mode %o set to %o", data_dir, mode, DIR_MODE)


class DataDirBusy(DataDirMismatch):
    """The data directory's lock is held by another process."""


class DataDirLock:
    """A held ``flock`` on ``{data_dir}/serve.lock``; released by :meth:`release`
    or when the process ends."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)  # closing the descriptor drops the flock


def _lock(data_dir: Path, mode: int) -> DataDirLock | None:
    fd = os.open(data_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != 0o600:
            os.fchmod(fd, 0o600)
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return DataDirLock(fd)


def hold_shared(data_dir: Path) -> DataDirLock:
    """The lock every running control plane holds (several may share it)."""
    lock = _lock(data_dir, fcntl.LOCK_SH)
    if lock is None:
        raise DataDirBusy(
            f"data directory {data_dir} is locked by a running 'otherix-api restore'; "
            "start the control plane when it has finished"
        )
    return lock


def hold_exclusive(data_dir: Path) -> DataDirLock | None:
    """The lock a restore holds, or None when a control plane (or another
    restore) holds the directory's lock."""
    return _lock(data_dir, fcntl.LOCK_EX)


def read_marker(data_dir: Path) -> str | None:
    """The cluster id the data directory was initialised for, or None (never initialised)."""
    path = data_dir / MARKER
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise DataDirMismatch(
            f"the data-directory marker {path} is damaged (it should hold a cluster id, "
            f"found {text[:60]!r}); restore it from a backup, or start with --init to "
            "accept the database as it is"
        ) from None


def write_marker(data_dir: Path, cluster_id: str) -> None:
    """Write the marker (0600) atomically and durably: ``otherix.fsatomic.atomic_write``."""
    atomic_write(data_dir / MARKER, f"{cluster_id}\n".encode(), 0o600)


def set_aside_leftovers(db_file: Path) -> list[Path]:
    """Before a new database is made where one was lost: rename the lost one's
    ``-wal``/``-shm``/``-journal`` aside, or SQLite would replay the old WAL
    into the new, empty file. Returns the new names."""
    moved = []
    stamp = int(time.time())
    for suffix in ("-wal", "-shm", "-journal"):
        side = Path(f"{db_file}{suffix}")
        if side.exists():
            aside = side.with_name(f"{side.name}.orphaned-{stamp}")
            side.rename(aside)
            log.warning("%s belongs to no database here; moved to %s", side, aside)
            moved.append(aside)
    return moved


def missing_file(data_dir: Path, marker: str, db_file: Path) -> str:
    return (
        f"data directory {data_dir} was initialised for cluster {marker}, but its "
        f"database {db_file} is missing. Starting now would create a new, empty "
        "cluster and forget every node, pool and user. Restore the database to "
        f"{db_file} (with the backup's own -wal file if it has one, and without the "
        "lost database's -wal and -shm files), or start with --init to create a new, "
        "empty cluster on purpose."
    )


def mismatch(data_dir: Path, marker: str | None, stored: str | None, database: str) -> str | None:
    """Why this database must not be used with this data directory, or None."""
    if marker is None or stored == marker:
        return None
    if stored is None:
        return (
            f"data directory {data_dir} was initialised for cluster {marker}, but the "
            f"database {database} holds no cluster (it is empty: a lost, dropped or wrong "
            "database?). Starting now would create a new, empty cluster. Restore the "
            "database, point database.url at cluster "
            f"{marker}'s database, or start with --init to create a new, empty cluster "
            "on purpose."
        )
    return (
        f"data directory {data_dir} was initialised for cluster {marker}, but the "
        f"database {database} holds cluster {stored}: the wrong database? Point "
        f"database.url at cluster {marker}'s database, or start with --init to make "
        f"this data directory belong to cluster {stored}."
    )
