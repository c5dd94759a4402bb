"""The data directory at start: its mode, its ``cluster-id`` marker, and the refusal
to start a lost, dropped or wrong database as if it were a new cluster.

``open_deps`` is what ``otherix-api serve`` and ``quickstart`` call; the real
process is exercised in ``tests/faults/test_fault_lost_database.py``.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from otherix.api import datadir
from otherix.api.bootstrap import open_deps
from otherix.api.datadir import DataDirMismatch, mismatch
from otherix.api.main import cli
from support import pg
from support.server import make_settings

# fixed ids: parametrized test ids must be the same in every xdist worker
X, Y = "516b926a-3b1a-461d-8885-cd1798319cbf", "57730da5-f1ee-4e0e-b24b-8df0d9f291dc"
D = Path("/srv/api")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def start(data_dir: Path, url: str | None = None, **kw):
    deps = open_deps(make_settings(data_dir, url), **kw)
    deps.db.close()
    return deps


@pytest.mark.parametrize(
    ("marker", "stored", "refused_with"),
    [
        (None, None, None),  # a new data directory: anything goes
        (None, Y, None),  # a data directory from before markers: adopted
        (X, X, None),
        (X, None, f"initialised for cluster {X}, but the database db holds no cluster"),
        (X, Y, f"initialised for cluster {X}, but the database db holds cluster {Y}"),
    ],
)
def test_mismatch_rule(marker, stored, refused_with):
    problem = mismatch(D, marker, stored, "db")
    if refused_with is None:
        assert problem is None
    else:
        assert problem is not None
        assert refused_with in problem
        assert "--init" in problem


def test_a_new_data_dir_is_0700_and_gets_the_cluster_id_marker(tmp_path):
    old = os.umask(0o022)
    try:
        deps = start(tmp_path / "api")
    finally:
        os.umask(old)
    assert mode(tmp_path / "api") == 0o700
    assert (tmp_path / "api" / "cluster-id").read_text().strip() == deps.cluster_id
    assert mode(tmp_path / "api" / "cluster-id") == 0o600
    assert mode(tmp_path / "api" / "otherix.db") == 0o600
    assert mode(tmp_path / "api" / "jwt-secret") == 0o600


def test_an_existing_data_dir_of_ours_is_set_to_0700_and_its_files_to_0600(tmp_path):
    data = tmp_path / "api"
    start(data)
    (data / "cluster-id").unlink()  # as left by a version without markers
    for p in [data, *data.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    deps = start(data)
    assert mode(data) == 0o700
    # (-wal and -shm are gone once the last connection closed; the store's
    # tests check their modes while they exist)
    assert {p.name: mode(p) for p in data.iterdir()} == {
        "otherix.db": 0o600,
        "jwt-secret": 0o600,
        "cluster-id": 0o600,
        "serve.lock": 0o600,  # the lock a restore takes exclusively
    }
    assert (data / "cluster-id").read_text().strip() == deps.cluster_id  # adopted


def test_a_shared_directory_keeps_its_mode(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    (shared / "someone-elses-file").write_text("x")
    start(shared, f"sqlite:///{tmp_path}/db/otherix.db")
    assert mode(shared) == 0o755


def test_a_lost_sqlite_database_is_refused_and_not_recreated(tmp_path):
    data = tmp_path / "api"
    first = start(data)
    (data / "otherix.db").unlink()
    with pytest.raises(DataDirMismatch) as exc:
        start(data)
    assert f"initialised for cluster {first.cluster_id}" in str(exc.value)
    assert f"its database {data / 'otherix.db'} is missing" in str(exc.value)
    assert not (data / "otherix.db").exists()


def test_an_empty_or_foreign_sqlite_file_is_refused(tmp_path):
    data, other = tmp_path / "api", tmp_path / "other"
    first = start(data)
    second = start(other)
    (data / "otherix.db").write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        Path(f"{data}/otherix.db{suffix}").unlink(missing_ok=True)
    with pytest.raises(DataDirMismatch, match="holds no cluster"):
        start(data)
    (data / "otherix.db").write_bytes((other / "otherix.db").read_bytes())
    with pytest.raises(DataDirMismatch, match=f"holds cluster {second.cluster_id}"):
        start(data)
    assert first.cluster_id != second.cluster_id


def test_init_starts_afresh_and_moves_the_lost_wal_aside(tmp_path):
    data = tmp_path / "api"
    first = start(data)
    wal = data / "otherix.db-wal"
    keep = sqlite3.connect(data / "otherix.db")  # holds the WAL open, as a crash leaves it
    keep.execute("PRAGMA journal_mode=WAL")
    keep.execute("CREATE TABLE extra (x)")
    keep.commit()
    try:
        assert wal.exists()
        (data / "otherix.db").unlink()
    finally:
        keep.close()  # closing a deleted file's last connection may leave or drop its WAL
    wal.write_bytes(b"stale wal of the lost database")
    fresh = start(data, init=True)
    assert fresh.cluster_id != first.cluster_id
    assert (data / "cluster-id").read_text().strip() == fresh.cluster_id
    assert [p.read_bytes() for p in data.glob("otherix.db-wal.orphaned-*")] == [
        b"stale wal of the lost database"
    ]
    assert start(data).cluster_id == fresh.cluster_id  # and it starts as usual from then on


def test_a_damaged_marker_is_refused_unless_init(tmp_path):
    data = tmp_path / "api"
    first = start(data)
    (data / "cluster-id").write_text("garbage\n")
    with pytest.raises(DataDirMismatch, match=r"marker .* is damaged"):
        start(data)
    assert start(data, init=True).cluster_id == first.cluster_id
    assert (data / "cluster-id").read_text().strip() == first.cluster_id


def test_migrate_refuses_a_lost_database_too(tmp_path):
    data = tmp_path / "api"
    start(data)
    (data / "otherix.db").unlink()
    result = CliRunner().invoke(cli, ["migrate", "--data-dir", str(data)])
    assert result.exit_code == 1, result.output
    assert "is missing" in result.output
    assert not (data / "otherix.db").exists()


def test_serve_help_documents_init():
    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0
    assert "--init" in result.output
    assert "otherix-api serve --data-dir /var/lib/otherix/api --init" in result.output


@pytest.mark.postgres
def test_postgresql_a_dropped_or_wrong_database_is_refused(tmp_path):
    if not pg.base_url():
        pytest.skip(f"{pg.ENV} not set")
    first_url, other_url = pg.create_database(), pg.create_database()
    try:
        data = tmp_path / "api"
        first = start(data, first_url)
        other = start(tmp_path / "other", other_url)
        pg.drop_database(first_url)
        empty_url = pg.create_database()  # "the same database", re-created empty
        try:
            with pytest.raises(DataDirMismatch, match="holds no cluster"):
                start(data, empty_url)
            engine = sa.create_engine(empty_url)
            try:
                assert sa.inspect(engine).get_table_names() == []  # nothing was written
            finally:
                engine.dispose()
        finally:
            pg.drop_database(empty_url)
        with pytest.raises(DataDirMismatch) as exc:
            start(data, other_url)
        assert f"holds cluster {other.cluster_id}" in str(exc.value)
        assert "password" not in str(exc.value)
        assert start(data, other_url, init=True).cluster_id == other.cluster_id
        assert datadir.read_marker(data) == other.cluster_id != first.cluster_id
    finally:
        pg.drop_database(first_url)
        pg.drop_database(other_url)


def test_quickstart_refuses_a_lost_database_and_init_moves_the_old_agent_aside(tmp_path):
    import click

    from otherix.api import quickstart

    data = tmp_path / "qs"
    settings = quickstart.settings_for(data, "127.0.0.1:0", None)
    first = quickstart._open(settings, init=False)
    first.db.close()
    (data / "agent").mkdir()
    (data / "agent" / "node.json").write_text("{}")  # the old cluster's node credential
    (data / "otherix.db").unlink()
    with pytest.raises(click.ClickException, match="is missing"):
        quickstart._open(settings, init=False)
    fresh = quickstart._open(settings, init=True)
    fresh.db.close()
    assert fresh.cluster_id != first.cluster_id
    assert not (data / "agent").exists()  # the agent enrols in the new cluster
    assert [p.name.startswith("agent.before-init-") for p in data.glob("agent.*")] == [True]
