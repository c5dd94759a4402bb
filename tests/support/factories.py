"""The one set of test factories: a served control plane with one user per role,
enrolled nodes, and the bodies a node's agent sends.

Used by every suite that drives the real server (``tests/conftest.py``'s
``api`` fixtures, ``tests/api``, ``tests/cli``, ``tests/vms``,
``tests/security``); the suites' helper modules import from here and add only
what is particular to them (assertions, CLI runners, VM bodies). Rows the API
has no endpoint for are written in ``support.rows``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from otherix.rbac import Role
from support.server import ADMIN, ApiServer

__all__ = [
    "DIGEST",
    "ROLES",
    "ROLE_PASSWORD",
    "Api",
    "ApiLike",
    "Node",
    "heartbeat_body",
    "http",
    "join_node",
    "pool_report",
    "with_roles",
]

ROLES = ("admin", "operator", "developer", "viewer")
ROLE_PASSWORD = "role-password-1"
#: A fixed agent digest, for suites that never compare the reported digest.
DIGEST = "0" * 64


class ApiLike(Protocol):
    server: ApiServer
    tokens: dict[str, str]

    def client(self, role: str | None = "admin") -> httpx.Client: ...


def http(api: ApiLike, role: str | None = "admin", token: str | None = None) -> httpx.Client:
    """A client for ``role`` (or a raw bearer ``token``; neither: anonymous).

    Plain HTTP on loopback, so no TLS context is built (that costs ~30 ms a client).
    """
    bearer = token or (api.tokens[role] if role else None)
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return httpx.Client(base_url=api.server.url, headers=headers, timeout=30, verify=False)


@dataclass
class Api:
    """A running server and a bearer token per role (the ``api`` fixture's object)."""

    server: ApiServer
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, role: str | None = "admin") -> httpx.Client:
        return http(self, role)


def with_roles(server: ApiServer, roles: tuple[str, ...] = ROLES) -> Api:
    """Log in the bootstrap admin and add one user per other role in ``roles``."""

    server.services.user_service.ensure_bootstrap_admin(*ADMIN)
    tokens = {"admin": server.login(*ADMIN)}
    for role in roles:
        if role != "admin":
            server.add_user(role, ROLE_PASSWORD, Role(role))
            tokens[role] = server.login(role, ROLE_PASSWORD)
    return Api(server, tokens)


@dataclass(frozen=True)
class Node:
    """An enrolled node: its name, id and credential."""

    name: str
    id: str
    credential: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}


def join_node(api: ApiLike, name: str | None = None) -> Node:
    """Enrol a node through the real join flow (it stays ``pending`` until a heartbeat)."""
    name = name or f"node-{uuid.uuid4().hex[:8]}"
    with api.client("admin") as c:
        r = c.post("/v1/nodes/join-tokens", json={})
        assert r.status_code == 201, r.text
        token = r.json()["token"]
    with api.client(None) as anon:
        r = anon.post("/v1/nodes/join", json={"join_token": token, "name": name})
    assert r.status_code == 201, r.text
    body = r.json()
    return Node(body["name"], body["node_id"], body["credential"])


def heartbeat_body(
    pools: list[dict[str, Any]] | None = None,
    *,
    architecture: str = "amd64",
    digest: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A node heartbeat; ``digest`` defaults to the sha256 of the pool reports."""
    pools = pools or []
    if digest is None:
        digest = hashlib.sha256(json.dumps(pools, sort_keys=True).encode()).hexdigest()
    return {
        "agent_version": "t",
        "architecture": architecture,
        "revision": 0,
        "digest": digest,
        "pools": pools,
        **extra,
    }


def pool_report(
    name: str,
    status: str = "ready",
    error: str | None = None,
    *,
    capacity: int | None = 1000,
    available: int | None = 500,
    **extra: Any,
) -> dict[str, Any]:
    """One pool's entry in a heartbeat; fields given as None are left out.

    Suites that want other default sizes bind them once (``functools.partial``).
    """
    rep: dict[str, Any] = {"name": name, "reconciliation_status": status, **extra}
    if capacity is not None:
        rep["capacity_bytes"] = capacity
    if available is not None:
        rep["available_bytes"] = available
    if error is not None:
        rep["reconciliation_error"] = error
    return rep
