"""``VmStore`` (store/ports/vms.py) against both backends (SQLite always,
PostgreSQL when ``OTHERIX_TEST_POSTGRES_URL`` is set): every method speaks the
frozen rows of the port, with the values written, and answers None (or 0, or
nothing) for what is not there. The rows are compared whole with ``==``, which
for a dataclass also compares the class, so a dict or the wrong row type fails.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from otherix.store import Database, Tx
from otherix.store.migrate import upgrade
from otherix.store.pools import store as qp
from otherix.store.ports import JSONObject
from otherix.store.ports.pools import NewPool
from otherix.store.ports.vms import NewVm, NewVmDisk, VmDiskRow, VmRecord, VmRow
from otherix.store.schema import nodes, users, vms
from otherix.store.tx import sql
from otherix.store.vms import SqlVms
from otherix.store.vms import store as qv

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)
SPEC: JSONObject = {
    "image_url": "https://images.example/noble.qcow2",
    "arch": "x86_64",
    "format": "qcow2",
    "disk_gib": 2,
    "pool": "Fast",
    "extra": {"list": [1, 2.5, None, True], "text": "é"},
}


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class World:
    db: Database
    owner_id: str
    other_owner_id: str
    node_id: str
    pool_id: str


@pytest.fixture
def world(db_url) -> Iterator[World]:
    """A migrated database with two users, a node (x86_64) and a pool ``fast`` on it."""
    db = Database(db_url)
    upgrade(db)
    ids = World(db, new_id(), new_id(), new_id(), new_id())
    with db.write() as conn:
        for uid, name in ((ids.owner_id, "alice"), (ids.other_owner_id, "bob")):
            sql(conn).execute(
                users.insert().values(
                    id=uid,
                    username=name,
                    username_lower=name,
                    password_hash="x",
                    role="developer",
                    created_at=T0,
                    updated_at=T0,
                )
            )
        sql(conn).execute(
            nodes.insert().values(
                id=ids.node_id,
                name="Node-A",
                name_lower="node-a",
                status="ready",
                cordoned=False,
                architecture="x86_64",
                credential_hash=uuid.uuid4().hex,
                created_at=T0,
                updated_at=T0,
                status_changed_at=T0,
            )
        )
        qp.insert_pool(
            conn,
            NewPool(
                id=ids.pool_id,
                node_id=ids.node_id,
                name="Fast",
                type="local_dir",
                path="/var/lib/otherix/pools/fast",
                config={},
                created_at=T0,
            ),
        )
    try:
        yield ids
    finally:
        db.close()


def add_vm(
    w: World, name: str, *, at: datetime = T0, owner: str | None = None, pool_ref: str = "Fast"
) -> NewVm:
    vm = NewVm(
        id=new_id(),
        name=name,
        owner_id=owner or w.owner_id,
        spec=SPEC,
        pool_ref=pool_ref,
        created_at=at,
    )
    with w.db.write() as conn:
        qv.insert_vm(conn, vm)
    return vm


def record(vm: NewVm, **changed: object) -> VmRecord:
    """The bare row ``insert_vm`` writes for ``vm``, with ``changed`` applied."""
    base = VmRecord(
        id=vm.id,
        name=vm.name,
        name_lower=vm.name.lower(),
        owner_id=vm.owner_id,
        spec=vm.spec,
        node_id=None,
        phase="pending",
        reason=None,
        message=None,
        created_at=vm.created_at,
        updated_at=vm.created_at,
        pool_ref=vm.pool_ref,
        status_details=None,
        task_id=None,
    )
    return dataclasses.replace(base, **changed)  # type: ignore[arg-type]


def full(rec: VmRecord, owner: str = "alice", **joined: object) -> VmRow:
    """The view row for the bare row ``rec``: nothing joined unless ``joined``."""
    values: dict[str, object] = {
        "owner": owner,
        "node_name": None,
        "root_pool_id": None,
        "root_pool_name": None,
        "root_file_path": None,
        "root_missing_since": None,
        "root_pool_status": None,
        "root_pool_reason": None,
        "runtime": None,
        "runtime_at": None,
    }
    values.update(joined)
    return VmRow(**{f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)}, **values)  # type: ignore[arg-type]


def add_disk(w: World, vm_id: str, *, order: int = 0, at: datetime = T0) -> NewVmDisk:
    disk = NewVmDisk(
        id=new_id(),
        vm_id=vm_id,
        storage_pool_id=w.pool_id,
        device_order=order,
        size_gib=2,
        format="qcow2",
        created_at=at,
    )
    with w.db.write() as conn:
        qv.insert_disk(conn, disk)
    return disk


def disk_row(d: NewVmDisk, **changed: object) -> VmDiskRow:
    base = VmDiskRow(
        id=d.id,
        vm_id=d.vm_id,
        storage_pool_id=d.storage_pool_id,
        device_order=d.device_order,
        size_gib=d.size_gib,
        format=d.format,
        file_path=None,
        created_at=d.created_at,
        updated_at=d.created_at,
        virtual_size_bytes=None,
        actual_size_bytes=None,
        image_sha256=None,
        missing_since=None,
        move_pool_id=None,
        pool="Fast",
        pool_path="/var/lib/otherix/pools/fast",
        pool_status="pending",
        pool_reason=None,
    )
    return dataclasses.replace(base, **changed)  # type: ignore[arg-type]


def test_insert_vm_returns_the_row_it_wrote(world):
    vm = NewVm(
        id=new_id(),
        name="Ret-1",
        owner_id=world.owner_id,
        spec=SPEC,
        pool_ref="Fast",
        created_at=T0,
    )
    with world.db.write() as conn:
        written = qv.insert_vm(conn, vm)
        stored = qv.lock_vm(conn, vm.id)
    assert written == stored == record(vm)
    assert type(written) is VmRecord
    with world.db.read() as conn:  # the unset columns are SQL NULL, not JSON null
        nulls = sql(conn).execute(
            sa.select(sa.func.count()).where(vms.c.id == vm.id, vms.c.status_details.is_(None))
        )
        assert nulls.scalar_one() == 1


def test_the_module_instance_is_the_databases(world):
    assert isinstance(qv, SqlVms)
    assert world.db.vms is qv


def test_insert_then_every_vm_read_returns_the_frozen_rows(world):
    vm = add_vm(world, "Web-1")
    with world.db.read() as conn:
        by_id = qv.get_vm(conn, vm.id)
        by_name = qv.get_vm_by_name(conn, "WEB-1")
        listed = qv.list_vms(conn, after=None, limit=10)
        queued = qv.unscheduled(conn, 10)
    with world.db.write() as conn:
        locked = qv.lock_vm(conn, vm.id)
    assert by_id == full(record(vm))
    assert type(by_id) is VmRow
    assert by_name == by_id
    assert listed == [by_id]
    assert locked == record(vm)
    assert type(locked) is VmRecord
    assert queued == [record(vm)]
    assert by_id is not None
    assert by_id.created_at.tzinfo is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        by_id.phase = "error"  # type: ignore[misc]


NOT_FOUND: list[tuple[str, Callable[[Tx], object], object]] = [
    ("get_vm", lambda tx: qv.get_vm(tx, new_id()), None),
    ("get_vm_by_name", lambda tx: qv.get_vm_by_name(tx, "nope"), None),
    ("lock_vm", lambda tx: qv.lock_vm(tx, new_id()), None),
    ("list_vms", lambda tx: qv.list_vms(tx, after=None, limit=5), []),
    ("unscheduled", lambda tx: qv.unscheduled(tx, 5), []),
    ("update_vm", lambda tx: qv.update_vm(tx, new_id(), {"phase": "error"}), 0),
    ("delete_vm", lambda tx: qv.delete_vm(tx, new_id()), 0),
    ("disks_for_vm", lambda tx: qv.disks_for_vm(tx, new_id()), []),
    ("update_root_disk", lambda tx: qv.update_root_disk(tx, new_id(), {"file_path": "x"}), 0),
    ("node_architectures", lambda tx: qv.node_architectures(tx, []), {}),
    ("node_architectures", lambda tx: qv.node_architectures(tx, [new_id()]), {}),
]


@pytest.mark.parametrize(("method", "call", "expected"), NOT_FOUND, ids=[c[0] for c in NOT_FOUND])
def test_what_is_not_there_is_none_or_nothing(world, method, call, expected):
    with world.db.write() as conn:
        assert call(conn) == expected


def test_update_vm_is_compare_and_set_on_phase_and_binding(world):
    vm = add_vm(world, "web-1")
    details: JSONObject = {"pool": "Fast", "candidates": [{"node": "node-a", "why": "full"}]}
    with world.db.write() as conn:
        wrong_phase = qv.update_vm(conn, vm.id, {"phase": "error"}, phases=["creating"])
        recorded = qv.update_vm(
            conn,
            vm.id,
            {"reason": "pool_full", "message": "full", "status_details": details, "updated_at": T1},
            phases=["pending"],
            unbound=True,
        )
        bound = qv.update_vm(
            conn,
            vm.id,
            {"node_id": world.node_id, "task_id": "t-1", "reason": None, "message": None},
            phases=["pending"],
            unbound=True,
        )
        rebound = qv.update_vm(conn, vm.id, {"task_id": "t-2"}, unbound=True)
        spec = qv.update_vm(conn, vm.id, {"spec": {**SPEC, "image_url": "x"}})
    assert (wrong_phase, recorded, bound, rebound, spec) == (0, 1, 1, 0, 1)
    expected = record(
        vm,
        spec={**SPEC, "image_url": "x"},
        node_id=world.node_id,
        task_id="t-1",
        status_details=details,
        updated_at=T1,
    )
    with world.db.read() as conn:
        assert qv.lock_vm(conn, vm.id) == expected
        assert qv.get_vm(conn, vm.id) == full(expected, node_name="Node-A")
        assert qv.unscheduled(conn, 10) == []  # bound: no longer queued


def test_disks_insert_read_back_and_the_root_disk_update(world):
    vm = add_vm(world, "web-1")
    data = add_disk(world, vm.id, order=1, at=T1)
    root = add_disk(world, vm.id)
    with world.db.read() as conn:
        disks = qv.disks_for_vm(conn, vm.id)
    assert disks == [disk_row(root), disk_row(data)]  # device order
    assert all(type(d) is VmDiskRow for d in disks)
    with world.db.write() as conn:
        changed = qv.update_root_disk(
            conn,
            vm.id,
            {
                "file_path": "/var/lib/otherix/pools/fast/web-1.qcow2",
                "virtual_size_bytes": 2 << 30,
                "actual_size_bytes": 1 << 40,
                "image_sha256": "a" * 64,
                "updated_at": T1,
            },
        )
        qp.update_status(conn, world.pool_id, {"reconciliation_reason": "why"})
    assert changed == 1
    with world.db.read() as conn:
        disks = qv.disks_for_vm(conn, vm.id)
        row = qv.get_vm(conn, vm.id)
    made = disk_row(
        root,
        file_path="/var/lib/otherix/pools/fast/web-1.qcow2",
        virtual_size_bytes=2 << 30,
        actual_size_bytes=1 << 40,
        image_sha256="a" * 64,
        updated_at=T1,
        pool_reason="why",
    )
    assert disks == [made, disk_row(data, pool_reason="why")]
    assert row == full(
        record(vm),
        root_pool_id=world.pool_id,
        root_pool_name="Fast",
        root_file_path="/var/lib/otherix/pools/fast/web-1.qcow2",
        root_pool_status="pending",
        root_pool_reason="why",
    )


def test_delete_vm_removes_the_vm_and_its_disks(world):
    vm = add_vm(world, "web-1")
    add_disk(world, vm.id)
    with world.db.write() as conn:
        assert qv.delete_vm(conn, vm.id) == 1
    with world.db.read() as conn:
        assert qv.get_vm(conn, vm.id) is None
        assert qv.disks_for_vm(conn, vm.id) == []
        assert qp.count_disks(conn, world.pool_id) == 0
        assert qv.delete_vm(conn, vm.id) == 0


def test_list_vms_filters_and_keyset_pages(world):
    a = add_vm(world, "a", at=T0)
    b = add_vm(world, "b", at=T1, owner=world.other_owner_id, pool_ref=world.pool_id)
    c = add_vm(world, "c", at=T1 + timedelta(seconds=1), pool_ref="slow")
    placed = add_vm(world, "d", at=T1 + timedelta(seconds=2), pool_ref="slow")
    add_disk(world, placed.id)
    with world.db.write() as conn:
        qv.update_vm(conn, placed.id, {"node_id": world.node_id, "phase": "creating"})

    def names(**filters: str) -> list[str]:
        with world.db.read() as conn:
            rows = qv.list_vms(conn, after=None, limit=10, **filters)
        assert all(type(r) is VmRow for r in rows)
        return [r.name for r in rows]

    assert names() == ["a", "b", "c", "d"]
    assert names(owner_id=world.other_owner_id) == ["b"]
    assert names(node_id=world.node_id) == ["d"]
    assert names(phase="creating") == ["d"]
    assert names(pool_id=world.pool_id) == ["b", "d"]  # asked for by id, or a disk on it
    assert names(pool_name="FAST") == ["a", "b", "d"]  # by name, by its id, or a disk on it
    assert names(pool_name="slow") == ["c"]  # d's disk is on Fast whatever it asked for
    with world.db.read() as conn:
        page = qv.list_vms(conn, after=(T1, b.id), limit=1)
        assert page == [full(record(c))]
        assert qv.list_vms(conn, after=(a.created_at, a.id), limit=10)[0].name == "b"
        assert [r.id for r in qv.unscheduled(conn, 2)] == [a.id, b.id]  # oldest first


def test_unscheduled_skips_placed_and_other_phases(world):
    queued = add_vm(world, "queued")
    failed = add_vm(world, "failed", at=T1)
    with world.db.write() as conn:
        qv.update_vm(conn, failed.id, {"phase": "error"})
        assert qv.unscheduled(conn, 10) == [record(queued)]


def test_node_architectures_map_each_known_node_once(world):
    with world.db.read() as conn:
        archs = qv.node_architectures(conn, iter([world.node_id, world.node_id, new_id()]))
    assert archs == {world.node_id: "x86_64"}
