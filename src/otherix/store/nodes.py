"""Nodes (desired + liveness), their observed facts, join tokens and re-enrol tokens.

``SqlNodes`` implements ``ports.nodes.NodeStore`` and speaks its frozen rows.

Liveness has two shapes here. One replica (SQLite) measures ages with its own
monotonic clock and only asks the store which nodes are in which status
(``live_statuses``) and to move the ones it picked (``move``). Several
replicas (PostgreSQL) share liveness through ``last_heartbeat_at`` and
``status_changed_at``, written and compared with the *database server's*
clock (``record_heartbeats_db_clock``, ``transition_db_clock``, and
``update_node`` for ``last_heartbeat_at``), the one clock all replicas share
and that no replica's wall-clock step can move.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

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
    ObservedChange,
    RejoinTokenRow,
)
from otherix.store.schema import join_tokens, node_observed, node_rejoin_tokens, nodes
from otherix.store.tx import Tx, sql

_live = nodes.c.deleted_at.is_(None)


def _rows(tx: Tx, stmt: sa.Select[Any]) -> list[RowMapping]:
    return list(sql(tx).execute(stmt).mappings())


def _select() -> sa.Select[Any]:
    return sa.select(
        nodes,
        node_observed.c.agent_version,
        node_observed.c.capabilities,
        node_observed.c.resources,
    ).select_from(nodes.outerjoin(node_observed, node_observed.c.node_id == nodes.c.id))


def _one_node(tx: Tx, stmt: sa.Select[Any]) -> NodeRow | None:
    rows = _rows(tx, stmt)
    return NodeRow(**rows[0]) if rows else None


def _db_clock(tx: Tx) -> bool:
    return sql(tx).dialect.name == "postgresql"


def _older_than(seconds: float) -> sa.ColumnElement[Any]:
    return sa.func.now() - sa.func.make_interval(
        0, 0, 0, 0, 0, 0, sa.literal(float(seconds), sa.Float)
    )


class SqlNodes:
    """:class:`NodeStore` in SQLAlchemy Core, for both backends."""

    # nodes ---------------------------------------------------------------------

    def insert_node(self, tx: Tx, node: NewNode) -> None:
        """A new node: ``pending``, not cordoned, revision 1, empty observed facts."""
        sql(tx).execute(
            nodes.insert().values(
                id=node.id,
                name=node.name,
                name_lower=node.name.lower(),
                status="pending",
                cordoned=False,
                architecture=node.architecture,
                credential_hash=node.credential_hash,
                desired_revision=1,
                created_at=node.created_at,
                updated_at=node.created_at,
                status_changed_at=node.created_at,
            )
        )
        sql(tx).execute(
            node_observed.insert().values(
                node_id=node.id, capabilities={}, resources={}, updated_at=node.created_at
            )
        )

    def get_node(self, tx: Tx, node_id: str, include_deleted: bool = False) -> NodeRow | None:
        stmt = _select().where(nodes.c.id == node_id)
        if not include_deleted:
            stmt = stmt.where(_live)
        return _one_node(tx, stmt)

    def get_node_by_name(self, tx: Tx, name: str) -> NodeRow | None:
        return _one_node(tx, _select().where(nodes.c.name_lower == name.lower(), _live))

    def get_node_by_credential(self, tx: Tx, credential_hash: str) -> NodeRow | None:
        """The full node row (with observed facts) for a live node's credential."""
        return _one_node(tx, _select().where(nodes.c.credential_hash == credential_hash, _live))

    def get_node_for_heartbeat(self, tx: Tx, credential_hash: str) -> HeartbeatNode | None:
        """The hot-path read: only the narrow columns a heartbeat needs, no JSON."""
        stmt = (
            sa.select(
                nodes.c.id,
                nodes.c.name,
                nodes.c.status,
                nodes.c.architecture,
                nodes.c.observed_digest,
                nodes.c.desired_revision,
                node_observed.c.agent_version,
            )
            .select_from(nodes.outerjoin(node_observed, node_observed.c.node_id == nodes.c.id))
            .where(nodes.c.credential_hash == credential_hash, _live)
        )
        row = sql(tx).execute(stmt).mappings().first()
        return HeartbeatNode(**row) if row else None

    def get_deleted_node_by_credential(self, tx: Tx, credential_hash: str) -> DeletedNode | None:
        """A deleted node that held this credential (the newest), for a 401 that says so."""
        stmt = (
            sa.select(nodes.c.id, nodes.c.name, nodes.c.deleted_at)
            .where(nodes.c.credential_hash == credential_hash, nodes.c.deleted_at.is_not(None))
            .order_by(nodes.c.deleted_at.desc())
            .limit(1)
        )
        row = sql(tx).execute(stmt).mappings().first()
        return DeletedNode(**row) if row else None

    def list_nodes(
        self,
        tx: Tx,
        *,
        after: tuple[datetime, str] | None,
        limit: int,
        status: str | None = None,
        architecture: str | None = None,
    ) -> list[NodeRow]:
        stmt = _select().where(_live)
        if after is not None:
            stmt = stmt.where(sa.tuple_(nodes.c.created_at, nodes.c.id) > sa.tuple_(*after))
        if architecture:
            stmt = stmt.where(nodes.c.architecture == architecture)
        if status == "cordoned":
            stmt = stmt.where(nodes.c.cordoned.is_(True), nodes.c.status == "ready")
        elif status:
            stmt = stmt.where(nodes.c.status == status)
            if status == "ready":
                stmt = stmt.where(nodes.c.cordoned.is_(False))
        stmt = stmt.order_by(nodes.c.created_at, nodes.c.id).limit(limit)
        return [NodeRow(**r) for r in _rows(tx, stmt)]

    def update_node(self, tx: Tx, node_id: str, change: NodeChange) -> int:
        """Update one node row. On PostgreSQL a ``last_heartbeat_at`` in ``change``
        is stamped with the database server's clock (``now()``) instead of the
        caller's: it is liveness state that other replicas compare with that clock."""
        values: dict[str, object] = dict(change)
        if "last_heartbeat_at" in values and _db_clock(tx):
            values["last_heartbeat_at"] = sa.func.now()
        stmt = nodes.update().where(nodes.c.id == node_id).values(**values)
        return sql(tx).execute(stmt).rowcount

    def lock_node(self, tx: Tx, node_id: str) -> bool:
        """Lock a live node's row for the rest of the transaction (PostgreSQL
        ``FOR UPDATE``; SQLite write transactions hold the database write lock
        from ``BEGIN IMMEDIATE``). Serialises pool creates on one node; False when
        the node is gone or deleted meanwhile."""
        stmt = sa.select(nodes.c.id).where(nodes.c.id == node_id, _live).with_for_update()
        return sql(tx).execute(stmt).scalar_one_or_none() is not None

    def soft_delete(self, tx: Tx, node_id: str, now: datetime) -> int:
        """Mark the node deleted. Its credential hash stays on the row (a deleted row
        never authenticates: every lookup filters live rows) so that the agent can
        be told its node was removed instead of "unknown credential"."""
        stmt = (
            nodes.update()
            .where(nodes.c.id == node_id, _live)
            .values(deleted_at=now, updated_at=now)
        )
        return sql(tx).execute(stmt).rowcount

    def replace_credential(
        self, tx: Tx, node_id: str, old_hash: str, new_hash: str, now: datetime
    ) -> int:
        """Swap a live node's credential hash (compare-and-set on the old one); the
        old credential stops working in the same transaction. Clears the stored
        digest so the agent's next report is complete."""
        stmt = (
            nodes.update()
            .where(nodes.c.id == node_id, nodes.c.credential_hash == old_hash, _live)
            .values(credential_hash=new_hash, observed_digest=None, updated_at=now)
        )
        return sql(tx).execute(stmt).rowcount

    # desired revision and observed facts ---------------------------------------

    def bump_revision(self, tx: Tx, node_id: str) -> None:
        sql(tx).execute(
            nodes.update()
            .where(nodes.c.id == node_id)
            .values(desired_revision=nodes.c.desired_revision + 1, observed_digest=None)
        )

    def get_revision(self, tx: Tx, node_id: str) -> int | None:
        stmt = sa.select(nodes.c.desired_revision).where(nodes.c.id == node_id, _live)
        return sql(tx).execute(stmt).scalar_one_or_none()

    def get_observed(self, tx: Tx, node_id: str) -> NodeObserved:
        stmt = sa.select(node_observed.c.capabilities, node_observed.c.resources).where(
            node_observed.c.node_id == node_id
        )
        row = sql(tx).execute(stmt).mappings().first()
        return NodeObserved(**row) if row else NodeObserved(capabilities={}, resources={})

    def update_observed(self, tx: Tx, node_id: str, change: ObservedChange) -> None:
        sql(tx).execute(
            node_observed.update().where(node_observed.c.node_id == node_id).values(**change)
        )

    # liveness ------------------------------------------------------------------

    def record_heartbeats(self, tx: Tx, seen: Sequence[tuple[str, datetime]]) -> None:
        """Write-behind flush of last_heartbeat_at (one statement per batch)."""
        if not seen:
            return
        stmt = (
            nodes.update()
            .where(nodes.c.id == sa.bindparam("b_id"))
            .where(
                sa.or_(
                    nodes.c.last_heartbeat_at.is_(None),
                    nodes.c.last_heartbeat_at < sa.bindparam("b_at"),
                )
            )
            .values(last_heartbeat_at=sa.bindparam("b_at"))
        )
        sql(tx).execute(stmt, [{"b_id": i, "b_at": t} for i, t in seen])

    def record_heartbeats_db_clock(self, tx: Tx, ages: Sequence[tuple[str, float]]) -> None:
        """PostgreSQL: ``last_heartbeat_at = now() - age`` for each (node id, seconds
        since the heartbeat, by the replica's monotonic clock). Never moves a time
        backwards, except one in the database's future (written by a clock that ran
        ahead), which is replaced."""
        if not ages:
            return
        if not _db_clock(tx):
            raise NotImplementedError("the database clock is used on PostgreSQL only")
        seen = sa.func.now() - sa.func.make_interval(
            0, 0, 0, 0, 0, 0, sa.bindparam("b_age", type_=sa.Float)
        )
        last = nodes.c.last_heartbeat_at
        stmt = (
            nodes.update()
            .where(nodes.c.id == sa.bindparam("b_id"))
            .values(
                last_heartbeat_at=sa.case(
                    (sa.or_(last.is_(None), last < seen, last > sa.func.now()), seen), else_=last
                )
            )
        )
        sql(tx).execute(stmt, [{"b_id": i, "b_age": max(0.0, float(a))} for i, a in ages])

    def transition_db_clock(
        self,
        tx: Tx,
        *,
        from_status: Sequence[str],
        to_status: str,
        heartbeat_older_than: float | None = None,
        changed_older_than: float | None = None,
    ) -> list[MovedNode]:
        """PostgreSQL: move every live node in ``from_status`` whose heartbeat (or,
        never heard from, whose creation) and/or last status change is older than
        these many seconds, by the database server's clock (``now()``), which also
        stamps ``status_changed_at``. Returns the moved nodes."""
        if not _db_clock(tx):
            raise NotImplementedError("the database clock is used on PostgreSQL only")
        cond: list[sa.ColumnElement[bool]] = [_live, nodes.c.status.in_(list(from_status))]
        if heartbeat_older_than is not None:
            cutoff = _older_than(heartbeat_older_than)
            cond.append(
                sa.or_(
                    nodes.c.last_heartbeat_at < cutoff,
                    sa.and_(nodes.c.last_heartbeat_at.is_(None), nodes.c.created_at < cutoff),
                )
            )
        if changed_older_than is not None:
            cond.append(nodes.c.status_changed_at < _older_than(changed_older_than))
        stmt = (
            nodes.update()
            .where(*cond)
            .values(status=to_status, status_changed_at=sa.func.now(), updated_at=sa.func.now())
            .returning(nodes.c.id, nodes.c.name)
        )
        return [MovedNode(**r) for r in sql(tx).execute(stmt).mappings()]

    def live_statuses(self, tx: Tx, statuses: Sequence[str]) -> list[NodeStatus]:
        """Every live node in one of ``statuses``."""
        stmt = sa.select(nodes.c.id, nodes.c.name, nodes.c.status).where(
            _live, nodes.c.status.in_(list(statuses))
        )
        return [NodeStatus(**r) for r in _rows(tx, stmt)]

    def move(
        self,
        tx: Tx,
        node_ids: Sequence[str],
        *,
        from_status: str,
        to_status: str,
        now: datetime,
    ) -> list[MovedNode]:
        """Move the given live nodes that are still in ``from_status``; the moved rows."""
        if not node_ids:
            return []
        cond = [_live, nodes.c.id.in_(list(node_ids)), nodes.c.status == from_status]
        moved = [
            MovedNode(**r) for r in _rows(tx, sa.select(nodes.c.id, nodes.c.name).where(*cond))
        ]
        if moved:
            sql(tx).execute(
                nodes.update()
                .where(nodes.c.id.in_([m.id for m in moved]))
                .values(status=to_status, status_changed_at=now, updated_at=now)
            )
        return moved

    # the default-pool step (0006) ----------------------------------------------

    def claim_default_pool_step(self, tx: Tx, node_id: str, now: datetime) -> bool:
        """Compare-and-set ``default_pool_provisioned_at`` from NULL: True for the one
        caller (of any replica) that runs the automatic default-pool step."""
        stmt = (
            nodes.update()
            .where(nodes.c.id == node_id, nodes.c.default_pool_provisioned_at.is_(None))
            .values(default_pool_provisioned_at=now)
        )
        return sql(tx).execute(stmt).rowcount == 1

    def set_default_pool_step(self, tx: Tx, node_id: str, now: datetime) -> None:
        sql(tx).execute(
            nodes.update().where(nodes.c.id == node_id).values(default_pool_provisioned_at=now)
        )

    # join tokens ---------------------------------------------------------------

    def insert_join_token(self, tx: Tx, token: NewJoinToken) -> None:
        sql(tx).execute(
            join_tokens.insert().values(
                id=token.id,
                token_hash=token.token_hash,
                prefix=token.prefix,
                description=token.description,
                created_by=token.created_by,
                max_uses=token.max_uses,
                uses=0,
                created_at=token.created_at,
                expires_at=token.expires_at,
            )
        )

    def get_join_token_by_hash(self, tx: Tx, token_hash: str) -> JoinTokenRow | None:
        stmt = sa.select(join_tokens).where(join_tokens.c.token_hash == token_hash)
        row = sql(tx).execute(stmt).mappings().first()
        return JoinTokenRow(**row) if row else None

    def consume_join_token(self, tx: Tx, token_id: str) -> int:
        """Compare-and-set use counter: 0 rows means it was exhausted concurrently."""
        stmt = (
            join_tokens.update()
            .where(
                join_tokens.c.id == token_id,
                sa.or_(
                    join_tokens.c.max_uses.is_(None), join_tokens.c.uses < join_tokens.c.max_uses
                ),
            )
            .values(uses=join_tokens.c.uses + 1)
        )
        return sql(tx).execute(stmt).rowcount

    def list_join_tokens(self, tx: Tx) -> list[JoinTokenRow]:
        stmt = sa.select(join_tokens).order_by(join_tokens.c.created_at, join_tokens.c.id)
        return [JoinTokenRow(**r) for r in _rows(tx, stmt)]

    def delete_join_token(self, tx: Tx, token_id: str) -> int:
        return sql(tx).execute(join_tokens.delete().where(join_tokens.c.id == token_id)).rowcount

    # re-enrol tokens -----------------------------------------------------------
    # One per node at most (the primary key is the node id): a newer token replaces
    # an older one. Only the sha256 of the token is stored, like join tokens.

    def put_rejoin_token(self, tx: Tx, token: NewRejoinToken) -> None:
        """Store ``token`` as the node's only re-enrol token, replacing any older one."""
        sql(tx).execute(
            node_rejoin_tokens.delete().where(node_rejoin_tokens.c.node_id == token.node_id)
        )
        sql(tx).execute(
            node_rejoin_tokens.insert().values(
                node_id=token.node_id,
                token_hash=token.token_hash,
                prefix=token.prefix,
                created_by=token.created_by,
                created_at=token.created_at,
                expires_at=token.expires_at,
            )
        )

    def get_rejoin_token_by_hash(self, tx: Tx, token_hash: str) -> RejoinTokenRow | None:
        stmt = sa.select(node_rejoin_tokens).where(node_rejoin_tokens.c.token_hash == token_hash)
        row = sql(tx).execute(stmt).mappings().first()
        return RejoinTokenRow(**row) if row else None

    def use_rejoin_token(self, tx: Tx, token_hash: str, now: datetime) -> int:
        """Compare-and-set: 1 when this call used the token, 0 when it was used (or
        replaced) concurrently."""
        stmt = (
            node_rejoin_tokens.update()
            .where(
                node_rejoin_tokens.c.token_hash == token_hash,
                node_rejoin_tokens.c.used_at.is_(None),
            )
            .values(used_at=now)
        )
        return sql(tx).execute(stmt).rowcount


#: The one instance (stateless). ``Database.nodes`` is this; services that are
#: not handed a store yet import it as ``qn``.
store: NodeStore = SqlNodes()
