"""``kill -9`` of ``otherix-api migrate`` inside a migration's transaction (issue 17,
bad input: "a migration interrupted by kill -9: the next start completes it").

A database at the previous released revision with a row in every table; a real
``otherix-api migrate`` process with the fault-test pause ``debug.pause_at:
{migrate.step: 60s}`` (``otherix.store.migrate``), which stops after the first
migration's changes and before its commit; killed there. The database must be
usable and still at the revision before (the transaction rolled back, on
SQLite the batch copy of ``pool_status`` included, on PostgreSQL the advisory
lock released with the session), and a second ``otherix-api migrate`` runs
every pending migration to head with every row intact.
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


def _migrate(tmp_path: Path, url: str, pause: bool) -> subprocess.Popen[str]:
    cfg = tmp_path / "api.yaml"
    body: dict[str, object] = {"data_dir": str(tmp_path / "api"), "database": {"url": url}}
    if pause:
        body["debug"] = {"pause_at": {"migrate.step": "60s"}}
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
    url = fresh_db.url
    fresh_db.engine.dispose()  # no connection of ours holds a lock

    with _migrate(tmp_path, url, pause=True) as proc:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if "fault point migrate.step" in line:
                break
        assert f"revision={todo[0].revision}" in seen[-1], "".join(seen)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # usable, and the interrupted migration left nothing behind
    assert current_revision(fresh_db) == PREVIOUS
    if fresh_db.backend == "sqlite":
        with fresh_db.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    assert read_all(fresh_db.engine) == before
    cols = {c["name"] for c in sa.inspect(fresh_db.engine).get_columns("pool_status")}
    assert "drift" not in cols  # 0012's column, rolled back with its transaction
    fresh_db.engine.dispose()

    with _migrate(tmp_path, url, pause=False) as again:
        out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert [ln.split(":")[0] for ln in out.splitlines()[:-1]] == [f"ran {s.revision}" for s in todo]
    assert current_revision(fresh_db) == todo[-1].revision
    after = read_all(fresh_db.engine)
    for name, rows in before.items():
        assert [{k: r[k] for k in rows[0]} for r in after[name]] == rows, name
