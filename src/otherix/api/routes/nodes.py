"""``/v1/nodes``: join tokens, enrolment, views, maintenance, and the two
agent endpoints (heartbeat and the long-poll watch)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from otherix.api.deps import Deps, Principal
from otherix.api.guards import AgentCredential, agent_node, public, require
from otherix.api.provide import (
    get_deps,
    get_heartbeat_service,
    get_node_service,
    get_rejoin_service,
    get_watch_service,
)
from otherix.api.routes.common import limit_param, page
from otherix.api.services import nodes
from otherix.api.services.heartbeat import HeartbeatService
from otherix.api.services.nodes import NodeService
from otherix.api.services.rejoin import RejoinService
from otherix.api.services.watching import WatchService
from otherix.api.views.heartbeat import heartbeat_reply
from otherix.api.workers.scheduler import NO_CHANGE
from otherix.domain.liveness import STATUSES
from otherix.errors import ValidationFailed
from otherix.models.common import Page
from otherix.models.heartbeat import HeartbeatReply, HeartbeatReport, WatchReply
from otherix.models.nodes import (
    DefaultPoolProvisioned,
    JoinToken,
    JoinTokenCreate,
    JoinTokenCreated,
    Node,
    NodeCredentialReset,
    NodeDeleted,
    NodeDetail,
    NodeJoin,
    NodeJoined,
    NodeRejoin,
    NodeRejoinToken,
    NodeSummary,
)
from otherix.models.strictjson import INT64_MAX
from otherix.rbac import Permission, Scope

router = APIRouter(prefix="/v1/nodes", tags=["nodes"])

MANAGE = require(Permission.NODE_MANAGE)
MAINT = require(Permission.NODE_MAINTENANCE)
READ = require(Permission.NODE_READ)


def _shape(node: Node, me: Principal) -> Node | NodeSummary:
    if me.scope(Permission.NODE_READ) is Scope.FULL:
        return node
    return NodeSummary.model_validate(node.model_dump())


@router.post(
    "/join-tokens", operation_id="createJoinToken", status_code=201, response_model=JoinTokenCreated
)
def create_join_token(
    body: JoinTokenCreate,
    me: Principal = Depends(MANAGE),
    node_service: NodeService = Depends(get_node_service),
) -> JoinTokenCreated:
    return node_service.create_join_token(me.user_id, body)


@router.get("/join-tokens", operation_id="listJoinTokens", dependencies=[Depends(MANAGE)])
def list_join_tokens(node_service: NodeService = Depends(get_node_service)) -> Page[JoinToken]:
    return Page[JoinToken].model_validate({"data": node_service.list_join_tokens(), "meta": {}})


@router.delete(
    "/join-tokens/{token_id}",
    operation_id="deleteJoinToken",
    status_code=204,
    dependencies=[Depends(MANAGE)],
)
def delete_join_token(
    token_id: str, node_service: NodeService = Depends(get_node_service)
) -> Response:
    node_service.delete_join_token(token_id)
    return Response(status_code=204)


@router.post("/join", operation_id="joinNode", status_code=201, dependencies=[Depends(public)])
def join(body: NodeJoin, node_service: NodeService = Depends(get_node_service)) -> NodeJoined:
    return node_service.join(body)


@router.post("/rejoin", operation_id="rejoinNode", dependencies=[Depends(public)])
def rejoin_node(
    body: NodeRejoin, rejoin_service: RejoinService = Depends(get_rejoin_service)
) -> NodeJoined:
    """Redeem a re-enrol token: the token's node gets a new credential (shown
    once) and its old credential stops working."""
    return rejoin_service.rejoin(body)


@router.get("", operation_id="listNodes", response_model=Page[Node] | Page[NodeSummary])
def list_nodes(
    limit: int | None = None,
    cursor: str | None = None,
    status: str | None = None,
    architecture: str | None = None,
    me: Principal = Depends(READ),
    node_service: NodeService = Depends(get_node_service),
) -> dict[str, object]:
    if status is not None and status not in STATUSES:
        raise ValidationFailed(f"invalid status {status!r}", {"field": "status"})
    data, nxt = node_service.list_nodes(
        limit=limit_param(limit), cursor=cursor, status=status, architecture=architecture
    )
    return page([_shape(n, me) for n in data], nxt)


@router.get("/{name}", operation_id="getNode", response_model=NodeDetail | NodeSummary)
def get_node(
    name: str, me: Principal = Depends(READ), node_service: NodeService = Depends(get_node_service)
) -> Node | NodeSummary:
    if me.scope(Permission.NODE_READ) is Scope.FULL:  # with the node's events
        return node_service.node_detail(name)
    return _shape(nodes.node_view(node_service.get_node_row(name)), me)


@router.post("/{name}/cordon", operation_id="cordonNode", dependencies=[Depends(MAINT)])
def cordon(name: str, node_service: NodeService = Depends(get_node_service)) -> Node:
    return node_service.set_cordon(name, True)


@router.post("/{name}/uncordon", operation_id="uncordonNode", dependencies=[Depends(MAINT)])
def uncordon(name: str, node_service: NodeService = Depends(get_node_service)) -> Node:
    return node_service.set_cordon(name, False)


@router.post("/{name}/readmit", operation_id="readmitNode", dependencies=[Depends(MAINT)])
def readmit(name: str, node_service: NodeService = Depends(get_node_service)) -> Node:
    return node_service.readmit(name)


@router.post(
    "/{name}/reset-credentials",
    operation_id="resetNodeCredentials",
    status_code=201,
)
def reset_credentials(
    name: str,
    body: NodeCredentialReset | None = None,
    me: Principal = Depends(MANAGE),
    rejoin_service: RejoinService = Depends(get_rejoin_service),
) -> NodeRejoinToken:
    """A one-time re-enrol token for a node that lost its credential (shown once;
    a newer one replaces an older one). The current credential keeps working
    until the token is redeemed with ``POST /v1/nodes/rejoin``."""
    return rejoin_service.reset_credentials(name, me.user_id, body or NodeCredentialReset())


@router.delete("/{name}", operation_id="deleteNode", dependencies=[Depends(MANAGE)])
def delete_node(name: str, node_service: NodeService = Depends(get_node_service)) -> NodeDeleted:
    """200 with the pool instances deleted with the node (docs/pool-contract.md
    §3.3; a bare 204 used to leave them orphaned)."""
    return node_service.delete_node(name)


@router.post(
    "/{name}/provision-default-pool",
    operation_id="provisionDefaultPool",
    dependencies=[Depends(MANAGE)],
)
def provision_default_pool(
    name: str, node_service: NodeService = Depends(get_node_service)
) -> DefaultPoolProvisioned:
    """Run the default-pool step for this node now and say what it did."""
    return node_service.provision_default_pool(name)


@router.post("/{name}/heartbeat", operation_id="nodeHeartbeat", response_model=HeartbeatReply)
async def heartbeat(
    request: Request,
    name: str,
    report: HeartbeatReport,
    deps: Deps = Depends(get_deps),
    cred: AgentCredential = Depends(agent_node),
    heartbeat_service: HeartbeatService = Depends(get_heartbeat_service),
) -> Response:
    """Observed state in, desired state out (body pre-serialised per revision).

    On SQLite an unchanged heartbeat is one WAL read that never waits for a
    lock, so it is answered on the event loop; anything that writes (and every
    heartbeat on PostgreSQL, whose reads cross the network) runs in a worker.
    """
    if deps.db.backend == "sqlite":
        answer = heartbeat_service.heartbeat(cred.token, name, report, read_only=True)
        if answer is not None:
            setattr(request.state, NO_CHANGE, True)  # nothing written: no scheduler pass
            return Response(heartbeat_reply(answer), media_type="application/json")
    written = await run_in_threadpool(heartbeat_service.heartbeat, cred.token, name, report)
    return Response(heartbeat_reply(written), media_type="application/json")


@router.get("/{name}/watch", operation_id="nodeWatch")
async def watch(
    name: str,
    revision: int = Query(ge=0, le=INT64_MAX),
    timeout: float = Query(default=25.0, ge=0, le=120),
    cred: AgentCredential = Depends(agent_node),
    watch_service: WatchService = Depends(get_watch_service),
) -> WatchReply:
    """Returns as soon as the node's desired revision passes ``revision``,
    or after ``timeout`` seconds with ``changed: false``."""
    return await watch_service.watch(cred.token, name, revision, timeout)
