"""Nodes: join tokens, enrolment, agent authentication, views, maintenance.

Liveness status lives in ``nodes.status`` (pending, ready, unreachable, gone);
cordoning is a separate flag, projected as status ``cordoned`` while the node
is otherwise ready. Deleting a node soft-deletes it and keeps its pools,
which then show ``node: ""`` (orphaned).
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy.engine import Connection

from otherix.api.deps import AgentIdentity, Deps
from otherix.api.services import secrets
from otherix.errors import (
    Conflict,
    NotFound,
    Unauthenticated,
    ValidationFailed,
    not_found_message,
)
from otherix.models.nodes import (
    JoinToken,
    JoinTokenCreate,
    JoinTokenCreated,
    Node,
    NodeJoin,
    NodeJoined,
)
from otherix.models.pagination import decode_cursor, split_page
from otherix.models.validation import looks_like_uuid, validate_node_name
from otherix.store import UniqueViolation
from otherix.store import nodes as q


def projected_status(row: dict[str, Any]) -> str:
    if row.get("deleted_at") is not None:
        return "gone"
    if row["status"] == "ready" and row["cordoned"]:
        return "cordoned"
    return str(row["status"])


def node_view(row: dict[str, Any]) -> Node:
    return Node.model_validate(
        {
            **row,
            "status": projected_status(row),
            "capabilities": row.get("capabilities") or {},
            "resources": row.get("resources") or {},
        }
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


def node_filter_id(conn: Connection, node: str | None) -> str | None:
    """A list filter ``?node=`` (name or UUID) -> the node's id; unknown -> 400."""
    if node is None:
        return None
    row = (
        q.get_node(conn, node.lower()) if looks_like_uuid(node) else q.get_node_by_name(conn, node)
    )
    if row is None:
        raise ValidationFailed(node_not_found(node), {"node": node})
    return str(row["id"])


def get_node_row(deps: Deps, name: str) -> dict[str, Any]:
    name_param(name)
    with deps.db.read() as conn:
        row = q.get_node_by_name(conn, name)
    if row is None:
        raise NotFound(node_not_found(name))
    return row


# join tokens -------------------------------------------------------------------


def create_join_token(deps: Deps, created_by: str, body: JoinTokenCreate) -> JoinTokenCreated:
    now = deps.clock.now()
    token = secrets.new_token(secrets.JOIN_TOKEN_PREFIX)
    row = {
        "id": str(uuid.uuid4()),
        "token_hash": secrets.digest(token),
        "prefix": token[:12],
        "description": body.description,
        "created_by": created_by,
        "max_uses": body.max_uses,
        "uses": 0,
        "created_at": now,
        "expires_at": now + timedelta(seconds=body.ttl_seconds) if body.ttl_seconds else None,
    }
    with deps.db.write() as conn:
        q.insert_join_token(conn, row)
    return JoinTokenCreated.model_validate({**row, "token": token})


def list_join_tokens(deps: Deps) -> list[JoinToken]:
    with deps.db.read() as conn:
        return [JoinToken.model_validate(r) for r in q.list_join_tokens(conn)]


def delete_join_token(deps: Deps, token_id: str) -> None:
    with deps.db.write() as conn:
        if not q.delete_join_token(conn, token_id):
            raise NotFound(
                not_found_message("join token", token_id, "otherix node join-token list")
            )


