"""``NodeStore`` (``Database.nodes``) on every backend: each method speaks the
frozen rows of ``store.ports.nodes`` (never a dict) with the values written,
and a lookup of something that is not there answers None."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from otherix.store import Database, Tx
from otherix.store.nodes import SqlNodes
from otherix.store.ports.nodes import (
    DeletedNode,
    HeartbeatNode,
    JoinTokenRow,
    MovedNode,
    NewJoinToken,
    NewNode,
    NewRejoinToken,
    NodeChange,
    NodeObserved,
    NodeRow,
    NodeStatus,
    NodeStore,
    RejoinTokenRow,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)


def new_node(name: str, *, arch: str | None = "x86_64", at: datetime = T0) -> NewNode:
    nid = str(uuid.uuid4())
    return NewNode(
        id=nid, name=name, architecture=arch, credential_hash=f"cred-{nid}", created_at=at
    )


def add(db: Database, name: str, *, arch: str | None = "x86_64", at: datetime = T0) -> NewNode:
    node = new_node(name, arch=arch, at=at)
    with db.write() as tx:
        db.nodes.insert_node(tx, node)
    return node


def expected_row(node: NewNode, **changed: Any) -> NodeRow:
    """What a freshly joined node reads back as, with ``changed`` fields."""
    row = NodeRow(
        id=node.id,
        name=node.name,
        name_lower=node.name.lower(),
        status="pending",
        cordoned=False,
        architecture=node.architecture,
        credential_hash=node.credential_hash,
        desired_revision=1,
        observed_digest=None,
        created_at=node.created_at,
        updated_at=node.created_at,
        status_changed_at=node.created_at,
        last_heartbeat_at=None,
        deleted_at=None,
        default_pool_provisioned_at=None,
        agent_version=None,
        capabilities={},
        resources={},
    )
    return dataclasses.replace(row, **changed)


def read(db: Database, fn: Callable[[Tx], object]) -> object:
    with db.read() as tx:
        return fn(tx)


def test_the_database_hands_out_the_one_sql_nodes_store(db: Database) -> None:
    assert isinstance(db.nodes, SqlNodes)
    store: NodeStore = db.nodes  # the Protocol is what services see
    assert store is db.nodes


def test_an_inserted_node_reads_back_as_the_same_node_row_by_id_name_and_credential(
    db: Database,
) -> None:
    node = add(db, "Worker-1")
    want = expected_row(node)
    with db.read() as tx:
        got = [
            db.nodes.get_node(tx, node.id),
            db.nodes.get_node(tx, node.id, include_deleted=True),
            db.nodes.get_node_by_name(tx, "WORKER-1"),
            db.nodes.get_node_by_credential(tx, node.credential_hash),
        ]
        listed = db.nodes.list_nodes(tx, after=None, limit=10)
    for row in [*got, *listed]:
        assert type(row) is NodeRow
        assert row == want


@pytest.mark.parametrize(
    "lookup",
    [
        pytest.param(lambda s, tx: s.get_node(tx, str(uuid.uuid4())), id="get_node"),
        pytest.param(lambda s, tx: s.get_node_by_name(tx, "nobody"), id="get_node_by_name"),
        pytest.param(lambda s, tx: s.get_node_by_credential(tx, "x"), id="get_node_by_credential"),
        pytest.param(lambda s, tx: s.get_node_for_heartbeat(tx, "x"), id="get_node_for_heartbeat"),
        pytest.param(
            lambda s, tx: s.get_deleted_node_by_credential(tx, "x"),
            id="get_deleted_node_by_credential",
        ),
        pytest.param(lambda s, tx: s.get_revision(tx, str(uuid.uuid4())), id="get_revision"),
        pytest.param(lambda s, tx: s.get_join_token_by_hash(tx, "x"), id="get_join_token_by_hash"),
        pytest.param(
            lambda s, tx: s.get_rejoin_token_by_hash(tx, "x"), id="get_rejoin_token_by_hash"
        ),
    ],
)
def test_a_lookup_of_nothing_answers_none(
    db: Database, lookup: Callable[[NodeStore, Tx], object]
) -> None:
    add(db, "present")  # something is there, just not what is asked for
    with db.read() as tx:
        assert lookup(db.nodes, tx) is None


@pytest.mark.parametrize(
    ("name", "write"),
    [
        ("update_node", lambda s, tx, i: s.update_node(tx, i, {"cordoned": True})),
        ("soft_delete", lambda s, tx, i: s.soft_delete(tx, i, T1)),
        ("replace_credential", lambda s, tx, i: s.replace_credential(tx, i, "a", "b", T1)),
        ("consume_join_token", lambda s, tx, i: s.consume_join_token(tx, i)),
        ("delete_join_token", lambda s, tx, i: s.delete_join_token(tx, i)),
        ("use_rejoin_token", lambda s, tx, i: s.use_rejoin_token(tx, i, T1)),
    ],
)
def test_a_write_to_nothing_touches_no_row(
    db: Database, name: str, write: Callable[[NodeStore, Tx, str], int]
) -> None:
    with db.write() as tx:
        assert write(db.nodes, tx, str(uuid.uuid4())) == 0, name


def test_the_heartbeat_read_is_the_narrow_row(db: Database) -> None:
    node = add(db, "hb")
    with db.write() as tx:
        db.nodes.update_observed(tx, node.id, {"agent_version": "1.2.3", "updated_at": T1})
        db.nodes.bump_revision(tx, node.id)
    got = read(db, lambda tx: db.nodes.get_node_for_heartbeat(tx, node.credential_hash))
    assert type(got) is HeartbeatNode
    assert got == HeartbeatNode(
        id=node.id,
        name="hb",
        status="pending",
        architecture="x86_64",
        observed_digest=None,
        desired_revision=2,
        agent_version="1.2.3",
    )


def test_observed_facts_are_written_and_read_back(db: Database) -> None:
    node = add(db, "obs")
    fresh = read(db, lambda tx: db.nodes.get_observed(tx, node.id))
    assert type(fresh) is NodeObserved
    assert fresh == NodeObserved(capabilities={}, resources={})
    with db.write() as tx:
        db.nodes.update_observed(
            tx,
            node.id,
            {"capabilities": {"kvm": True}, "resources": {"cpus": 4}, "updated_at": T1},
        )
    got = read(db, lambda tx: db.nodes.get_observed(tx, node.id))
    assert got == NodeObserved(capabilities={"kvm": True}, resources={"cpus": 4})
    row = read(db, lambda tx: db.nodes.get_node(tx, node.id))
    assert row == expected_row(node, capabilities={"kvm": True}, resources={"cpus": 4})
    unknown = read(db, lambda tx: db.nodes.get_observed(tx, str(uuid.uuid4())))
    assert unknown == NodeObserved(capabilities={}, resources={})


def test_update_node_writes_the_change(db: Database) -> None:
    node = add(db, "upd", arch=None)
    change: NodeChange = {
        "status": "ready",
        "cordoned": True,
        "architecture": "aarch64",
        "observed_digest": "d" * 64,
        "status_changed_at": T1,
        "updated_at": T1,
    }
    with db.write() as tx:
        assert db.nodes.update_node(tx, node.id, change) == 1
    got = read(db, lambda tx: db.nodes.get_node(tx, node.id))
    assert got == expected_row(node, **change)


def test_update_node_stamps_last_heartbeat_by_backend(db: Database) -> None:
    node = add(db, "stamp")
    with db.write() as tx:
        assert db.nodes.update_node(tx, node.id, {"last_heartbeat_at": T0}) == 1
    got = read(db, lambda tx: db.nodes.get_node(tx, node.id))
    assert isinstance(got, NodeRow)
    assert got.last_heartbeat_at is not None
    if db.backend == "postgresql":
        assert got.last_heartbeat_at > T0 + timedelta(days=1)  # the server's now(), not T0
    else:
        assert got.last_heartbeat_at == T0


def test_revision_bumps_and_clears_the_digest(db: Database) -> None:
    node = add(db, "rev")
    with db.write() as tx:
        db.nodes.update_node(tx, node.id, {"observed_digest": "d" * 64})
        db.nodes.bump_revision(tx, node.id)
        db.nodes.bump_revision(tx, node.id)
    assert read(db, lambda tx: db.nodes.get_revision(tx, node.id)) == 3
    got = read(db, lambda tx: db.nodes.get_node(tx, node.id))
    assert got == expected_row(node, desired_revision=3, observed_digest=None)


def test_list_nodes_filters_and_pages(db: Database) -> None:
    a = add(db, "a", at=T0)
    b = add(db, "b", arch="aarch64", at=T0 + timedelta(seconds=1))
    c = add(db, "c", at=T0 + timedelta(seconds=2))
    gone = add(db, "d", at=T0 + timedelta(seconds=3))
    with db.write() as tx:
        db.nodes.update_node(tx, a.id, {"status": "ready"})
        db.nodes.update_node(tx, c.id, {"status": "ready", "cordoned": True})
        db.nodes.soft_delete(tx, gone.id, T1)
    with db.read() as tx:
        every = db.nodes.list_nodes(tx, after=None, limit=10)
        page = db.nodes.list_nodes(tx, after=(a.created_at, a.id), limit=1)
        ready = db.nodes.list_nodes(tx, after=None, limit=10, status="ready")
        cordoned = db.nodes.list_nodes(tx, after=None, limit=10, status="cordoned")
        arm = db.nodes.list_nodes(tx, after=None, limit=10, architecture="aarch64")
    assert all(type(r) is NodeRow for r in every)
    assert [r.name for r in every] == ["a", "b", "c"]
    assert page == [expected_row(b)]
    assert [r.name for r in ready] == ["a"]
    assert [r.name for r in cordoned] == ["c"]
    assert [r.name for r in arm] == ["b"]


def test_soft_delete_hides_the_node_and_lock_node_sees_it(db: Database) -> None:
    node = add(db, "del")
    with db.write() as tx:
        assert db.nodes.lock_node(tx, node.id) is True
        assert db.nodes.soft_delete(tx, node.id, T1) == 1
        assert db.nodes.soft_delete(tx, node.id, T1) == 0
        assert db.nodes.lock_node(tx, node.id) is False
    with db.read() as tx:
        assert db.nodes.get_node(tx, node.id) is None
        assert db.nodes.get_node_by_name(tx, "del") is None
        assert db.nodes.get_node_by_credential(tx, node.credential_hash) is None
        assert db.nodes.get_node_for_heartbeat(tx, node.credential_hash) is None
        assert db.nodes.get_revision(tx, node.id) is None
        kept = db.nodes.get_node(tx, node.id, include_deleted=True)
        deleted = db.nodes.get_deleted_node_by_credential(tx, node.credential_hash)
    assert kept == expected_row(node, deleted_at=T1, updated_at=T1)
    assert type(deleted) is DeletedNode
    assert deleted == DeletedNode(id=node.id, name="del", deleted_at=T1)


def test_replace_credential_swaps_the_hash_of_a_live_node(db: Database) -> None:
    node = add(db, "cred")
    with db.write() as tx:
        db.nodes.update_node(tx, node.id, {"observed_digest": "d" * 64})
        assert db.nodes.replace_credential(tx, node.id, "wrong", "new", T1) == 0
        assert db.nodes.replace_credential(tx, node.id, node.credential_hash, "new", T1) == 1
    with db.read() as tx:
        assert db.nodes.get_node_by_credential(tx, node.credential_hash) is None
        got = db.nodes.get_node_by_credential(tx, "new")
    assert got == expected_row(node, credential_hash="new", observed_digest=None, updated_at=T1)


def test_the_default_pool_step_is_claimed_once_and_can_be_set(db: Database) -> None:
    a, b = add(db, "dp-a"), add(db, "dp-b")
    with db.write() as tx:
        assert db.nodes.claim_default_pool_step(tx, a.id, T1) is True
        assert db.nodes.claim_default_pool_step(tx, a.id, T1) is False
        db.nodes.set_default_pool_step(tx, b.id, T1)
        assert db.nodes.claim_default_pool_step(tx, b.id, T1) is False
    with db.read() as tx:
        got = [db.nodes.get_node(tx, a.id), db.nodes.get_node(tx, b.id)]
    assert got == [expected_row(n, default_pool_provisioned_at=T1) for n in (a, b)]


def test_liveness_reads_and_moves_speak_narrow_rows(db: Database) -> None:
    a, b = add(db, "lv-a"), add(db, "lv-b")
    with db.write() as tx:
        db.nodes.update_node(tx, a.id, {"status": "ready"})
        db.nodes.record_heartbeats(tx, [(a.id, T1), (b.id, T1)])
    with db.read() as tx:
        statuses = db.nodes.live_statuses(tx, ["ready", "pending"])
        seen = db.nodes.get_node(tx, a.id)
    assert sorted(statuses, key=lambda s: s.name) == [
        NodeStatus(id=a.id, name="lv-a", status="ready"),
        NodeStatus(id=b.id, name="lv-b", status="pending"),
    ]
    assert all(type(s) is NodeStatus for s in statuses)
    assert seen == expected_row(a, status="ready", last_heartbeat_at=T1)
    later = T1 + timedelta(minutes=5)
    with db.write() as tx:
        moved = db.nodes.move(
            tx, [a.id, b.id], from_status="ready", to_status="unreachable", now=later
        )
    assert moved == [MovedNode(id=a.id, name="lv-a")]
    assert all(type(m) is MovedNode for m in moved)
    got = read(db, lambda tx: db.nodes.get_node(tx, a.id))
    assert got == expected_row(
        a, status="unreachable", status_changed_at=later, updated_at=later, last_heartbeat_at=T1
    )


def test_the_database_clock_variants_move_nodes_on_postgresql_only(db: Database) -> None:
    node = add(db, "dbc")
    with db.write() as tx:
        db.nodes.update_node(tx, node.id, {"status": "ready"})
    if db.backend != "postgresql":
        with pytest.raises(NotImplementedError), db.write() as tx:
            db.nodes.record_heartbeats_db_clock(tx, [(node.id, 0.0)])
        with pytest.raises(NotImplementedError), db.write() as tx:
            db.nodes.transition_db_clock(tx, from_status=["ready"], to_status="unreachable")
        return
    with db.write() as tx:
        db.nodes.record_heartbeats_db_clock(tx, [(node.id, 3600.0)])  # an hour ago
        moved = db.nodes.transition_db_clock(
            tx, from_status=["ready"], to_status="unreachable", heartbeat_older_than=60
        )
    assert moved == [MovedNode(id=node.id, name="dbc")]
    assert all(type(m) is MovedNode for m in moved)


def test_join_tokens_are_inserted_read_consumed_listed_and_deleted(db: Database) -> None:
    token = NewJoinToken(
        id=str(uuid.uuid4()),
        token_hash="jt-hash",
        prefix="otxj_abc",
        description="rack 4",
        created_by=None,
        max_uses=2,
        created_at=T0,
        expires_at=T1,
    )
    want = JoinTokenRow(
        id=token.id,
        token_hash="jt-hash",
        prefix="otxj_abc",
        description="rack 4",
        created_by=None,
        max_uses=2,
        uses=0,
        created_at=T0,
        expires_at=T1,
    )
    with db.write() as tx:
        db.nodes.insert_join_token(tx, token)
    got = read(db, lambda tx: db.nodes.get_join_token_by_hash(tx, "jt-hash"))
    assert type(got) is JoinTokenRow
    assert got == want
    with db.write() as tx:
        assert [db.nodes.consume_join_token(tx, token.id) for _ in range(3)] == [1, 1, 0]
        listed = db.nodes.list_join_tokens(tx)
    assert listed == [dataclasses.replace(want, uses=2)]
    assert all(type(t) is JoinTokenRow for t in listed)
    with db.write() as tx:
        assert db.nodes.delete_join_token(tx, token.id) == 1
        assert db.nodes.delete_join_token(tx, token.id) == 0
        assert db.nodes.list_join_tokens(tx) == []
        assert db.nodes.get_join_token_by_hash(tx, "jt-hash") is None


def test_a_rejoin_token_is_put_read_and_used_once(db: Database) -> None:
    node = add(db, "rj")
    token = NewRejoinToken(
        node_id=node.id,
        token_hash="rj-hash",
        prefix="otxr_abc",
        created_by=None,
        created_at=T0,
        expires_at=T1,
    )
    with db.write() as tx:
        db.nodes.put_rejoin_token(tx, token)
    got = read(db, lambda tx: db.nodes.get_rejoin_token_by_hash(tx, "rj-hash"))
    assert type(got) is RejoinTokenRow
    want = RejoinTokenRow(
        node_id=node.id,
        token_hash="rj-hash",
        prefix="otxr_abc",
        created_by=None,
        created_at=T0,
        expires_at=T1,
        used_at=None,
    )
    assert got == want
    with db.write() as tx:
        assert db.nodes.use_rejoin_token(tx, "rj-hash", T1) == 1
        assert db.nodes.use_rejoin_token(tx, "rj-hash", T1) == 0
    used = read(db, lambda tx: db.nodes.get_rejoin_token_by_hash(tx, "rj-hash"))
    assert used == RejoinTokenRow(
        node_id=node.id,
        token_hash="rj-hash",
        prefix="otxr_abc",
        created_by=None,
        created_at=T0,
        expires_at=T1,
        used_at=T1,
    )
