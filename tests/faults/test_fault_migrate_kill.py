"""``kill -9`` of ``otherix-api migrate`` inside a migration's transaction (issue 17,
bad input: "a migration interrupted by kill -9: the next start completes it").

A database at the previous released revision with a row in every table; a real
``otherix-api migrate`` process with the fault-test pause ``debug.pause_at:
{migrate.step.0014: 60s}`` (``otherix.store.migrate``), which stops after
0014's changes (on SQLite a batch copy of ``vm_disks``, which gains a foreign
key) and before its commit; killed there. The database must be usable, at the
revision before 0014 (the migrations before it committed, 0014 rolled back),
with every row intact; on PostgreSQL the advisory lock went with the session.
A second ``otherix-api migrate`` runs the rest to head, rows still intact.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
import yaml

from otherix.store.migrate import current_revision, pending, upgrade
from support.schemafill import PREVIOUS, populate, read_all

#: the migration killed half-way: it copies vm_disks on SQLite (a new foreign key)
KILL_AT = "0014"


def _migrate(tmp_path: Path, url: str, pause_at: str | None) -> subprocess.Popen[str]:
    cfg = tmp_path / "api.yaml"
    body: dict[str, object] = {"data_dir": str(tmp_path / "api"), "database": {"url": url}}
    if pause_at:
        body["debug"] = {"pause_at": {f"migrate.step.{pause_at}": "60s"}}
    cfg.write_text(yaml.safe_dump(body))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTHERIX_")}
    return subprocess.Popen(
        [sys.executable, "-m", "otherix.api", "migrate", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_migrate_killed_inside_a_migration_is_completed_by_the_next(tmp_path, fresh_db) -> None:
    upgrade(fresh_db, PREVIOUS)
    populate(fresh_db.engine)
    before = read_all(fresh_db.engine)
    todo = pending(fresh_db)
    revisions = [s.revision for s in todo]
    kill_at = revisions.index(KILL_AT)
    url = fresh_db.url
    fresh_db.engine.dispose()  # no connection of ours holds a lock

    with _migrate(tmp_path, url, pause_at=KILL_AT) as proc:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "fault point migrate.step" in line:
                break
        assert f"revision={KILL_AT}" in seen[-1], "".join(seen)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # usable, and the interrupted migration left nothing behind
    assert current_revision(fresh_db) == revisions[kill_at - 1]  # those before it stay
    if fresh_db.backend == "sqlite":
        with fresh_db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    now = read_all(fresh_db.engine)
    for name, rows in before.items():
        assert [{k: r[k] for k in rows[0]} for r in now[name]] == rows, name
    cols = {c["name"] for c in sa.inspect(fresh_db.engine).get_columns("vm_disks")}
    assert "move_pool_id" not in cols  # 0014's column, rolled back with its transaction
    fresh_db.engine.dispose()

    with _migrate(tmp_path, url, pause_at=None) as again:
        out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert [ln.split(":")[0] for ln in out.splitlines()[:-1]] == [
        f"ran {rev}" for rev in revisions[kill_at:]
    ]
    assert current_revision(fresh_db) == todo[-1].revision
    after = read_all(fresh_db.engine)
    for name, rows in before.items():
        assert [{k: r[k] for k in rows[0]} for r in after[name]] == rows, name
