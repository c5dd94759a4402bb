"""Nodes: join tokens, enrolment, agent authentication, views, maintenance.

Liveness status lives in ``nodes.status`` (pending, ready, unreachable, gone);
cordoning is a separate flag, projected as status ``cordoned`` while the node
is otherwise ready.

Deleting a node (issue 13 item 9, docs/pool-contract.md §3.3; an older design kept
orphaned pools) is refused while its pools hold VM disks, and when it would
remove the last instance of the cluster default pool; otherwise its pool
instances are deleted with it and the answer lists them. The row is
soft-deleted and keeps its credential hash, so the agent's next request gets
``401`` reason ``node_deleted`` (and the agent stops) instead of "unknown
credential". A node's events (``node_events``, newest 50) are shown to admins
and operators on ``GET /v1/nodes/{name}``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from otherix.api.clock import Clock
from otherix.api.deps import AgentIdentity
from otherix.api.services import secrets
from otherix.api.services.defaultpool import DefaultPoolService
from otherix.api.settings import ApiSettings
from otherix.api.watch import WatchHub
from otherix.domain import liveness
from otherix.domain.defaultpool import last_default_message, removes_last_default
from otherix.domain.liveness import projected_status
from otherix.domain.names import looks_like_uuid, validate_node_name
from otherix.errors import (
    Conflict,
    NotFound,
    Unauthenticated,
    ValidationFailed,
    not_found_message,
)
from otherix.models.nodes import (
    DefaultPoolProvisioned,
    JoinToken,
    JoinTokenCreate,
    JoinTokenCreated,
    Node,
    NodeDeleted,
    NodeDetail,
    NodeEvent,
    NodeJoin,
    NodeJoined,
)
from otherix.models.pagination import decode_cursor, split_page
from otherix.store import Database, Tx, UniqueViolation
from otherix.store.ports.events import EventRow, EventStore
from otherix.store.ports.nodes import NewJoinToken, NewNode, NodeRow, NodeStore
from otherix.store.ports.pools import PoolRef, PoolStore
from otherix.store.ports.settings import DEFAULT_POOL_NAME, SettingsStore


def node_view(row: NodeRow) -> Node:
    return Node(
        id=row.id,
        name=row.name,
        status=projected_status(row.status, row.cordoned, row.deleted_at is not None),
        architecture=row.architecture,
        created_at=row.created_at,
        cordoned=row.cordoned,
        agent_version=row.agent_version,
        capabilities=row.capabilities or {},
        resources=row.resources or {},
        last_heartbeat_at=row.last_heartbeat_at,
        status_changed_at=row.status_changed_at,
        desired_revision=row.desired_revision,
        updated_at=row.updated_at,
    )


def name_param(value: str, field: str = "name") -> str:
    """Nodes are addressed by name only; a UUID there is a client mistake."""
    if looks_like_uuid(value):
        raise ValidationFailed(
            f"uuid format not accepted for name-only parameter '{field}'",
            {
                "field": field,
                "reason": "uuid_not_accepted_in_name_path",
                "hint": "Use 'otherix node list' to discover names.",
            },
        )
    return value


def node_not_found(name: str) -> str:
    return not_found_message("node", name, "otherix node list")


@dataclass(kw_only=True, eq=False)
class NodeService:
    """The nodes service, built once by ``api/compose.py`` with the collaborators below."""

    settings: ApiSettings
    db: Database
    clock: Clock
    hub: WatchHub
    event_store: EventStore
    node_store: NodeStore
    pool_store: PoolStore
    settings_store: SettingsStore
    default_pool_service: DefaultPoolService

    def node_filter_id(self, conn: Tx, node: str | None) -> str | None:
        """A list filter ``?node=`` (name or UUID) -> the node's id; unknown -> 400."""
        if node is None:
            return None
        row = (
            self.node_store.get_node(conn, node.lower())
            if looks_like_uuid(node)
            else self.node_store.get_node_by_name(conn, node)
        )
        if row is None:
            raise ValidationFailed(node_not_found(node), {"node": node})
        return row.id

    def get_node_row(self, name: str) -> NodeRow:
        name_param(name)
        with self.db.read() as conn:
            row = self.node_store.get_node_by_name(conn, name)
        if row is None:
            raise NotFound(node_not_found(name))
        return row

    # join tokens -------------------------------------------------------------------

    def create_join_token(self, created_by: str, body: JoinTokenCreate) -> JoinTokenCreated:
        now = self.clock.now()
        token = secrets.new_token(secrets.JOIN_TOKEN_PREFIX)
        row = NewJoinToken(
            id=str(uuid.uuid4()),
            token_hash=secrets.digest(token),
            prefix=token[:12],
            description=body.description,
            created_by=created_by,
            max_uses=body.max_uses,
            created_at=now,
            expires_at=now + timedelta(seconds=body.ttl_seconds) if body.ttl_seconds else None,
        )
        with self.db.write() as conn:
            self.node_store.insert_join_token(conn, row)
        return JoinTokenCreated(
            id=row.id,
            prefix=row.prefix,
            description=row.description,
            max_uses=row.max_uses,
            uses=0,
            created_at=row.created_at,
            expires_at=row.expires_at,
            token=token,
        )

    def list_join_tokens(self) -> list[JoinToken]:
        with self.db.read() as conn:
            return [
                JoinToken(
                    id=r.id,
                    prefix=r.prefix,
                    description=r.description,
                    max_uses=r.max_uses,
                    uses=r.uses,
                    created_at=r.created_at,
                    expires_at=r.expires_at,
                )
                for r in self.node_store.list_join_tokens(conn)
            ]

    def delete_join_token(self, token_id: str) -> None:
        with self.db.write() as conn:
            if not self.node_store.delete_join_token(conn, token_id):
                raise NotFound(
                    not_found_message("join token", token_id, "otherix node join-token list")
                )

    def join(self, body: NodeJoin) -> NodeJoined:
        """Enrol a node with a join token; the credential is shown once."""
        problem = validate_node_name(body.name)
        if problem:
            raise ValidationFailed(problem, {"field": "name"})
        name_param(body.name)
        now = self.clock.now()
        credential = secrets.new_token(secrets.NODE_CREDENTIAL_PREFIX)
        node_id = str(uuid.uuid4())
        try:
            with self.db.write() as conn:
                tok = self.node_store.get_join_token_by_hash(conn, secrets.digest(body.join_token))
                if tok is None:
                    raise Unauthenticated("unknown join token", {"reason": "join_token_unknown"})
                if tok.expires_at is not None and tok.expires_at <= now:
                    raise Unauthenticated(
                        "join token has expired", {"reason": "join_token_expired"}
                    )
                if not self.node_store.consume_join_token(conn, tok.id):
                    raise Unauthenticated(
                        "join token has no uses left", {"reason": "join_token_exhausted"}
                    )
                self.node_store.insert_node(
                    conn,
                    NewNode(
                        id=node_id,
                        name=body.name,
                        architecture=body.architecture,
                        credential_hash=secrets.digest(credential),
                        created_at=now,
                    ),
                )
        except UniqueViolation as exc:
            raise Conflict(
                f"a node named {body.name!r} is already enrolled", {"field": "name"}
            ) from exc
        return NodeJoined(
            node_id=node_id,
            name=body.name,
            credential=credential,
            heartbeat_interval_seconds=self.settings.agents.heartbeat_interval,
        )

    def unknown_credential(self, token: str) -> Unauthenticated:
        """The 401 for a credential no live node holds: ``node_deleted`` when a deleted
        node held it, else ``credential_unknown``. Only failed lookups pay this read."""
        if token.startswith(secrets.NODE_CREDENTIAL_PREFIX):
            with self.db.read() as conn:
                gone = self.node_store.get_deleted_node_by_credential(conn, secrets.digest(token))
            if gone is not None:
                return removed_error(gone.name)
        return Unauthenticated(
            "unknown or revoked node credential", {"reason": "credential_unknown"}
        )

    def authenticate_agent(self, token: str) -> AgentIdentity:
        if not token.startswith(secrets.NODE_CREDENTIAL_PREFIX):
            raise Unauthenticated("not a node credential", {"reason": "credential_unknown"})
        with self.db.read() as conn:
            row = self.node_store.get_node_by_credential(conn, secrets.digest(token))
        if row is None:
            raise self.unknown_credential(token)
        return AgentIdentity(row.id, row.name)

    # views and maintenance -----------------------------------------------------------

    def list_nodes(
        self, *, limit: int, cursor: str | None, status: str | None, architecture: str | None
    ) -> tuple[list[Node], str | None]:
        after = decode_cursor(cursor) if cursor else None
        with self.db.read() as conn:
            rows = self.node_store.list_nodes(
                conn, after=after, limit=limit + 1, status=status, architecture=architecture
            )
        page, nxt = split_page(rows, limit)
        return [node_view(r) for r in page], nxt

    def set_cordon(self, name: str, cordoned: bool) -> Node:
        row = self.get_node_row(name)
        if refusal := liveness.cordon_refusal(row.status, cordoned):
            raise Conflict(refusal, {"current_status": row.status})
        now = self.clock.now()
        with self.db.write() as conn:
            self.node_store.update_node(conn, row.id, {"cordoned": cordoned, "updated_at": now})
            row = self.node_store.get_node(conn, row.id) or row
        return node_view(row)

    def readmit(self, name: str) -> Node:
        row = self.get_node_row(name)
        if refusal := liveness.readmit_refusal(row.status):
            raise Conflict(refusal, {"current_status": row.status})
        now = self.clock.now()
        with self.db.write() as conn:
            self.node_store.update_node(
                conn, row.id, {"status": "pending", "status_changed_at": now, "updated_at": now}
            )
            row = self.node_store.get_node(conn, row.id) or row
        return node_view(row)

    def node_detail(self, name: str) -> NodeDetail:
        """The full view with the node's events (admins and operators)."""
        row = self.get_node_row(name)
        with self.db.read() as conn:
            events = self.event_store.list_events(conn, row.id)
        return NodeDetail.model_validate(
            {**node_view(row).model_dump(), "events": [_event_view(e) for e in events]}
        )

    def provision_default_pool(self, name: str) -> DefaultPoolProvisioned:
        """``otherix node provision-default-pool NODE``: run the default-pool step now."""
        return self.default_pool_service.provision(self.get_node_row(name))

    def _lock_for_delete(self, conn: Tx, node_id: str) -> tuple[list[PoolRef], str | None]:
        """Lock the node's pools and every instance of the cluster default (one
        statement, id order; the order a VM bind and a pool delete use too), then
        the node row. Re-reads the default after locking: once the node's pools
        are held, no ``set-default-pool`` of a name with an instance here can
        commit, so the answer is stable for this transaction."""
        default = self.settings_store.get_setting(conn, DEFAULT_POOL_NAME)
        rows = self.pool_store.lock_for_delete(
            conn, node_id=node_id, names=[default] if default else []
        )
        for _ in range(3):  # the default changed before our locks were in place
            again = self.settings_store.get_setting(conn, DEFAULT_POOL_NAME)
            if (again or "").lower() == (default or "").lower():
                break
            default = again
            rows = self.pool_store.lock_for_delete(
                conn, node_id=node_id, names=[default] if default else []
            )
        return rows, default

    def delete_node(self, name: str) -> NodeDeleted:
        """Delete a node and its pool instances; refused while they hold VM disks or
        would take the last instance of the cluster default with them."""
        row = self.get_node_row(name)
        now = self.clock.now()
        with self.db.write() as conn:
            locked, default = self._lock_for_delete(conn, row.id)
            mine = [r for r in locked if r.node_id == row.id]
            if not self.node_store.lock_node(conn, row.id):
                raise NotFound(node_not_found(name), {"node": name})
            current = {r.id for r in self.pool_store.paths_on_nodes(conn, [row.id])}
            if current != {r.id for r in mine}:
                raise Conflict(
                    f"pools were created on node {row.name} while it was being deleted; "
                    "retry the delete"
                )
            disks = self.pool_store.count_disks_on_node(conn, row.id)
            if disks:
                vms = self.pool_store.vm_names_on_node_pools(conn, row.id)
                raise Conflict(
                    f"node {row.name} cannot be deleted: its storage pools hold {disks} VM "
                    f"disk(s) ({', '.join(vms)}); delete those VMs first ('otherix vm list "
                    f"--node {row.name}')",
                    {
                        "blocking_resources": {"vm_disks": disks},
                        "vms": vms,
                        "hint": f"otherix vm list --node {row.name}",
                    },
                )
            others = [r.name_lower for r in locked if r.node_id != row.id]
            if default is not None and removes_last_default(
                default, [r.name_lower for r in mine], others
            ):
                raise Conflict(
                    f"node {row.name} holds the last instance of the cluster default pool: "
                    + last_default_message(default),
                    {"reason": "default_pool_in_use", "name": default},
                )
            self.pool_store.delete_pools(conn, [r.id for r in mine])
            self.node_store.soft_delete(conn, row.id, now)
        self.hub.publish([row.id])
        return NodeDeleted.model_validate(
            {
                "id": row.id,
                "name": row.name,
                "deleted_pools": [
                    {"id": r.id, "name": r.name, "path": r.path}
                    for r in sorted(mine, key=lambda r: (r.name_lower, r.id))
                ],
            }
        )


def removed_error(name: str) -> Unauthenticated:
    """The 401 a deleted node's credential gets (the agent stops on it)."""
    return Unauthenticated(
        f"node {name} was removed from the cluster ('otherix node delete'); its credential "
        "no longer works. To join again: 'otherix node join-token create', then on the node "
        "'otherix-agent bootstrap --force --server URL --join-token TOKEN --node-name "
        f"{name}'",
        {"reason": "node_deleted", "node": name},
    )


def bind_agent(ident: AgentIdentity, name: str) -> None:
    """A node may only ever act for itself."""
    if name.lower() != ident.name.lower():
        raise Unauthenticated(
            "credential is not bound to this node", {"reason": "credential_node_mismatch"}
        )


def _event_view(e: EventRow) -> NodeEvent:
    return NodeEvent.model_validate(
        {
            "type": e.type,
            "reason": e.reason,
            "message": e.message,
            "details": e.details,
            "created_at": e.created_at,
        }
    )