def join(deps: Deps, body: NodeJoin) -> NodeJoined:
    """Enrol a node with a join token; the credential is shown once."""
    problem = validate_node_name(body.name)
    if problem:
        raise ValidationFailed(problem, {"field": "name"})
    name_param(body.name)
    now = deps.clock.now()
    credential = secrets.new_token(secrets.NODE_CREDENTIAL_PREFIX)
    node_id = str(uuid.uuid4())
    try:
        with deps.db.write() as conn:
            tok = q.get_join_token_by_hash(conn, secrets.digest(body.join_token))
            if tok is None:
                raise Unauthenticated("unknown join token", {"reason": "join_token_unknown"})
            if tok["expires_at"] is not None and tok["expires_at"] <= now:
                raise Unauthenticated("join token has expired", {"reason": "join_token_expired"})
            if not q.consume_join_token(conn, tok["id"]):
                raise Unauthenticated(
                    "join token has no uses left", {"reason": "join_token_exhausted"}
                )
            q.insert_node(
                conn,
                {
                    "id": node_id,
                    "name": body.name,
                    "name_lower": body.name.lower(),
                    "status": "pending",
                    "cordoned": False,
                    "architecture": body.architecture,
                    "credential_hash": secrets.digest(credential),
                    "desired_revision": 1,
                    "created_at": now,
                    "updated_at": now,
                    "status_changed_at": now,
                },
            )
    except UniqueViolation as exc:
        raise Conflict(
            f"a node named {body.name!r} is already enrolled", {"field": "name"}
        ) from exc
    return NodeJoined(
        node_id=node_id,
        name=body.name,
        credential=credential,
        heartbeat_interval_seconds=deps.settings.agents.heartbeat_interval,
    )


def authenticate_agent(deps: Deps, token: str) -> AgentIdentity:
    if not token.startswith(secrets.NODE_CREDENTIAL_PREFIX):
        raise Unauthenticated("not a node credential", {"reason": "credential_unknown"})
    with deps.db.read() as conn:
        row = q.get_node_by_credential(conn, secrets.digest(token))
    if row is None:
        raise Unauthenticated(
            "unknown or revoked node credential", {"reason": "credential_unknown"}
        )
    return AgentIdentity(row["id"], row["name"])


def bind_agent(ident: AgentIdentity, name: str) -> None:
    """A node may only ever act for itself."""
    if name.lower() != ident.name.lower():
        raise Unauthenticated(
            "credential is not bound to this node", {"reason": "credential_node_mismatch"}
        )


# views and maintenance -----------------------------------------------------------


def list_nodes(
    deps: Deps, *, limit: int, cursor: str | None, status: str | None, architecture: str | None
) -> tuple[list[Node], str | None]:
    after = decode_cursor(cursor) if cursor else None
    with deps.db.read() as conn:
        rows = q.list_nodes(
            conn, after=after, limit=limit + 1, status=status, architecture=architecture
        )
    page, nxt = split_page(rows, limit)
    return [node_view(r) for r in page], nxt


def set_cordon(deps: Deps, name: str, cordoned: bool) -> Node:
    row = get_node_row(deps, name)
    if cordoned and row["status"] == "gone":
        raise Conflict("node is gone", {"current_status": "gone"})
    if not cordoned and row["status"] != "ready":
        raise Conflict(
            f"node is {row['status']}; only a ready node can be uncordoned",
            {"current_status": row["status"]},
        )
    now = deps.clock.now()
    with deps.db.write() as conn:
        q.update_node(conn, row["id"], {"cordoned": cordoned, "updated_at": now})
        row = q.get_node(conn, row["id"]) or row
    return node_view(row)


def readmit(deps: Deps, name: str) -> Node:
    row = get_node_row(deps, name)
    if row["status"] != "gone":
        raise Conflict("only a gone node can be readmitted", {"current_status": row["status"]})
    now = deps.clock.now()
    with deps.db.write() as conn:
        q.update_node(
            conn, row["id"], {"status": "pending", "status_changed_at": now, "updated_at": now}
        )
        row = q.get_node(conn, row["id"]) or row
    return node_view(row)


def delete_node(deps: Deps, name: str) -> None:
    """Soft-delete: the credential stops working; pools stay, shown as orphaned."""
    row = get_node_row(deps, name)
    now = deps.clock.now()
    with deps.db.write() as conn:
        q.update_node(
            conn,
            row["id"],
            {"deleted_at": now, "updated_at": now, "credential_hash": f"deleted:{row['id']}"},
        )
    deps.hub.publish([row["id"]])
