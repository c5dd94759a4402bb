"""The SQLite file deleted or replaced under a running control plane.

The control plane is an ``otherix-api serve`` process (``CpProcess``). Once it
holds a pool, its database file is deleted (``unlink``: the process keeps
the inode open, as SQLite would go on writing to it), or replaced (renamed
aside and a copy put in its place). Required, for each:

- the server notices by itself (the ``store-watch`` worker logs what happened,
  once), ``/readyz`` and the next write answer 503 ``store_unavailable`` with
  ``Retry-After``, and so do reads from then on;
- nothing is written to the lost file: the unlinked inode (read through
  ``/proc/<pid>/fd``) or the renamed file keeps its size and bytes, and with
  its WAL copied beside it holds the first pool and not the refused one;
- the server stops without checkpointing into the lost file (exit 1) and
  leaves the WAL where it was.

After the deletion, a restart on the data directory (which still holds its
``cluster-id`` marker) refuses with a message that names the missing file,
the cluster and ``--init``; ``serve --init`` starts a new, empty cluster, with
the lost database's WAL moved aside so SQLite cannot replay it into the new file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cphelpers import API_EXE, POOLS_PREFIX, CpProcess, join_node

from support.harness import wait_until

pytestmark = [pytest.mark.slow]

NODE = "lost-node"


def _pool(c: httpx.Client, name: str) -> httpx.Response:
    body = {"node": NODE, "name": name, "type": "local_dir", "path": POOLS_PREFIX + name}
    return c.post("/v1/storage-pools", json=body)


def _start(tmp_path: Path) -> tuple[CpProcess, str]:
    cp = CpProcess(tmp_path / "api").start()
    join_node(cp, NODE)
    with cp.client() as c:
        r = _pool(c, "before")
        assert r.status_code == 201, r.text
    return cp, r.json()["id"]


def _fingerprint(path: Path | str) -> tuple[int, str]:
    data = Path(path).read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


def _deleted_db_fd(pid: int, db: Path) -> Path:
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with_name = os.readlink(fd)
        if with_name == f"{db} (deleted)":
            return fd
    raise AssertionError(f"the server holds no descriptor on the deleted {db}")


def _pools_in(db_copy: Path, wal: Path) -> set[str]:
    """Pool names of a copy of the lost file, with a copy of its WAL beside it."""
    shutil.copyfile(wal, f"{db_copy}-wal")
    conn = sqlite3.connect(db_copy)
    try:
        return {row[0] for row in conn.execute("SELECT name FROM storage_pools")}
    finally:
        conn.close()


def _assert_refused(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "store_unavailable", r.text
    assert r.json()["error"]["details"]["reason"] == "database_lost"
    assert int(r.headers["retry-after"]) > 0


def _noticed(cp: CpProcess, what: str) -> None:
    wait_until(lambda: what in cp.log_path.read_text(), 15, f"{what!r} in the server's log")


@pytest.mark.timeout(180)
def test_a_deleted_database_is_noticed_never_written_and_not_replaced_at_restart(
    tmp_path, reliability
) -> None:
    cp, _ = _start(tmp_path)
    db = cp.data_dir / "otherix.db"
    wal = Path(f"{db}-wal")
    try:
        assert cp.proc is not None
        pid = cp.proc.pid
        db.unlink()
        fd = _deleted_db_fd(pid, db)
        lost_before = _fingerprint(fd)
        _noticed(cp, f"the database file {db} was deleted")  # by the worker, unasked
        with cp.client() as c:
            write = _pool(c, "after")
            ready = c.get("/readyz")
            read = c.get("/v1/storage-pools")
        for r in (write, ready, read):
            _assert_refused(r)
        time.sleep(2)  # two store-watch passes: nothing may write meanwhile either
        lost_after = _fingerprint(fd)
        wal_at_stop = _fingerprint(wal)
        shutil.copyfile(fd, tmp_path / "lost.db")
        in_lost = _pools_in(tmp_path / "lost.db", wal)
        assert cp.kill(15) == 1  # SIGTERM: drains, then exits 1 without closing the store
    finally:
        cp.stop()
    log = cp.log_path.read_text()
    assert log.count(f"{db} was deleted while the control plane was running") == 1, log
    assert lost_after == lost_before
    assert in_lost == {"before"}, in_lost
    assert _fingerprint(wal) == wal_at_stop  # no checkpoint at exit, the WAL is still there

    restart = subprocess.run(
        [str(API_EXE), "serve", "--data-dir", str(cp.data_dir), "--listen", f"127.0.0.1:{cp.port}"],
        env=cp._env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert restart.returncode == 1, restart.stderr
    marker = (cp.data_dir / "cluster-id").read_text().strip()
    assert f"its database {db} is missing" in restart.stderr, restart.stderr
    assert f"initialised for cluster {marker}" in restart.stderr
    assert "--init" in restart.stderr
    assert not db.exists()  # refused before anything was created

    fresh = CpProcess(cp.data_dir)
    fresh.log_path = tmp_path / "init.log"
    fresh.extra_args = ["--init"]
    try:
        fresh.start()
        with fresh.client() as c:
            pools = c.get("/v1/storage-pools").json()["data"]
            assert c.get("/readyz").status_code == 200
    finally:
        fresh.stop()
    assert pools == []  # a new, empty cluster, on purpose
    new_marker = (cp.data_dir / "cluster-id").read_text().strip()
    assert new_marker != marker
    assert list(cp.data_dir.glob("otherix.db-wal.orphaned-*"))  # the old WAL set aside
    reliability.record(
        "SQLite file deleted under a running control plane",
        injected=1,
        survived=1,
        checked=3 + 1,
        lost=0,
        detail="worker noticed it; /readyz, write and read answered 503 store_unavailable; "
        "unlinked inode unchanged; restart refused; --init started afresh",
    )


@pytest.mark.timeout(120)
def test_a_replaced_database_is_noticed_and_the_old_file_never_written(
    tmp_path, reliability
) -> None:
    cp, _ = _start(tmp_path)
    db = cp.data_dir / "otherix.db"
    aside = cp.data_dir / "otherix.db.moved"
    try:
        os.rename(db, aside)
        shutil.copyfile(aside, db)  # another file, another inode, at the same path
        replacement = _fingerprint(db)
        with cp.client() as c:
            write = _pool(c, "after")  # at once: the write path checks before it writes
            ready = c.get("/readyz")
        for r in (write, ready):
            _assert_refused(r)
        _noticed(cp, f"the database file {db} was replaced by another file")
        old = _fingerprint(aside)
        time.sleep(2)
        assert _fingerprint(aside) == old
        assert _fingerprint(db) == replacement
        shutil.copyfile(aside, tmp_path / "old.db")
        in_old = _pools_in(tmp_path / "old.db", Path(f"{db}-wal"))
    finally:
        cp.stop()
    assert in_old == {"before"}, in_old
    reliability.record(
        "SQLite file replaced under a running control plane",
        injected=1,
        survived=1,
        checked=2,
        lost=0,
        detail="write and /readyz answered 503 store_unavailable; old and new file unchanged",
    )
