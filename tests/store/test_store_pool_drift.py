"""``pool_status.drift`` (migration 0012, issue 16) on every backend: written by a status
update, read back by ``drift_of`` and ``status_for_node``; the pool's disks with their
VMs for ``pool doctor``; an imported disk's format; the migration on an existing row."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from otherix.store import Database
from otherix.store.migrate import alembic_config, current_revision, upgrade
from otherix.store.nodes import store as qn
from otherix.store.pools import store as qp
from otherix.store.ports.nodes import NewNode
from otherix.store.ports.pools import NewPool
from otherix.store.ports.users import NewUser
from otherix.store.ports.vms import NewVm, NewVmDisk
from otherix.store.tx import sql
from otherix.store.users import store as qu
from otherix.store.vms import store as qv

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def add_node(db: Database, name: str) -> str:
    nid = str(uuid.uuid4())
    with db.write() as conn:
        qn.insert_node(
            conn,
            NewNode(id=nid, name=name, architecture="amd64", credential_hash=nid, created_at=T0),
        )
    return nid


def add_pool(db: Database, node_id: str, name: str) -> str:
    pid = str(uuid.uuid4())
    with db.write() as conn:
        qp.insert_pool(
            conn,
            NewPool(pid, node_id, name, "local_dir", f"/var/lib/otherix/pools/{name}", {}, T0),
        )
    return pid


DRIFT: dict[str, Any] = {
    "items": [
        {
            "kind": "orphan",
            "area": "vms",
            "path": "vms/x/disk.qcow2",
            "type": "file",
            "size_bytes": 4096,
            "modified_at": "2026-12-04T10:00:00Z",
        }
    ],
    "more": 0,
}


def test_drift_starts_null_and_reads_back_as_written(db):
    nid = add_node(db, "n1")
    pid = add_pool(db, nid, "p")
    with db.read() as conn:
        assert qp.drift_of(conn, pid) is None
        assert qp.status_for_node(conn, nid)[0].drift is None
    with db.write() as conn:
        qp.update_status(conn, pid, {"drift": DRIFT})
    with db.read() as conn:
        assert qp.drift_of(conn, pid) == DRIFT
        assert qp.status_for_node(conn, nid)[0].drift == DRIFT
        assert qp.drift_of(conn, str(uuid.uuid4())) is None


def test_disks_on_pool_name_their_vms_and_an_import_sets_the_format(db):
    nid = add_node(db, "n1")
    pid = add_pool(db, nid, "p")
    vm_id = str(uuid.uuid4())
    owner = str(uuid.uuid4())
    with db.write() as conn:
        qu.insert_user(conn, NewUser(owner, "ops", "x", "admin", T0))
        qv.insert_vm(conn, NewVm(vm_id, "adopted", owner, {"format": "qcow2"}, pid, T0))
        qv.insert_disk(conn, NewVmDisk(str(uuid.uuid4()), vm_id, pid, 0, 0, "qcow2", T0))
        qp.set_disk_format(conn, vm_id, "raw")
    with db.read() as conn:
        [disk] = qp.disks_on_pool(conn, pid)
        [vm_disk] = qv.disks_for_vm(conn, vm_id)
    assert (disk.vm_id, disk.vm_name, disk.vm_phase) == (vm_id, "adopted", "pending")
    assert disk.file_path is None
    assert disk.missing_since is None
    assert vm_disk.format == "raw"


@pytest.fixture
def at_0011(fresh_db: Database) -> Database:
    upgrade(fresh_db, "0011")
    return fresh_db


def test_migration_0012_adds_a_null_drift_and_downgrades(at_0011):
    db = at_0011
    nid = add_node(db, "n")
    pid = add_pool(db, nid, "p")
    upgrade(db, "0012")
    assert current_revision(db) == "0012"
    with db.read() as conn:
        assert qp.drift_of(conn, pid) is None
        assert qp.status_for_node(conn, nid)[0].reconciliation_status == "pending"
    command.downgrade(alembic_config(db), "0011")
    columns = {c["name"] for c in sa.inspect(db.engine).get_columns("pool_status")}
    assert "drift" not in columns
    upgrade(db)
    with db.write() as conn:
        sql(conn).execute(sa.text("SELECT drift FROM pool_status"))
