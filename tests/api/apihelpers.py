"""Factories and assertions shared by the API suites (``tests/api``).

Everything here drives the real server over HTTP (httpx) or, for rows the API
has no endpoint for yet (VMs and their disks), writes through the real store.
Works with the ``api`` / ``api_any_backend`` fixtures of ``tests/conftest.py``
and with :func:`serve`, which starts a server with custom settings.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx

from otherix.rbac import Role
from otherix.store import schema
from otherix.store import users as qu
from otherix.store.tx import sql
from support.server import ADMIN, ApiServer, make_settings

ROLES = ("admin", "operator", "developer", "viewer")
ROLE_PASSWORD = "role-password-1"
POOLS = "/var/lib/otherix/pools/"
DUPLICATE = "another storage pool with this name already exists on the target node"
IN_USE = "storage pool is in use by virtual machine disks; remove or migrate them first"


class ApiLike(Protocol):
    server: ApiServer
    tokens: dict[str, str]

    def client(self, role: str | None = "admin") -> httpx.Client: ...


@dataclass
class Served:
    """Same shape as the ``api`` fixture's object."""

    server: ApiServer
    tokens: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, role: str | None = "admin") -> httpx.Client:
        return http(self, role)


def http(api: ApiLike, role: str | None = "admin", token: str | None = None) -> httpx.Client:
    """A client for ``role`` (or a raw bearer ``token``; neither: anonymous).

    Plain HTTP on loopback, so no TLS context is built (that costs ~30 ms a client).
    """
    bearer = token or (api.tokens[role] if role else None)
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return httpx.Client(base_url=api.server.url, headers=headers, timeout=30, verify=False)


def with_roles(server: ApiServer) -> Served:
    from otherix.api.services.users import ensure_bootstrap_admin

    ensure_bootstrap_admin(server.deps, *ADMIN)
    tokens = {"admin": server.login(*ADMIN)}
    for role in ROLES[1:]:
        server.add_user(role, ROLE_PASSWORD, Role(role))
        tokens[role] = server.login(role, ROLE_PASSWORD)
    return Served(server, tokens)


@contextmanager
def serve(
    data_dir: Path,
    db_url: str | None = None,
    *,
    run_workers: bool = True,
    roles: bool = True,
    **overrides: Any,
) -> Iterator[Served]:
    """A real server with ``overrides`` (dotted config keys) applied."""
    server = ApiServer(make_settings(data_dir, db_url, **overrides), run_workers=run_workers)
    server.start()
    try:
        yield with_roles(server) if roles else Served(server, {})
    finally:
        server.stop()


# assertions ------------------------------------------------------------------

_MISSING = object()


