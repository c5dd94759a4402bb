"""Store functions for clock-safe liveness and node re-enrol tokens, on every
backend (the database-clock variants on PostgreSQL, where they are used)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from otherix.store import Database, UniqueViolation
from otherix.store.nodes import store as qn
from otherix.store.ports.nodes import NewNode, NewRejoinToken, NodeRow
from otherix.store.schema import node_rejoin_tokens, nodes
from otherix.store.tx import sql

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def add_node(db: Database, name: str, **values: Any) -> str:
    """A node as a join makes it, then the test's columns (``ready`` unless
    ``status`` says otherwise) written straight to the table: raw values, so a
    ``last_heartbeat_at`` is not stamped with the database clock."""
    nid = str(uuid.uuid4())
    created_at = values.pop("created_at", T0)
    new = NewNode(
        id=nid,
        name=name,
        architecture=values.pop("architecture", None),
        credential_hash=values.pop("credential_hash", f"cred-{nid}"),
        created_at=created_at,
    )
    columns = {"status": "ready", "updated_at": T0, "status_changed_at": T0, **values}
    with db.write() as conn:
        qn.insert_node(conn, new)
        sql(conn).execute(nodes.update().where(nodes.c.id == nid).values(**columns))
    return nid


def db_now(db: Database) -> datetime:
    with db.read() as conn:
        value = sql(conn).execute(sa.select(sa.func.now())).scalar_one()
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


def node(db: Database, nid: str) -> NodeRow:
    with db.read() as conn:
        row = qn.get_node(conn, nid, include_deleted=True)
    assert row is not None
    return row


def last_heartbeat(db: Database, nid: str) -> datetime:
    at = node(db, nid).last_heartbeat_at
    assert at is not None
    return at


def pg_only(db: Database) -> None:
    if db.backend != "postgresql":
        pytest.skip("the database clock is used with several replicas, on PostgreSQL")


# liveness: one replica -----------------------------------------------------------------


def test_live_statuses_and_move_only_touch_live_nodes_still_in_the_status(db):
    a = add_node(db, "mv-a")
    b = add_node(db, "mv-b", status="pending")
    gone = add_node(db, "mv-del", deleted_at=T0)
    with db.read() as conn:
        listed = {r.id: r.status for r in qn.live_statuses(conn, ["ready", "pending"])}
    assert listed == {a: "ready", b: "pending"}
    later = T0 + timedelta(minutes=1)
    with db.write() as conn:
        moved = qn.move(conn, [a, b, gone], from_status="ready", to_status="unreachable", now=later)
        assert qn.move(conn, [], from_status="ready", to_status="unreachable", now=later) == []
    assert [m.id for m in moved] == [a]
    assert node(db, a).status == "unreachable"
    assert node(db, a).status_changed_at == later
    assert node(db, b).status == "pending"
    assert node(db, gone).status == "ready"


# liveness: several replicas (database clock) ---------------------------------------------


def test_heartbeat_flush_writes_the_database_clock_minus_the_age(db):
    pg_only(db)
    # The caller's wall clock plays no part: only the age (monotonic) is sent.
    a, b = add_node(db, "dbc-a"), add_node(db, "dbc-b")
    before = db_now(db)
    with db.write() as conn:
        qn.record_heartbeats_db_clock(conn, [(a, 0.0), (b, 30.0)])
    after = db_now(db)
    seen_a, seen_b = last_heartbeat(db, a), last_heartbeat(db, b)
    assert before <= seen_a <= after
    assert before - timedelta(seconds=30) <= seen_b <= after - timedelta(seconds=30)


def test_heartbeat_flush_never_moves_back_but_replaces_a_time_in_the_future(db):
    pg_only(db)
    future = db_now(db) + timedelta(minutes=10)  # written by a replica whose clock ran ahead
    ahead = add_node(db, "dbc-ahead", last_heartbeat_at=future)
    fresh = add_node(db, "dbc-fresh")
    with db.write() as conn:
        qn.record_heartbeats_db_clock(conn, [(fresh, 0.0)])
    newest = last_heartbeat(db, fresh)
    with db.write() as conn:
        # an older heartbeat flushed late (another replica) does not move it back
        qn.record_heartbeats_db_clock(conn, [(fresh, 60.0), (ahead, 0.0)])
    assert last_heartbeat(db, fresh) == newest
    assert last_heartbeat(db, ahead) < future - timedelta(minutes=9)


def test_update_node_stamps_last_heartbeat_with_the_database_clock(db):
    pg_only(db)
    nid = add_node(db, "dbc-promote", status="unreachable")
    stepped_back = db_now(db) - timedelta(minutes=10)
    with db.write() as conn:
        qn.update_node(conn, nid, {"status": "ready", "last_heartbeat_at": stepped_back})
    assert last_heartbeat(db, nid) > stepped_back + timedelta(minutes=9)


def test_transition_by_the_database_clock(db):
    pg_only(db)
    now = db_now(db)
    stale = add_node(db, "dbc-stale", last_heartbeat_at=now - timedelta(seconds=100))
    fresh = add_node(db, "dbc-live", last_heartbeat_at=now - timedelta(seconds=10))
    pending = add_node(db, "dbc-pending", status="pending", last_heartbeat_at=T0)
    old_unreachable = add_node(
        db, "dbc-old", status="unreachable", status_changed_at=now - timedelta(seconds=400)
    )
    new_unreachable = add_node(
        db, "dbc-new", status="unreachable", status_changed_at=now - timedelta(seconds=100)
    )
    with db.write() as conn:
        moved = qn.transition_db_clock(
            conn, from_status=["ready"], to_status="unreachable", heartbeat_older_than=90
        )
        gone = qn.transition_db_clock(
            conn, from_status=["unreachable"], to_status="gone", changed_older_than=300
        )
    assert [m.id for m in moved] == [stale]
    assert [g.id for g in gone] == [old_unreachable]
    status = {n: node(db, n).status for n in (stale, fresh, pending, new_unreachable)}
    assert status == {
        stale: "unreachable",
        fresh: "ready",
        pending: "pending",
        new_unreachable: "unreachable",
    }
    assert node(db, stale).status_changed_at >= now  # stamped by the database too


def test_database_clock_variants_refuse_sqlite(db):
    if db.backend != "sqlite":
        pytest.skip("sqlite only")
    with db.write() as conn, pytest.raises(NotImplementedError):
        qn.record_heartbeats_db_clock(conn, [("x", 1.0)])


# re-enrol tokens -------------------------------------------------------------------------


def token_row(node_id: str, token_hash: str) -> NewRejoinToken:
    return NewRejoinToken(
        node_id=node_id,
        token_hash=token_hash,
        prefix=token_hash[:12],
        created_by=None,
        created_at=T0,
        expires_at=T0 + timedelta(hours=1),
    )


def test_a_newer_rejoin_token_replaces_the_older_one(db):
    nid = add_node(db, "rj-a")
    with db.write() as conn:
        qn.put_rejoin_token(conn, token_row(nid, "h-old"))
    with db.write() as conn:
        qn.put_rejoin_token(conn, token_row(nid, "h-new"))
    with db.read() as conn:
        assert qn.get_rejoin_token_by_hash(conn, "h-old") is None
        row = qn.get_rejoin_token_by_hash(conn, "h-new")
        count = sql(conn).execute(sa.select(sa.func.count()).select_from(node_rejoin_tokens))
        assert count.scalar_one() == 1
    assert row is not None
    assert (row.node_id, row.used_at, row.expires_at) == (
        nid,
        None,
        T0 + timedelta(hours=1),
    )


def test_a_rejoin_token_is_used_once_and_its_hash_is_unique(db):
    a, b = add_node(db, "rj-once"), add_node(db, "rj-other")
    with db.write() as conn:
        qn.put_rejoin_token(conn, token_row(a, "h-once"))
    with db.write() as conn:
        assert qn.use_rejoin_token(conn, "h-once", T0) == 1
    with db.write() as conn:
        assert qn.use_rejoin_token(conn, "h-once", T0) == 0
        assert qn.use_rejoin_token(conn, "h-unknown", T0) == 0
    with pytest.raises(UniqueViolation), db.write() as conn:
        qn.put_rejoin_token(conn, token_row(b, "h-once"))


def test_replace_credential_is_compare_and_set_on_live_nodes(db):
    nid = add_node(db, "rj-cred")
    dead = add_node(db, "rj-dead", deleted_at=T0)
    with db.write() as conn:
        assert qn.replace_credential(conn, nid, "wrong-old", "h2", T0) == 0
        assert qn.replace_credential(conn, dead, f"cred-{dead}", "h3", T0) == 0
        assert qn.replace_credential(conn, nid, f"cred-{nid}", "h2", T0) == 1
    with db.read() as conn:
        assert qn.get_node_by_credential(conn, f"cred-{nid}") is None
        found = qn.get_node_by_credential(conn, "h2")
        assert found is not None
        assert found.id == nid


def test_deleting_a_node_row_takes_its_rejoin_token(db):
    nid = add_node(db, "rj-cascade")
    with db.write() as conn:
        qn.put_rejoin_token(conn, token_row(nid, "h-cascade"))
        sql(conn).execute(sa.text("DELETE FROM node_observed WHERE node_id = :n"), {"n": nid})
        sql(conn).execute(sa.text("DELETE FROM nodes WHERE id = :n"), {"n": nid})
    with db.read() as conn:
        assert qn.get_rejoin_token_by_hash(conn, "h-cascade") is None
