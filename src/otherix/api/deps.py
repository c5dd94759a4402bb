"""The dependency bundle every route and service receives, and the auth guards.

``Deps`` is built once by the composition root (``main.py``) or by a test,
and stored on ``app.state.deps``. Routes declare what they need with
``Depends(require(Permission.X))`` (a user with that permission),
``Depends(public)`` (anonymous) or ``Depends(agent_node)`` (a node
credential). The RBAC walk test reads these markers from every route.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from otherix.api.clock import Clock
from otherix.api.loginguard import LoginGuard
from otherix.api.settings import ApiSettings
from otherix.api.watch import WatchHub
from otherix.errors import PermissionDenied, Unauthenticated
from otherix.rbac import Permission, Role, Scope, scope_for
from otherix.store import Database


@dataclass
class HeartbeatBuffer:
    """Write-behind buffer of last-seen times, flushed by a worker every second."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: dict[str, Any] = field(default_factory=dict)

    def record(self, node_id: str, at: Any) -> None:
        with self.lock:
            self.seen[node_id] = at

    def drain(self) -> list[tuple[str, Any]]:
        with self.lock:
            items = list(self.seen.items())
            self.seen.clear()
        return items


@dataclass
class Deps:
    settings: ApiSettings
    db: Database
    clock: Clock
    jwt_secret: str
    #: The cluster's identity (``cluster_settings.cluster_id``), read at start.
    cluster_id: str = ""
    hub: WatchHub = field(default_factory=WatchHub)
    heartbeats: HeartbeatBuffer = field(default_factory=HeartbeatBuffer)
    #: failed-login windows and the bounded password-hash queue (``api/loginguard.py``)
    logins: LoginGuard = field(init=False)
    #: node_id -> (desired revision, desired state); valid while the revision is
    #: unchanged, and every change bumps the revision in the store.
    desired_cache: dict[str, tuple[int, Any]] = field(default_factory=dict)
    desired_json_cache: dict[str, tuple[int, bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        auth = self.settings.auth
        self.logins = LoginGuard(
            per_user_client=auth.login_rate_per_minute,
            per_client=auth.login_rate_per_client_per_minute,
            per_user=auth.login_rate_per_user_per_minute,
            concurrency=auth.password_hash_concurrency,
            queue=auth.password_hash_queue,
            in_flight_per_client=auth.login_in_flight_per_client,
        )


@dataclass(frozen=True)
class Principal:
    user_id: str
    username: str
    role: Role
    via: str  # "jwt" | "api_token"
    #: the refresh family of a JWT session (claim ``sid``); None for API tokens
    session_id: str | None = None

    def scope(self, permission: Permission) -> Scope:
        return scope_for(self.role, permission)


@dataclass(frozen=True)
class AgentIdentity:
    node_id: str
    name: str


def deps_of(request: Request) -> Deps:
    deps: Deps = request.app.state.deps
    return deps


async def get_deps(request: Request) -> Deps:  # async: no thread hop per request
    return deps_of(request)


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("missing or malformed Authorization: Bearer header")
    return token.strip()


def require(permission: Permission) -> Callable[[Request], Principal]:
    """A dependency: the caller must be a user whose role has ``permission``."""

    def guard(request: Request) -> Principal:
        from otherix.api.services import auth  # late: services import deps

        principal = auth.authenticate(deps_of(request), bearer(request))
        if principal.scope(permission) is Scope.NONE:
            raise PermissionDenied(
                f"role {principal.role} lacks {permission}", {"required": str(permission)}
            )
        request.state.principal = principal
        return principal

    guard.permission = permission  # type: ignore[attr-defined]
    return guard


async def public() -> None:
    """Marker dependency: the route needs no credentials."""


@dataclass(frozen=True)
class AgentCredential:
    """A node credential as presented; services verify it with one store read."""

    token: str


async def agent_node(request: Request) -> AgentCredential:
    """A dependency (and the RBAC-walk marker): the caller presents a node
    credential. Verification happens in the service, inside the one worker
    thread hop of the request, so the heartbeat hot path reads the store once."""
    return AgentCredential(bearer(request))
