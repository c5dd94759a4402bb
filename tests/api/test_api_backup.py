"""``otherix-api backup`` and ``restore`` (issue 17.3): a backup taken while a real
server answers concurrent creates holds every create acknowledged before it
began; a restore into a fresh data directory passes SQLite's integrity checks;
and every refusal (truncated, damaged, newer schema, wrong backend, a database
with tables, a running control plane) changes nothing. One server and one
backup for the module; PostgreSQL when ``OTHERIX_TEST_POSTGRES_URL`` is set."""

from __future__ import annotations

import shutil
import sqlite3
import tarfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from otherix.api import backup as bk
from otherix.api import datadir
from otherix.api.bootstrap import open_deps
from otherix.api.main import cli
from otherix.store import Database
from otherix.store.migrate import current_revision, upgrade
from otherix.store.snapshot import ToolMissing, head_revision, pg_check_archive
from support import pg
from support.factories import Api, with_roles
from support.server import ApiServer, make_settings


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="otherix-api")


def usernames(db_file: Path) -> set[str]:
    conn = sqlite3.connect(db_file)
    try:
        return {r[0] for r in conn.execute("SELECT username FROM users")}
    finally:
        conn.close()


class Writer:
    """Creates users through the API in a thread; remembers each acknowledged one."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.acked: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.api.client("admin") as c:
            while not self.stop.is_set():
                name = f"u{uuid.uuid4().hex[:10]}"
                body = {"username": name, "password": "password-1", "role": "viewer"}
                if c.post("/v1/users", json=body).status_code == 201:
                    self.acked.append(name)


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[tuple[Api, Path]]:
    root = tmp_path_factory.mktemp("backup-live")
    server = ApiServer(make_settings(root / "api")).start()
    try:
        yield with_roles(server, roles=("admin",)), root / "api"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def taken(live, tmp_path_factory) -> tuple[Path, set[str]]:
    """A backup taken under write load, and the users acknowledged before it began."""
    api, data_dir = live
    writer = Writer(api)
    writer.thread.start()
    try:
        while len(writer.acked) < 5:
            threading.Event().wait(0.01)
        before = set(writer.acked)
        archive = tmp_path_factory.mktemp("backup-out") / "otherix.tar"
        result = run("backup", "--data-dir", str(data_dir), "--to", str(archive))
        after = len(writer.acked)
    finally:
        writer.stop.set()
        writer.thread.join(timeout=10)
    assert result.exit_code == 0, result.output
    assert "backup written to" in result.stderr
    assert after > len(before)  # the server kept acknowledging creates meanwhile
    return archive, before


def test_backup_under_load_restores_every_acknowledged_create(taken, tmp_path):
    archive, before = taken
    target = tmp_path / "fresh"
    result = run("restore", "--data-dir", str(target), "--from", str(archive))
    assert result.exit_code == 0, result.output
    db_file = target / "otherix.db"
    assert before <= usernames(db_file)
    conn = sqlite3.connect(db_file)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()
    manifest, _ = bk.read_archive(archive, tmp_path)
    assert manifest.schema_revision == head_revision()
    assert (target / "cluster-id").read_text().strip() == manifest.cluster_id
    # a second restore over it is refused without --force, and accepted with it
    again = run("restore", "--data-dir", str(target), "--from", str(archive))
    assert again.exit_code == 1
    assert "already holds a database with tables" in again.stderr
    forced = run("restore", "--data-dir", str(target), "--from", str(archive), "--force")
    assert forced.exit_code == 0, forced.output
    # and the restored directory serves
    server = ApiServer(make_settings(target)).start()
    try:
        assert server.login("admin", "admin-password-1")
    finally:
        server.stop()


def test_backup_never_replaces_a_file_without_force(taken, live):
    archive, _ = taken
    size = archive.stat().st_size
    result = run("backup", "--data-dir", str(live[1]), "--to", str(archive))
    assert result.exit_code == 1
    assert "exists; pass --force" in result.stderr
    assert archive.stat().st_size == size


def refused(archive: Path, target: Path, *extra: str) -> str:
    result = run("restore", "--data-dir", str(target), "--from", str(archive), *extra)
    assert result.exit_code == 1, result.output
    assert "Nothing was changed" in result.stderr
    return result.stderr


def test_truncated_backup_is_refused(taken, tmp_path):
    archive, _ = taken
    cut = tmp_path / "cut.tar"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    assert "truncated" in refused(cut, tmp_path / "t", "--force")
    assert not (tmp_path / "t").exists()


def test_damaged_payload_is_refused_by_its_checksum(taken, tmp_path):
    archive, _ = taken
    damaged = tmp_path / "damaged.tar"
    shutil.copy(archive, damaged)
    with tarfile.open(archive) as tar:
        offset = tar.getmember(bk.PAYLOAD).offset_data + 5000
    with damaged.open("r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0xFF]))
    assert "sha256" in refused(damaged, tmp_path / "t", "--force")
    assert not (tmp_path / "t").exists()


def test_backup_of_a_newer_schema_is_refused_naming_both_revisions(taken, tmp_path):
    archive, _ = taken
    manifest, payload = bk.read_archive(archive, tmp_path)
    conn = sqlite3.connect(payload)
    conn.execute("UPDATE alembic_version SET version_num = '0099_future'")
    conn.commit()
    conn.close()
    newer = tmp_path / "newer.tar"
    manifest = replace(
        manifest,
        schema_revision="0099_future",
        payload_size=payload.stat().st_size,
        payload_sha256=bk._sha256(payload),
    )
    bk.write_archive(newer, manifest, payload, force=False)
    message = refused(newer, tmp_path / "t", "--force")
    assert "0099_future" in message
    assert head_revision() in message
    assert not (tmp_path / "t").exists()


def test_backup_of_another_backend_is_refused(taken, tmp_path):
    archive, _ = taken
    url = "postgresql+psycopg://nobody@127.0.0.1:1/none"
    message = refused(archive, tmp_path / "t", "--database-url", url, "--force")
    assert "sqlite backup" in message


def test_a_data_directory_of_another_cluster_takes_the_backup_only_with_force(taken, tmp_path):
    archive, _ = taken
    target = tmp_path / "other"
    target.mkdir()
    (target / "cluster-id").write_text(f"{uuid.uuid4()}\n")  # its database was lost
    assert "belongs to cluster" in refused(archive, target)
    assert not (target / "otherix.db").exists()
    result = run("restore", "--data-dir", str(target), "--from", str(archive), "--force")
    assert result.exit_code == 0, result.output
    manifest, _ = bk.read_archive(archive, tmp_path)
    assert (target / "cluster-id").read_text().strip() == manifest.cluster_id


def test_restore_is_refused_while_a_control_plane_runs(taken, live):
    archive, data_dir = taken[0], live[1]
    db_file = data_dir / "otherix.db"
    inode = db_file.stat().st_ino
    assert "a control plane is running" in refused(archive, data_dir, "--force")
    assert db_file.stat().st_ino == inode


# -- PostgreSQL ---------------------------------------------------------------------


@pytest.fixture
def pg_pair() -> Iterator[tuple[str, str]]:
    if not pg.base_url():
        pytest.skip(f"{pg.ENV} not set")
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump or pg_restore is not on PATH")
    first, second = pg.create_database(), pg.create_database()
    try:
        yield first, second
    finally:
        pg.drop_database(first)
        pg.drop_database(second)


@pytest.mark.postgres
def test_postgres_backup_and_restore(pg_pair, tmp_path):
    source, target = pg_pair
    server = ApiServer(make_settings(tmp_path / "src", source)).start()
    try:
        api = with_roles(server, roles=("admin",))
        with api.client("admin") as c:
            body = {"username": "kept-user", "password": "password-1", "role": "viewer"}
            assert c.post("/v1/users", json=body).status_code == 201
        archive = tmp_path / "pg.tar"
        result = run("backup", "--data-dir", str(tmp_path / "src"), "--database-url", source,
                     "--to", str(archive))  # fmt: skip
        assert result.exit_code == 0, result.output
    finally:
        server.stop()
    db = Database(target)
    upgrade(db)  # a target with tables: refused without --force
    db.close()
    args = ["restore", "--data-dir", str(tmp_path / "dst"), "--database-url", target]
    result = run(*args, "--from", str(archive))
    assert result.exit_code == 1
    assert "already holds a database with tables" in result.stderr
    other = Database(target)  # another replica still connected: refused
    try:
        assert other.ping()
        result = run(*args, "--from", str(archive), "--force")
        assert result.exit_code == 1
        assert "other session(s) are connected" in result.stderr
    finally:
        other.close()
    result = run(*args, "--from", str(archive), "--force")
    assert result.exit_code == 0, result.output
    restored = ApiServer(make_settings(tmp_path / "dst", target)).start()
    try:
        assert restored.login("admin", "admin-password-1")
        users = restored.services.user_service
        assert "kept-user" in {u.username for u in users.list_users()}
    finally:
        restored.stop()


def test_a_control_plane_does_not_start_during_a_restore(tmp_path):
    data_dir = tmp_path / "api"
    data_dir.mkdir()
    lock = datadir.hold_exclusive(data_dir)  # what a running restore holds
    assert lock is not None
    try:
        with pytest.raises(datadir.DataDirBusy, match="otherix-api restore"):
            open_deps(make_settings(data_dir))
    finally:
        lock.release()
    assert not (data_dir / "otherix.db").exists()


def test_an_older_schema_is_restored_as_it_is_and_serve_migrates_it(tmp_path):
    old = tmp_path / "old" / "otherix.db"
    db = Database(f"sqlite:///{old}")
    upgrade(db, "0012")
    db.close()
    archive = tmp_path / "old.tar"
    url = f"sqlite:///{old}"
    taken = run(
        "backup", "--data-dir", str(old.parent), "--database-url", url, "--to", str(archive)
    )
    assert taken.exit_code == 0, taken.output
    target = tmp_path / "new"
    result = run("restore", "--data-dir", str(target), "--from", str(archive))
    assert result.exit_code == 0, result.output
    assert "'otherix-api serve' migrates it at start" in result.stderr
    assert f"older than this otherix's ({head_revision()})" in result.stderr
    db = Database(f"sqlite:///{target / 'otherix.db'}")
    try:
        assert current_revision(db) == "0012"  # restore itself never migrates
    finally:
        db.close()


def test_pg_tools_missing_from_path_is_said_plainly(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolMissing, match="pg_restore is not on PATH"):
        pg_check_archive(tmp_path / "x")
