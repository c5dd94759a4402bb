"""Factories and assertions shared by the API suites (``tests/api``).

The server, role, node and heartbeat factories come from ``support.factories``
(re-exported here for the suites); this module adds the API suites' own.

Everything here drives the real server over HTTP (httpx) or, for rows the API
has no endpoint for yet (VMs and their disks), writes through the real store.
Works with the ``api`` / ``api_any_backend`` fixtures of ``tests/conftest.py``
and with :func:`serve`, which starts a server with custom settings.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from otherix.store import schema
from otherix.store.tx import sql
from otherix.store.users import store as qu
from support import rows
from support.factories import (
    ROLE_PASSWORD as ROLE_PASSWORD,
)
from support.factories import (
    ROLES as ROLES,
)
from support.factories import (
    Api,
    ApiLike,
    Node,
    heartbeat_body,
    http,
    with_roles,
)
from support.factories import (
    join_node as join_node,
)
from support.factories import (
    pool_report as pool_report,
)
from support.server import ADMIN as ADMIN
from support.server import ApiServer, make_settings

POOLS = "/var/lib/otherix/pools/"
DUPLICATE = "another storage pool with this name already exists on the target node"
IN_USE = "storage pool is in use by virtual machine disks; remove or migrate them first"


@contextmanager
def serve(
    data_dir: Path,
    db_url: str | None = None,
    *,
    run_workers: bool = True,
    roles: bool = True,
    **overrides: Any,
) -> Iterator[Api]:
    """A real server with ``overrides`` (dotted config keys) applied."""
    server = ApiServer(make_settings(data_dir, db_url, **overrides), run_workers=run_workers)
    server.start()
    try:
        yield with_roles(server) if roles else Api(server, {})
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


def heartbeat(
    api: ApiLike, node: Node, pools: list[dict[str, Any]] | None = None, **extra: Any
) -> httpx.Response:
    """One heartbeat as the node (its own credential); ``pools`` are reports."""
    with http(api, token=node.credential) as c:
        return c.post(f"/v1/nodes/{node.name}/heartbeat", json=heartbeat_body(pools, **extra))


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
    return row.id


def insert_vm(api: ApiLike, owner: str = "admin", name: str | None = None) -> str:
    """A ``vms`` row owned by user ``owner``, written through the store."""
    return rows.insert_vm(api.server.deps.db, user_id(api, owner), name)


def insert_disk(
    api: ApiLike, vm_id: str, pool_id: str, size_gib: int = 1, created_at: datetime | None = None
) -> str:
    """A ``vm_disks`` row on ``pool_id`` (raises the store's FK error if the pool is gone)."""
    return rows.insert_disk(api.server.deps.db, vm_id, pool_id, size_gib, at=created_at)


def delete_disk(api: ApiLike, disk_id: str) -> None:
    with api.server.deps.db.write() as conn:
        sql(conn).execute(schema.vm_disks.delete().where(schema.vm_disks.c.id == disk_id))


def random_uuid() -> str:
    return str(uuid.uuid4())
