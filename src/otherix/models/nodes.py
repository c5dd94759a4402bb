"""Wire models for nodes, join tokens and enrolment (docs/pool-contract.md §3)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from otherix.models.common import Input, Output
from otherix.models.pools import PoolRef

Architecture = Literal["amd64", "arm64"]


class JoinTokenCreate(Input):
    ttl_seconds: int | None = Field(default=86400, ge=60, le=365 * 86400)
    max_uses: int | None = Field(default=1, ge=1, le=100000)
    description: str = Field(default="", max_length=255)


class JoinToken(Output):
    id: str
    prefix: str
    description: str
    max_uses: int | None
    uses: int
    created_at: datetime
    expires_at: datetime | None


class JoinTokenCreated(JoinToken):
    token: str


class NodeJoin(Input):
    join_token: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=253)
    architecture: Architecture | None = None


class NodeRejoin(Input):
    """Redeem a re-enrol token (``POST /v1/nodes/rejoin``): same node, new credential.
    ``name``, when given, must be the token's node (a check, not a selector)."""

    rejoin_token: str = Field(min_length=1, max_length=256)
    name: str | None = Field(default=None, min_length=1, max_length=253)
    architecture: Architecture | None = None


class NodeCredentialReset(Input):
    """``POST /v1/nodes/{name}/reset-credentials``; no TTL means ``agents.rejoin_token_ttl``."""

    ttl_seconds: int | None = Field(default=None, ge=60, le=7 * 86400)


class NodeRejoinToken(Output):
    """A re-enrol token, shown once; only its sha256 is stored."""

    node_id: str
    node: str
    token: str
    prefix: str
    created_at: datetime
    expires_at: datetime


class NodeJoined(Output):
    node_id: str
    name: str
    credential: str
    heartbeat_interval_seconds: float


class NodeSummary(Output):
    id: str
    name: str
    status: str
    architecture: str | None
    created_at: datetime


class Node(NodeSummary):
    cordoned: bool
    agent_version: str | None
    capabilities: dict[str, Any]
    resources: dict[str, Any]
    last_heartbeat_at: datetime | None
    status_changed_at: datetime
    desired_revision: int
    updated_at: datetime


class NodeEvent(Output):
    """One entry of a node's bounded event log (newest 50 kept)."""

    type: Literal["normal", "warning"]
    reason: str
    message: str
    details: dict[str, Any]
    created_at: datetime


class NodeDetail(Node):
    """``GET /v1/nodes/{name}`` for admins and operators: the node and its events."""

    events: list[NodeEvent]


class NodeDeleted(Output):
    """``DELETE /v1/nodes/{name}``: the node is gone and these pool instances with it."""

    id: str
    name: str
    deleted_pools: list[PoolRef]


ProvisionOutcome = Literal["created", "exists", "path_held", "disabled", "invalid_name"]


class DefaultPoolProvisioned(Output):
    """``POST /v1/nodes/{name}/provision-default-pool``: what the step did.

    ``created``: a new instance (``pool``); ``exists``: the node already has a
    pool of that name (``pool``); ``path_held``: another pool holds the path
    (``other_pool``), nothing created, an event recorded; ``disabled``:
    ``storage_pools.default_pool_name`` is empty; ``invalid_name``: the
    configured name is not a valid pool name or escapes the prefix.
    """

    node: str
    outcome: ProvisionOutcome
    message: str
    name: str | None = None
    path: str | None = None
    pool: PoolRef | None = None
    other_pool: PoolRef | None = None
