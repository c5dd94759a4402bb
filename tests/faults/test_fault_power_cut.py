"""A real power cut: every pool create that answered 201 is on the disk.

The control plane is an ``otherix-api serve`` process (``CpProcess``) whose
data directory, SQLite database included, is on a small ext4 filesystem on a
loop device. After it has started, and a control database beside it has been
set up, the filesystem is flushed (``syncfs``): the device then holds a
healthy, empty cluster. Then:

1. ``N`` pool creates, one after the other, each answered 201;
2. ``N`` inserts by a bare ``sqlite3`` writer at ``synchronous=NORMAL`` into
   the control database, each committed (acknowledged);
3. the control plane is SIGKILLed (it writes nothing more; the kernel keeps
   whatever it had not written to the device in memory, as at a power cut);
4. the device is read with ``O_DIRECT`` (``dd iflag=direct``) into an image.

Why that image is what a power cut leaves: an ``O_DIRECT`` read of the block
device bypasses every page cache and returns what the filesystem has sent to
the device. Data a process wrote but nobody synced sits in the page cache of
its file (the kernel writes it back after ``dirty_expire_centisecs``, 30 s
here, which the whole procedure stays well inside) and is missing from the
image, which is exactly what a power cut loses. The image errs on the kind
side in one way only: a write the device got but had not flushed from its own
cache would be lost on real hardware and is kept here; ``synchronous=FULL``
issues those flushes, so it does not depend on that.

The image is mounted on a second loop device (ext4 replays its journal, as
after the crash) and opened with SQLite (which recovers its WAL). Required:
every acknowledged pool is there, and the store passes the integrity checks.
The control proves the injection is real in the same cut: the NORMAL writer's
acknowledged rows are lost (most or all of them; the issue saw 20 of 20).
Both figures go to the reliability table.
"""

from __future__ import annotations

import os
import sqlite3

import pytest
from blockdev import device_image, ext4_on_loop, mounted_image, syncfs
from cphelpers import POOLS_PREFIX, CpProcess, join_node, store_problems

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for loop devices and mounts"),
]

N = 20
NODE = "power-node"


def _control_writer(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE acked (i INTEGER PRIMARY KEY)")
    return db


def _pool_ids(db_path: str) -> set[str]:
    db = sqlite3.connect(db_path)
    try:
        return {row[0] for row in db.execute("SELECT id FROM storage_pools")}
    finally:
        db.close()


@pytest.mark.timeout(300)
def test_every_acknowledged_pool_survives_a_power_cut(tmp_path, reliability) -> None:
    with ext4_on_loop(tmp_path, "disk") as (dev, disk):
        cp = CpProcess(disk / "api")
        cp.log_path = tmp_path / "api.log"  # off the device under test
        control = None
        try:
            cp.start()
            join_node(cp, NODE)
            control = _control_writer(str(disk / "control.db"))
            syncfs(disk)  # the device now holds the started cluster and the empty control table

            acked: list[str] = []
            with cp.client() as c:
                for i in range(N):
                    body = {
                        "node": NODE,
                        "name": f"cut-{i:02d}",
                        "type": "local_dir",
                        "path": f"{POOLS_PREFIX}cut-{i:02d}",
                    }
                    r = c.post("/v1/storage-pools", json=body)
                    assert r.status_code == 201, r.text
                    acked.append(r.json()["id"])
            for i in range(N):
                control.execute("BEGIN")
                control.execute("INSERT INTO acked VALUES (?)", (i,))
                control.execute("COMMIT")  # acknowledged at NORMAL: in the WAL, unsynced
            cp.kill()
            device_image(dev, tmp_path / "after-cut.img")
        finally:
            cp.stop()
            if control is not None:
                control.close()

    with mounted_image(tmp_path / "after-cut.img", tmp_path / "after-cut") as after:
        found = _pool_ids(str(after / "api" / "otherix.db"))
        report = store_problems(f"sqlite:///{after}/api/otherix.db")
        kept = sqlite3.connect(str(after / "control.db"))
        try:
            control_rows = kept.execute("SELECT count(*) FROM acked").fetchone()[0]
        finally:
            kept.close()

    lost = [pid for pid in acked if pid not in found]
    control_lost = N - control_rows
    reliability.record(
        "power cut after 201: SQLite control plane (synchronous=FULL)",
        injected=1,
        survived=int(not lost and not report.problems),
        checked=len(acked),
        lost=len(lost),
        detail=f"{N} pool creates answered 201 on ext4 on a loop device, SIGKILL, device "
        "read with O_DIRECT, image mounted on a second loop device",
    )
    reliability.record(
        "power cut control: bare SQLite writer at synchronous=NORMAL (loss expected)",
        injected=1,
        survived=0,
        checked=N,
        lost=control_lost,
        detail="the same cut; proves it drops unsynced commits",
    )
    assert control_lost >= N // 2, f"the cut kept {control_rows} of {N} unsynced commits"
    assert not report.problems, report.problems
    assert not lost, f"{len(lost)} of {N} acknowledged pools lost: {lost}"
