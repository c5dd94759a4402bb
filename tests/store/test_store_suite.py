"""The store suite: one set of tests, run against every backend (``db_url``:
SQLite always, PostgreSQL when ``OTHERIX_TEST_POSTGRES_URL`` is set)."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
import sqlalchemy.exc as sa_exc
from alembic.script import ScriptDirectory

from otherix.store import (
    Database,
    ForeignKeyViolation,
    StoreError,
    StoreUnavailable,
    UniqueViolation,
    schema,
)
from otherix.store.migrate import alembic_config, current_revision, upgrade
from otherix.store.nodes import store as qn
from otherix.store.pools import store as qp
from otherix.store.ports.events import EventRow
from otherix.store.ports.idempotency import IdempotencyRow
from otherix.store.ports.nodes import NewJoinToken, NewNode
from otherix.store.ports.pools import NewPool, PoolRef, PoolRow
from otherix.store.ports.tasks import NewTask
from otherix.store.ports.users import NewApiToken, NewRefreshToken, NewUser
from otherix.store.settings import store as qs
from otherix.store.tasks import store as qt
from otherix.store.tx import sql
from otherix.store.users import store as qu
from support import rows as test_rows

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
R = TypeVar("R")


def found(row: R | None) -> R:
    """``row``, which the test expects the store to have found."""
    assert row is not None, "not found"
    return row


def new_id() -> str:
    return str(uuid.uuid4())


def add_user(db: Database, name: str = "alice", at: datetime = T0) -> str:
    uid = new_id()
    with db.write() as conn:
        qu.insert_user(
            conn,
            NewUser(id=uid, username=name, password_hash="x", role="viewer", created_at=at),
        )
    return uid


def add_node(db: Database, name: str, **values: Any) -> str:
    """A node as a join makes it, then the test's columns (``ready`` unless
    ``status`` says otherwise) written straight to the table: raw values, so a
    ``last_heartbeat_at`` is not stamped with the database clock."""
    nid = new_id()
    created_at = values.pop("created_at", T0)
    new = NewNode(
        id=nid,
        name=name,
        architecture=values.pop("architecture", None),
        credential_hash=values.pop("credential_hash", uuid.uuid4().hex),
        created_at=created_at,
    )
    columns = {"status": "ready", "updated_at": T0, "status_changed_at": T0, **values}
    with db.write() as conn:
        qn.insert_node(conn, new)
        sql(conn).execute(schema.nodes.update().where(schema.nodes.c.id == nid).values(**columns))
    return nid


def add_pool(
    db: Database, node_id: str, name: str, at: datetime = T0, pool_id: str | None = None
) -> str:
    pid = pool_id or new_id()
    with db.write() as conn:
        qp.insert_pool(
            conn,
            NewPool(
                id=pid,
                node_id=node_id,
                name=name,
                type="local_dir",
                path=f"/var/lib/otherix/pools/{name}",
                config={"k": [1, 2]},
                created_at=at,
            ),
        )
    return pid


def add_disk(db: Database, pool_id: str, owner: str) -> str:
    vm_id = new_id()
    test_rows.insert_vm(db, owner, vm_id, vm_id=vm_id, at=T0)
    return test_rows.insert_disk(db, vm_id, pool_id, at=T0)


# migrations -----------------------------------------------------------------------------------


def test_migrations_apply_and_reach_head(db):
    head = ScriptDirectory.from_config(alembic_config(db)).get_current_head()
    assert head is not None
    assert current_revision(db) == head
    upgrade(db)  # idempotent
    assert current_revision(db) == head
    tables = set(sa.inspect(db.engine).get_table_names())
    assert {t.name for t in schema.metadata.sorted_tables} <= tables


def test_ping_and_backend(db):
    assert db.ping() is True
    assert db.backend in ("sqlite", "postgresql")


def _write_then_fail(db: Database) -> None:
    with db.write() as conn:
        qs.put_setting(conn, "k", "v", T0)
        raise RuntimeError("abort")


def test_a_failed_write_rolls_back(db):
    with pytest.raises(RuntimeError, match="abort"):
        _write_then_fail(db)
    with db.read() as conn:
        assert qs.has_setting(conn, "k") is False


# users, API tokens, refresh tokens --------------------------------------------------------------


def test_users_are_unique_case_insensitively(db):
    uid = add_user(db, "Alice")
    with db.read() as conn:
        assert found(qu.get_user(conn, uid)).username == "Alice"
        assert found(qu.get_user_by_name(conn, "ALICE")).id == uid
        assert qu.count_users(conn) == 1
    with pytest.raises(UniqueViolation) as info:
        add_user(db, "alice")
    assert info.value.table == "users"


def test_deleting_a_user_cascades_to_tokens(db):
    uid = add_user(db)
    with db.write() as conn:
        qu.insert_api_token(
            conn,
            NewApiToken(
                id=new_id(),
                user_id=uid,
                name="t",
                prefix="otx_abcd",
                token_hash="h1",
                created_at=T0,
                expires_at=None,
            ),
        )
        qu.insert_refresh(
            conn,
            NewRefreshToken(
                id=new_id(),
                user_id=uid,
                family_id="f",
                token_hash="r1",
                created_at=T0,
                expires_at=T0 + timedelta(days=30),
                session_epoch=0,
            ),
        )
    with db.write() as conn:
        assert qu.delete_user(conn, uid) == 1
    with db.read() as conn:
        assert qu.get_api_token_by_hash(conn, "h1") is None
        assert qu.get_refresh_by_hash(conn, "r1") is None


def test_api_tokens_revoke_once_and_list(db):
    uid = add_user(db)
    ids = [new_id(), new_id()]
    with db.write() as conn:
        for i, tid in enumerate(ids):
            qu.insert_api_token(
                conn,
                NewApiToken(
                    id=tid,
                    user_id=uid,
                    name=f"t{i}",
                    prefix="otx_abcd",
                    token_hash=f"hash-{i}",
                    created_at=T0 + timedelta(seconds=i),
                    expires_at=None,
                ),
            )
    with pytest.raises(UniqueViolation), db.write() as conn:
        qu.insert_api_token(
            conn,
            NewApiToken(
                id=new_id(),
                user_id=uid,
                name="dup",
                prefix="otx_abcd",
                token_hash="hash-0",
                created_at=T0,
                expires_at=None,
            ),
        )
    with db.write() as conn:
        assert qu.revoke_api_token(conn, ids[0], T0) == 1
        assert qu.revoke_api_token(conn, ids[0], T0) == 0
        qu.touch_api_token(conn, ids[1], T0 + timedelta(minutes=1))
    with db.read() as conn:
        assert [t.id for t in qu.list_api_tokens(conn, uid, False)] == [ids[1]]
        assert [t.id for t in qu.list_api_tokens(conn, uid, True)] == ids
        assert found(qu.get_api_token(conn, ids[1])).last_used_at == T0 + timedelta(minutes=1)
        assert found(qu.get_api_token(conn, ids[0])).revoked_at == T0


def test_refresh_rotation_is_compare_and_set(db):
    uid = add_user(db)
    rows = {
        "a1": ("fam-a", new_id()),
        "a2": ("fam-a", new_id()),
        "b1": ("fam-b", new_id()),
    }
    with db.write() as conn:
        for token_hash, (family, rid) in rows.items():
            qu.insert_refresh(
                conn,
                NewRefreshToken(
                    id=rid,
                    user_id=uid,
                    family_id=family,
                    token_hash=token_hash,
                    created_at=T0,
                    expires_at=T0 + timedelta(days=30),
                    session_epoch=0,
                ),
            )
    a1 = rows["a1"][1]
    with db.write() as conn:
        assert qu.mark_refresh_rotated(conn, a1, T0) == 1
    with db.write() as conn:
        assert qu.mark_refresh_rotated(conn, a1, T0 + timedelta(seconds=1)) == 0
        assert found(qu.get_refresh_by_hash(conn, "a1")).rotated_at == T0
        assert qu.revoke_refresh_family(conn, "fam-a", T0) == 2
        assert qu.revoke_refresh_family(conn, "fam-a", T0) == 0
    with db.read() as conn:
        assert found(qu.get_refresh_by_hash(conn, "a2")).revoked_at == T0
        assert found(qu.get_refresh_by_hash(conn, "b1")).revoked_at is None
    with db.write() as conn:
        assert qu.revoke_user_refresh(conn, uid, T0) == 1


# nodes --------------------------------------------------------------------------------------


def test_node_names_are_unique_among_live_nodes_only(db):
    first = add_node(db, "Worker-1")
    with db.read() as conn:
        assert found(qn.get_node_by_name(conn, "worker-1")).id == first
    with pytest.raises(UniqueViolation):
        add_node(db, "WORKER-1")
    with db.write() as conn:
        assert qn.soft_delete(conn, first, T0) == 1
    second = add_node(db, "worker-1")  # a soft-deleted node's name can be reused
    with db.read() as conn:
        assert found(qn.get_node_by_name(conn, "worker-1")).id == second
        assert qn.get_node(conn, first) is None
        assert found(qn.get_node(conn, first, include_deleted=True)).deleted_at == T0
    with pytest.raises(UniqueViolation):
        add_node(db, "worker-1")


def test_desired_revision_bumps_and_clears_the_digest(db):
    nid = add_node(db, "rev", observed_digest="d" * 64)
    with db.write() as conn:
        qn.bump_revision(conn, nid)
        qn.bump_revision(conn, nid)
    with db.read() as conn:
        assert qn.get_revision(conn, nid) == 3
        assert found(qn.get_node(conn, nid)).observed_digest is None


def test_record_heartbeats_never_moves_backwards(db):
    a, b, c = add_node(db, "hb-a"), add_node(db, "hb-b"), add_node(db, "hb-c")
    t = T0 + timedelta(minutes=5)
    with db.write() as conn:
        qn.record_heartbeats(conn, [(a, t), (b, t)])
    with db.write() as conn:
        qn.record_heartbeats(
            conn, [(a, t - timedelta(seconds=1)), (b, t + timedelta(microseconds=1)), (c, t)]
        )
        qn.record_heartbeats(conn, [])
    with db.read() as conn:
        seen = {n: found(qn.get_node(conn, n)).last_heartbeat_at for n in (a, b, c)}
    assert seen == {a: t, b: t + timedelta(microseconds=1), c: t}


def test_join_tokens_are_consumed_with_compare_and_set(db):
    tid = new_id()
    with db.write() as conn:
        qn.insert_join_token(
            conn,
            NewJoinToken(
                id=tid,
                token_hash="jt",
                prefix="otxj_abc",
                description="",
                created_by=None,
                max_uses=2,
                created_at=T0,
                expires_at=None,
            ),
        )
    with db.write() as conn:
        assert [qn.consume_join_token(conn, tid) for _ in range(3)] == [1, 1, 0]
        assert found(qn.get_join_token_by_hash(conn, "jt")).uses == 2
        assert qn.delete_join_token(conn, tid) == 1
        assert qn.delete_join_token(conn, tid) == 0


# pools -------------------------------------------------------------------------------------


def test_pool_names_are_unique_per_node_case_insensitively(db):
    n1, n2 = add_node(db, "n1"), add_node(db, "n2")
    p1 = add_pool(db, n1, "Fast")
    add_pool(db, n2, "fast")  # another node: fine
    with pytest.raises(UniqueViolation) as info:
        add_pool(db, n1, "FAST")
    assert info.value.table == "storage_pools"
    with db.read() as conn:
        row = found(qp.get_pool(conn, p1))
        rows = qp.get_pools_by_name(conn, "FaSt")
    assert row.name == "Fast"
    assert row.config == {"k": [1, 2]}
    assert row.reconciliation_status == "pending"
    assert row.images == []
    assert row.node_name == "n1"
    assert row.node_liveness == "ready"
    assert [r.node_name for r in rows] == ["n1", "n2"]


def test_a_pool_with_disks_cannot_be_deleted(db):
    owner = add_user(db)
    nid = add_node(db, "fk")
    pid = add_pool(db, nid, "held")
    disk = add_disk(db, pid, owner)
    with pytest.raises(ForeignKeyViolation), db.write() as conn:
        qp.delete_pool(conn, pid)
    with db.read() as conn:
        assert qp.get_pool(conn, pid) is not None
        assert qp.count_disks(conn, pid) == 1
    with db.write() as conn:
        sql(conn).execute(schema.vm_disks.delete().where(schema.vm_disks.c.id == disk))
    with db.write() as conn:
        assert qp.delete_pool(conn, pid) == 1
    with db.read() as conn:
        leftover = (
            sql(conn)
            .execute(
                sa.select(sa.func.count())
                .select_from(schema.pool_status)
                .where(schema.pool_status.c.pool_id == pid)
            )
            .scalar_one()
        )
    assert leftover == 0


def test_a_disk_cannot_reference_a_missing_pool(db):
    owner = add_user(db)
    with pytest.raises(ForeignKeyViolation):
        add_disk(db, new_id(), owner)


def test_list_pools_is_keyset_ordered_by_created_at_then_id(db):
    nid = add_node(db, "keyset")
    other = add_node(db, "other")
    expected = []
    on_nid = set()
    for i in range(9):
        at = T0 + timedelta(microseconds=i // 3)  # three rows share each timestamp
        pid = add_pool(db, nid if i % 2 else other, f"p{i}", at=at)
        expected.append((at, pid))
        if i % 2:
            on_nid.add(pid)
    expected.sort()
    got: list[tuple[datetime, str]] = []
    after = None
    while True:
        with db.read() as conn:
            page = qp.list_pools(conn, after=after, limit=4)
        got += [(r.created_at, r.id) for r in page]
        if len(page) < 4:
            break
        after = (page[-1].created_at, page[-1].id)
    assert got == expected
    with db.read() as conn:
        only = qp.list_pools(conn, after=None, limit=50, node_id=nid, pool_type="local_dir")
        none = qp.list_pools(conn, after=None, limit=50, pool_type="nfs")
    assert [r.id for r in only] == [pid for _, pid in expected if pid in on_nid]
    assert len(only) == 4
    assert none == []


def test_first_name_match_is_the_oldest_instance(db):
    n1, n2 = add_node(db, "fm-1"), add_node(db, "fm-2")
    add_pool(db, n2, "Gold", at=T0)
    add_pool(db, n1, "GOLD", at=T0 + timedelta(seconds=1))
    with db.read() as conn:
        assert qp.first_name_match(conn, "gold") == "Gold"
        assert qp.first_name_match(conn, "silver") is None


def test_pool_status_updates_and_declared_state(db):
    nid = add_node(db, "declared")
    pid = add_pool(db, nid, "b-pool")
    add_pool(db, nid, "A-pool")
    with db.write() as conn:
        qp.update_status(
            conn,
            pid,
            {
                "reconciliation_status": "ready",
                "capacity_bytes": 10,
                "available_bytes": 5,
                "reported_at": T0,
            },
        )
    with db.read() as conn:
        declared = qp.declared_for_node(conn, nid)
        status = {r.name_lower: r for r in qp.status_for_node(conn, nid)}
    assert [d.name for d in declared] == ["A-pool", "b-pool"]
    assert status["b-pool"].reconciliation_status == "ready"
    assert status["b-pool"].capacity_bytes == 10


# settings, idempotency, tasks -----------------------------------------------------------------


def test_settings_and_idempotency_cache(db):
    with db.write() as conn:
        assert qs.get_setting(conn, "x") is None
        assert not qs.has_setting(conn, "x")
        qs.put_setting(conn, "x", None, T0)
        assert qs.has_setting(conn, "x")
        assert qs.get_setting(conn, "x") is None
        qs.put_setting(conn, "x", "v", T0)
    with db.read() as conn:
        assert qs.get_setting(conn, "x") == "v"


def test_concurrent_first_writes_of_a_setting_all_succeed(db):
    """Two replicas seeding the default pool at the same first start must not crash."""
    for round_ in range(3):
        key = f"race-{round_}"
        barrier = threading.Barrier(8)

        def put(i: int, key: str = key, barrier: threading.Barrier = barrier) -> None:
            barrier.wait(timeout=30)
            with db.write() as conn:
                qs.put_setting(conn, key, str(i), T0)

        with ThreadPoolExecutor(max_workers=8) as pool:
            for f in [pool.submit(put, i) for i in range(8)]:
                f.result()
        with db.read() as conn:
            assert qs.get_setting(conn, key) in {str(i) for i in range(8)}


def test_ensure_setting_keeps_the_first_value_under_concurrent_first_writers(db):
    """The cluster id: replicas starting together all read the one value that won."""
    barrier = threading.Barrier(8)
    got: list[str] = []

    def ensure(i: int) -> None:
        barrier.wait(timeout=30)
        with db.write() as conn:
            got.append(qs.ensure_setting(conn, "cluster-race", f"id-{i}", T0))

    with ThreadPoolExecutor(max_workers=8) as pool:
        for f in [pool.submit(ensure, i) for i in range(8)]:
            f.result()
    assert len(set(got)) == 1
    assert got[0].startswith("id-")
    with db.write() as conn:
        assert qs.ensure_setting(conn, "cluster-race", "later", T0) == got[0]


def test_task_updates_are_conditional_on_status(db):
    tid = new_id()
    with db.write() as conn:
        qt.insert_task(
            conn,
            NewTask(
                id=tid,
                type="storage_pool.scan",
                resource_type="storage_pool",
                resource_id=new_id(),
                node_id="n",
                args={},
                max_attempts=25,
                created_by=None,
                created_at=T0,
            ),
        )
    with db.write() as conn:
        assert qt.update_task(conn, tid, {"status": "success"}, only_if_status=["pending"]) == 1
        assert qt.update_task(conn, tid, {"status": "failed"}, only_if_status=["pending"]) == 0
        task = qt.get_task(conn, tid)
        assert task is not None
        assert (task.status, task.progress, task.attempts, task.node_id) == ("success", 0, 0, "n")
        assert qt.pending_for_node(conn, "n") == []
        assert [
            t.id
            for t in qt.list_tasks(conn, after=None, limit=5, filters={"type": "storage_pool.scan"})
        ] == [tid]


# timestamps ------------------------------------------------------------------------------------


def test_timestamps_come_back_aware_utc_with_microseconds(db):
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2026, 3, 1, 14, 0, 0, 654321, tzinfo=plus_two)
    uid = add_user(db, "tz", at=local)
    with db.read() as conn:
        row = found(qu.get_user(conn, uid))
    for value in (row.created_at, row.updated_at):
        assert value == local
        assert value.tzinfo is not None
        assert value.utcoffset() == timedelta(0)
        assert value.microsecond == 654321
        assert value.hour == 12


def test_naive_timestamps_are_refused(db):
    with pytest.raises((ValueError, sa_exc.StatementError), match="naive datetime"):
        add_user(db, "naive", at=datetime(2026, 1, 1))


# connection failures (backend independent) -------------------------------------------------------


def test_unsupported_url_scheme():
    with pytest.raises(StoreError, match="unsupported database URL scheme"):
        Database("mysql://localhost/x")


def test_an_unreachable_database_is_store_unavailable():
    db = Database("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    try:
        assert db.ping() is False
        with pytest.raises(StoreUnavailable), db.read():
            pass
    finally:
        db.close()


def test_pool_rows_are_frozen_and_typed(db):
    nid = add_node(db, "frozen")
    pid = add_pool(db, nid, "cold")
    with db.read() as conn:
        row = db.pools.get_pool(conn, pid)
        refs = db.pools.paths_on_nodes(conn, [nid])
    assert isinstance(row, PoolRow)
    assert (row.id, row.node_id, row.vm_disks_total, row.pressure_count) == (pid, nid, 0, 0)
    assert refs == [PoolRef(pid, nid, "cold", "cold", "/var/lib/otherix/pools/cold")]
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.name = "warm"  # type: ignore[misc]


def test_idempotency_claims_are_touched_only_by_their_token(db):
    store = db.idempotency
    with db.write() as conn:
        store.insert_claim(conn, "user:u", "k", "hash", "token-a", T0)
    with db.write() as conn:
        assert not store.complete(
            conn,
            "user:u",
            "k",
            "token-b",
            status_code=201,
            content_type="x",
            body=b"",
            withheld=None,
        )
        assert not store.release(conn, "user:u", "k", "token-b")
        assert store.complete(
            conn,
            "user:u",
            "k",
            "token-a",
            status_code=201,
            content_type="application/json",
            body=b"{}",
            withheld="token",
        )
    with db.read() as conn:
        row = store.get(conn, "user:u", "k")
    assert row == IdempotencyRow("user:u", "k", "hash", 201, "application/json", b"{}", "token", T0)
    with db.write() as conn:
        assert not store.release(conn, "user:u", "k", "token-a")  # answered: no longer a claim
        store.delete(conn, "user:u", "k")
        assert store.get(conn, "user:u", "k") is None


def test_node_events_are_bounded_and_read_oldest_first(db):
    nid = add_node(db, "eventful")
    with db.write() as conn:
        for i in range(4):
            db.events.add_event(
                conn,
                nid,
                type_="normal",
                reason=f"r{i}",
                message=f"m{i}",
                details={"i": i},
                now=T0 + timedelta(seconds=i),
                keep=3,
            )
    with db.read() as conn:
        events = db.events.list_events(conn, nid)
    assert [(e.reason, e.details, e.node_id) for e in events] == [
        ("r1", {"i": 1}, nid),
        ("r2", {"i": 2}, nid),
        ("r3", {"i": 3}, nid),
    ]
    assert isinstance(events[0], EventRow)
    assert events[-1].created_at == T0 + timedelta(seconds=3)
