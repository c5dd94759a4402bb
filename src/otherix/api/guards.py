"""The route guards: who may call a route, read by the RBAC walk test.

Routes declare it with ``Depends(require(Permission.X))`` (a user with that
permission), ``Depends(public)`` (anonymous) or ``Depends(agent_node)`` (a
node credential). ``tests/api/test_api_rbac.py`` and ``api/openapi.py`` read
these markers from every route.

The guards sit above the services (``require`` calls
``AuthService.authenticate`` and ``idempotency.claim``); nothing below
imports this module (an import-linter ``layers`` contract keeps it so).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Request

from otherix.api import idempotency
from otherix.api.deps import Principal
from otherix.api.provide import services_of
from otherix.errors import PermissionDenied, Unauthenticated
from otherix.rbac import Permission, Scope


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("missing or malformed Authorization: Bearer header")
    return token.strip()


def require(permission: Permission) -> Callable[[Request], Principal]:
    """A dependency: the caller must be a user whose role has ``permission``.

    Only then, authenticated and authorised, is the request's Idempotency-Key
    claimed or looked up, for this user (``idempotency.claim``): a key never
    answers a caller who could not make the request itself."""

    def guard(request: Request) -> Principal:
        principal = services_of(request).auth_service.authenticate(bearer(request))
        if principal.scope(permission) is Scope.NONE:
            raise PermissionDenied(
                f"role {principal.role} lacks {permission}", {"required": str(permission)}
            )
        request.state.principal = principal
        idempotency.claim(request, principal.user_id)
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