def assert_error(
    r: httpx.Response,
    status: int,
    code: str,
    message: str | None = None,
    details: Any = _MISSING,
) -> dict[str, Any]:
    """The envelope ``{"error": {code, message, details?}}`` with these values."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert err["code"] == code, err
    assert isinstance(err["message"], str), err
    assert err["message"], err
    if message is not None:
        assert err["message"] == message, err
    if details is None:
        assert "details" not in err, err
    elif details is not _MISSING:
        assert err.get("details") == details, err
    return err


# nodes -----------------------------------------------------------------------


@dataclass
class Node:
    name: str
    id: str
    credential: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}


def join_node(api: ApiLike, name: str | None = None) -> Node:
    """Enrol a node through the real join flow (join token, then join)."""
    name = name or f"node-{uuid.uuid4().hex[:8]}"
    with http(api) as c:
        r = c.post("/v1/nodes/join-tokens", json={})
        assert r.status_code == 201, r.text
        token = r.json()["token"]
    with http(api, None) as anon:
        r = anon.post("/v1/nodes/join", json={"join_token": token, "name": name})
    assert r.status_code == 201, r.text
    body = r.json()
    return Node(body["name"], body["node_id"], body["credential"])


def pool_report(
    name: str,
    status: str = "ready",
    *,
    capacity: int | None = 1000,
    available: int | None = 500,
    error: str | None = None,
) -> dict[str, Any]:
    rep: dict[str, Any] = {"name": name, "reconciliation_status": status}
    if capacity is not None:
        rep["capacity_bytes"] = capacity
    if available is not None:
        rep["available_bytes"] = available
    if error is not None:
        rep["reconciliation_error"] = error
    return rep


def heartbeat(
    api: ApiLike, node: Node, pools: list[dict[str, Any]] | None = None, **extra: Any
) -> httpx.Response:
    """One heartbeat as the node (its own credential); ``pools`` are reports."""
    body: dict[str, Any] = {
        "agent_version": "t",
        "architecture": "amd64",
        "revision": 0,
        "digest": hashlib.sha256(json.dumps(pools, sort_keys=True).encode()).hexdigest(),
        "pools": pools or [],
        **extra,
    }
    with http(api, token=node.credential) as c:
        return c.post(f"/v1/nodes/{node.name}/heartbeat", json=body)


def ready_node(api: ApiLike, name: str | None = None) -> Node:
    """A joined node that has heartbeated once (status ``ready``)."""
    node = join_node(api, name)
    r = heartbeat(api, node)
    assert r.status_code == 200, r.text
    return node


# pools -----------------------------------------------------------------------


def pool_body(node: Node | str, name: str, path: str | None = None, **extra: Any) -> dict[str, Any]:
    node_name = node if isinstance(node, str) else node.name
    return {
        "node": node_name,
        "name": name,
        "type": "local_dir",
        "path": path if path is not None else POOLS + name,
        **extra,
    }


def create_pool(
    api: ApiLike, node: Node | str, name: str, path: str | None = None, **extra: Any
) -> dict[str, Any]:
    with http(api) as c:
        r = c.post("/v1/storage-pools", json=pool_body(node, name, path, **extra))
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def get_pool(api: ApiLike, ref: str, role: str = "admin") -> httpx.Response:
    with http(api, role) as c:
        return c.get(f"/v1/storage-pools/{ref}")


def list_all(api: ApiLike, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    with http(api, "viewer") as c:
        r = c.get("/v1/storage-pools", params={"limit": 200, **(params or {})})
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


# store rows the API has no endpoint for ---------------------------------------------


def user_id(api: ApiLike, username: str) -> str:
    with api.server.deps.db.read() as conn:
        row = qu.get_user_by_name(conn, username)
    assert row is not None
    return str(row["id"])


def insert_vm(api: ApiLike, owner: str = "admin", name: str | None = None) -> str:
    """A ``vms`` row owned by user ``owner``, written through the store."""
    vm_id = str(uuid.uuid4())
    name = name or f"vm-{vm_id[:8]}"
    now = datetime.now(UTC)
    owner_id = user_id(api, owner)
    with api.server.deps.db.write() as conn:
        sql(conn).execute(
            schema.vms.insert().values(
                id=vm_id,
                name=name,
                name_lower=name.lower(),
                owner_id=owner_id,
                spec={},
                phase="pending",
                created_at=now,
                updated_at=now,
            )
        )
    return vm_id


def insert_disk(
    api: ApiLike, vm_id: str, pool_id: str, size_gib: int = 1, created_at: datetime | None = None
) -> str:
    """A ``vm_disks`` row on ``pool_id`` (raises the store's FK error if the pool is gone)."""
    disk_id = str(uuid.uuid4())
    now = created_at or datetime.now(UTC)
    with api.server.deps.db.write() as conn:
        sql(conn).execute(
            schema.vm_disks.insert().values(
                id=disk_id,
                vm_id=vm_id,
                storage_pool_id=pool_id,
                size_gib=size_gib,
                format="qcow2",
                created_at=now,
                updated_at=now,
            )
        )
    return disk_id


def delete_disk(api: ApiLike, disk_id: str) -> None:
    with api.server.deps.db.write() as conn:
        sql(conn).execute(schema.vm_disks.delete().where(schema.vm_disks.c.id == disk_id))


def random_uuid() -> str:
    return str(uuid.uuid4())
