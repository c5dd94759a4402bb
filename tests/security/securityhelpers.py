"""Helpers for the security suite: the live operations, and nodes enrolled the real way."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from support.factories import Node as Node
from support.factories import heartbeat_body as heartbeat_body

#: operations that take no credentials (contract: login, refresh, node join, health)
PUBLIC = frozenset({"healthz", "readyz", "login", "refresh", "joinNode", "rejoinNode"})
METHODS = ("get", "put", "post", "patch", "delete")


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str


def operations(url: str) -> list[Operation]:
    """Every operation of the server's live ``/openapi.json``."""
    schema = httpx.get(f"{url}/openapi.json").json()
    return [
        Operation(method.upper(), path, op["operationId"])
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def fill(path: str, **known: str) -> str:
    """The path with each ``{param}`` replaced (``known`` values, else a fresh UUID)."""
    return re.sub(r"\{(\w+)\}", lambda m: known.get(m.group(1), str(uuid.uuid4())), path)


#: valid bodies, so that a refusal is about the credential and not the body
BODIES: dict[str, dict[str, Any]] = {
    "nodeHeartbeat": heartbeat_body([]),
    "nodeTaskUpdate": {"status": "running"},
}


def call(client: httpx.Client, op: Operation, path: str) -> httpx.Response:
    kwargs: dict[str, Any] = {}
    if op.method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = BODIES.get(op.operation_id, {})
    if op.operation_id == "nodeWatch":
        kwargs["params"] = {"revision": 0, "timeout": 0}
    return client.request(op.method, path, **kwargs)


def join_node(url: str, admin_token: str, name: str) -> Node:
    """Enrol a node through the real join flow and heartbeat once (status ready)."""
    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post(
            "/v1/nodes/join-tokens", json={}, headers={"Authorization": f"Bearer {admin_token}"}
        )
        assert r.status_code == 201, r.text
        r = c.post("/v1/nodes/join", json={"join_token": r.json()["token"], "name": name})
        assert r.status_code == 201, r.text
        node = Node(name, r.json()["node_id"], r.json()["credential"])
        r = c.post(f"/v1/nodes/{name}/heartbeat", json=heartbeat_body([]), headers=node.auth)
        assert r.status_code == 200, r.text
    return node
