"""The nodes aggregate: ``nodes`` (desired + liveness) with ``node_observed``
(the facts an agent reports), join tokens and re-enrol tokens, and the narrow
shapes the heartbeat and liveness paths read.

One protocol, :class:`NodeStore`: join and re-enrol tokens exist to make and
re-credential node rows, and every service that uses them also uses nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypedDict

from otherix.store.ports import JSONObject
from otherix.store.tx import Tx


@dataclass(frozen=True, slots=True)
class NodeRow:
    """A node with its observed facts: everything a node view needs, in one query."""

    id: str
    name: str
    name_lower: str
    #: pending | ready | unreachable | gone (cordoning is ``cordoned``)
    status: str
    cordoned: bool
    architecture: str | None
    credential_hash: str
    desired_revision: int
    observed_digest: str | None
    created_at: datetime
    updated_at: datetime
    status_changed_at: datetime
    last_heartbeat_at: datetime | None
    deleted_at: datetime | None
    default_pool_provisioned_at: datetime | None
    #: ``node_observed`` columns (outer join: None only without that row)
    agent_version: str | None
    capabilities: JSONObject | None
    resources: JSONObject | None


@dataclass(frozen=True, slots=True)
class HeartbeatNode:
    """The hot-path read of a heartbeat: only the narrow columns, no JSON."""

    id: str
    name: str
    status: str
    architecture: str | None
    observed_digest: str | None
    desired_revision: int
    agent_version: str | None


@dataclass(frozen=True, slots=True)
class NodeObserved:
    """The JSON facts an agent reported (``{}`` each until it reports them)."""

    capabilities: JSONObject
    resources: JSONObject


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """A live node's liveness status, for the single-replica liveness pass."""

    id: str
    name: str
    status: str


@dataclass(frozen=True, slots=True)
class MovedNode:
    """A node a liveness transition moved."""

    id: str
    name: str


@dataclass(frozen=True, slots=True)
class DeletedNode:
    """A deleted node that held a credential (for the 401 that says so)."""

    id: str
    name: str
    deleted_at: datetime


@dataclass(frozen=True, slots=True)
class NewNode:
    """A node to insert: it starts ``pending``, not cordoned, revision 1, with
    empty observed facts; ``updated_at`` and ``status_changed_at`` are
    ``created_at``."""

    id: str
    name: str
    architecture: str | None
    credential_hash: str
    created_at: datetime


class NodeChange(TypedDict, total=False):
    """The ``nodes`` columns an update may set. A ``last_heartbeat_at`` is
    stamped with the database server's clock on PostgreSQL."""

    status: str
    cordoned: bool
    architecture: str | None
    observed_digest: str | None
    status_changed_at: datetime
    updated_at: datetime
    last_heartbeat_at: datetime | None


class ObservedChange(TypedDict, total=False):
    """The ``node_observed`` columns a heartbeat may set."""

    agent_version: str | None
    capabilities: JSONObject
    resources: JSONObject
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class JoinTokenRow:
    id: str
    token_hash: str
    prefix: str
    description: str
    created_by: str | None
    max_uses: int | None
    uses: int
    created_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewJoinToken:
    """A join token to insert (only its sha256 is stored); it starts unused."""

    id: str
    token_hash: str
    prefix: str
    description: str
    created_by: str | None
    max_uses: int | None
    created_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class RejoinTokenRow:
    node_id: str
    token_hash: str
    prefix: str
    created_by: str | None
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewRejoinToken:
    """A node's re-enrol token to store (only its sha256); it starts unused."""

    node_id: str
    token_hash: str
    prefix: str
    created_by: str | None
    created_at: datetime
    expires_at: datetime


class NodeStore(Protocol):
    """Nodes, their observed facts and liveness, join and re-enrol tokens."""

    # nodes
    def insert_node(self, tx: Tx, node: NewNode) -> None: ...
    def get_node(self, tx: Tx, node_id: str, include_deleted: bool = False) -> NodeRow | None: ...
    def get_node_by_name(self, tx: Tx, name: str) -> NodeRow | None: ...
    def get_node_by_credential(self, tx: Tx, credential_hash: str) -> NodeRow | None: ...
    def get_node_for_heartbeat(self, tx: Tx, credential_hash: str) -> HeartbeatNode | None: ...
    def get_deleted_node_by_credential(
        self, tx: Tx, credential_hash: str
    ) -> DeletedNode | None: ...
    def list_nodes(
        self,
        tx: Tx,
        *,
        after: tuple[datetime, str] | None,
        limit: int,
        status: str | None = None,
        architecture: str | None = None,
    ) -> list[NodeRow]: ...
    def update_node(self, tx: Tx, node_id: str, change: NodeChange) -> int: ...
    def lock_node(self, tx: Tx, node_id: str) -> bool: ...
    def soft_delete(self, tx: Tx, node_id: str, now: datetime) -> int: ...
    def replace_credential(
        self, tx: Tx, node_id: str, old_hash: str, new_hash: str, now: datetime
    ) -> int: ...
    # desired revision and observed facts
    def bump_revision(self, tx: Tx, node_id: str) -> None: ...
    def get_revision(self, tx: Tx, node_id: str) -> int | None: ...
    def get_observed(self, tx: Tx, node_id: str) -> NodeObserved: ...
    def update_observed(self, tx: Tx, node_id: str, change: ObservedChange) -> None: ...
    # liveness
    def record_heartbeats(self, tx: Tx, seen: Sequence[tuple[str, datetime]]) -> None: ...
    def record_heartbeats_db_clock(self, tx: Tx, ages: Sequence[tuple[str, float]]) -> None: ...
    def transition_db_clock(
        self,
        tx: Tx,
        *,
        from_status: Sequence[str],
        to_status: str,
        heartbeat_older_than: float | None = None,
        changed_older_than: float | None = None,
    ) -> list[MovedNode]: ...
    def live_statuses(self, tx: Tx, statuses: Sequence[str]) -> list[NodeStatus]: ...
    def move(
        self,
        tx: Tx,
        node_ids: Sequence[str],
        *,
        from_status: str,
        to_status: str,
        now: datetime,
    ) -> list[MovedNode]: ...
    # the default-pool step
    def claim_default_pool_step(self, tx: Tx, node_id: str, now: datetime) -> bool: ...
    def set_default_pool_step(self, tx: Tx, node_id: str, now: datetime) -> None: ...
    # join tokens
    def insert_join_token(self, tx: Tx, token: NewJoinToken) -> None: ...
    def get_join_token_by_hash(self, tx: Tx, token_hash: str) -> JoinTokenRow | None: ...
    def consume_join_token(self, tx: Tx, token_id: str) -> int: ...
    def list_join_tokens(self, tx: Tx) -> list[JoinTokenRow]: ...
    def delete_join_token(self, tx: Tx, token_id: str) -> int: ...
    # re-enrol tokens
    def put_rejoin_token(self, tx: Tx, token: NewRejoinToken) -> None: ...
    def get_rejoin_token_by_hash(self, tx: Tx, token_hash: str) -> RejoinTokenRow | None: ...
    def use_rejoin_token(self, tx: Tx, token_hash: str, now: datetime) -> int: ...
