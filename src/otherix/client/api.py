"""``ApiClient``: the user-facing REST calls.

Every call that answers a body returns it parsed into the wire model the
server renders (``otherix.models``), the lists a ``Page`` of them: ``login`` a
``TokenPair``; ``me``/``create_user``/``update_user`` a ``User``; the nodes
calls a ``Node`` (``node_action``), a ``NodeDetail`` or, for a role that sees
only summaries, a ``NodeSummary`` (``get_node``; ``list_nodes`` a
``Page[Node]`` or a ``Page[NodeSummary]``), a ``NodeDeleted`` (``delete_node``;
None from an older server, which answered 204), a ``NodeRejoinToken``, a
``DefaultPoolProvisioned``; the pool calls a ``StoragePool`` (create, update,
reinit, ``list_pools`` a ``Page``), and ``get_pool`` a ``StoragePool`` for a
UUID or a ``PoolConceptView`` for a name (the caller matches with
``isinstance``; ``get_pool_instance`` is the UUID case alone); ``scan_pool``
and ``delete_vm`` an ``AsyncTaskAccepted``; the task calls a ``Task``, the VM
calls a ``VM``; the default-pool calls the name of a ``DefaultPool``.

Two answers use client-side models (``otherix.client.answers``): a created
API token or join token, whose secret is ``None`` on an Idempotency-Key
replay (the server withholds it; its wire model requires it). Calls that
answer nothing (204) return ``None``.

Errors are the typed classes of ``otherix.client.errors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import quote

from pydantic import Field, TypeAdapter

from otherix.client.answers import ApiTokenIssued, JoinTokenIssued
from otherix.client.base import HttpClient
from otherix.client.errors import DefaultPoolMissing
from otherix.models.auth import ApiToken, TokenPair, User
from otherix.models.common import AsyncTaskAccepted, Page
from otherix.models.drift import PoolDriftView
from otherix.models.nodes import (
    DefaultPoolProvisioned,
    JoinToken,
    Node,
    NodeDeleted,
    NodeDetail,
    NodeRejoinToken,
    NodeSummary,
)
from otherix.models.pools import (
    DefaultPool,
    PoolCacheView,
    PoolCapacityHistory,
    PoolConceptView,
    PoolList,
    StoragePool,
)
from otherix.models.tasks import Task
from otherix.models.vms import VM, VmConsole

#: ``GET /v1/nodes``: full nodes for admins and operators, summaries for the
#: others. Left to right: a full node also parses as a summary (extras ignored).
_NODE_PAGE: TypeAdapter[Page[Node] | Page[NodeSummary]] = TypeAdapter(
    Annotated[Page[Node] | Page[NodeSummary], Field(union_mode="left_to_right")]
)
#: ``GET /v1/nodes/{name}``: the node with its events, or its summary.
_NODE_VIEW: TypeAdapter[NodeDetail | NodeSummary] = TypeAdapter(
    Annotated[NodeDetail | NodeSummary, Field(union_mode="left_to_right")]
)
#: ``GET /v1/storage-pools/{id}``: one instance for a UUID, the concept view for
#: a name (an instance has no ``instances``, a concept view no ``id``).
_POOL_VIEW: TypeAdapter[StoragePool | PoolConceptView] = TypeAdapter(
    Annotated[StoragePool | PoolConceptView, Field(union_mode="left_to_right")]
)


def _seg(value: str) -> str:
    return quote(value, safe="")


class ApiClient(HttpClient):
    # auth and users ---------------------------------------------------------
    def login(self, username: str, password: str) -> TokenPair:
        body = {"username": username, "password": password}
        return TokenPair.model_validate(self.json("POST", "/v1/auth/login", json=body))

    def logout(self, refresh_token: str | None = None, all_sessions: bool = False) -> None:
        body = {"refresh_token": refresh_token, "all_sessions": all_sessions}
        self.json("POST", "/v1/auth/logout", json=body)

    def me(self) -> User:
        return User.model_validate(self.json("GET", "/v1/users/me"))

    def list_users(self) -> Page[User]:
        return Page[User].model_validate(self.json("GET", "/v1/users"))

    def create_user(self, username: str, password: str, role: str) -> User:
        body = {"username": username, "password": password, "role": role}
        return User.model_validate(self.json("POST", "/v1/users", json=body))

    def update_user(self, user: str, body: dict[str, Any]) -> User:
        return User.model_validate(self.json("PATCH", f"/v1/users/{_seg(user)}", json=body))

    def delete_user(self, user: str) -> None:
        self.json("DELETE", f"/v1/users/{_seg(user)}")

    def list_tokens(self, user: str = "me", include_revoked: bool = False) -> Page[ApiToken]:
        params = {"include_revoked": "true" if include_revoked else None}
        data = self.json("GET", f"/v1/users/{_seg(user)}/api-tokens", params=params)
        return Page[ApiToken].model_validate(data)

    def create_token(
        self, name: str, expires_at: str | None = None, user: str = "me"
    ) -> ApiTokenIssued:
        """The new token with its secret (``token``), which is None on an
        Idempotency-Key replay (the secret is shown once)."""
        body: dict[str, Any] = {"name": name}
        if expires_at:
            body["expires_at"] = expires_at
        data = self.json("POST", f"/v1/users/{_seg(user)}/api-tokens", json=body)
        return ApiTokenIssued.model_validate(data)

    def revoke_token(self, token_id: str, user: str = "me") -> None:
        self.json("DELETE", f"/v1/users/{_seg(user)}/api-tokens/{_seg(token_id)}")

    # nodes ------------------------------------------------------------------
    def create_join_token(
        self, ttl_seconds: int | None, max_uses: int | None, description: str = ""
    ) -> JoinTokenIssued:
        """The new join token with its secret (``token``), which is None on an
        Idempotency-Key replay (the secret is shown once)."""
        body = {"ttl_seconds": ttl_seconds, "max_uses": max_uses, "description": description}
        return JoinTokenIssued.model_validate(self.json("POST", "/v1/nodes/join-tokens", json=body))

    def list_join_tokens(self) -> Page[JoinToken]:
        return Page[JoinToken].model_validate(self.json("GET", "/v1/nodes/join-tokens"))

    def delete_join_token(self, token_id: str) -> None:
        self.json("DELETE", f"/v1/nodes/join-tokens/{_seg(token_id)}")

    def list_nodes(self, **params: Any) -> Page[Node] | Page[NodeSummary]:
        """Full nodes for a role that reads them in full, else summaries."""
        return _NODE_PAGE.validate_python(self.json("GET", "/v1/nodes", params=params))

    def get_node(self, name: str) -> NodeDetail | NodeSummary:
        """The node with its events for admins and operators, else its summary."""
        return _NODE_VIEW.validate_python(self.json("GET", f"/v1/nodes/{_seg(name)}"))

    def node_action(self, name: str, action: str) -> Node:
        """``action``: ``cordon``, ``uncordon`` or ``readmit``; the node after it."""
        return Node.model_validate(self.json("POST", f"/v1/nodes/{_seg(name)}/{action}"))

    def reset_node_credentials(self, name: str, ttl_seconds: int | None = None) -> NodeRejoinToken:
        """A one-time re-enrol token for the node (``otxr_…``, shown once)."""
        body = {"ttl_seconds": ttl_seconds}
        data = self.json("POST", f"/v1/nodes/{_seg(name)}/reset-credentials", json=body)
        return NodeRejoinToken.model_validate(data)

    def delete_node(self, name: str) -> NodeDeleted | None:
        """The deleted node and its deleted pool instances (None from an older
        server, which answered 204 and kept the pools)."""
        data = self.json("DELETE", f"/v1/nodes/{_seg(name)}")
        return NodeDeleted.model_validate(data) if data else None

    def provision_default_pool(self, name: str) -> DefaultPoolProvisioned:
        data = self.json("POST", f"/v1/nodes/{_seg(name)}/provision-default-pool")
        return DefaultPoolProvisioned.model_validate(data)

    # storage pools ----------------------------------------------------------
    def list_pools(self, **params: Any) -> PoolList:
        return PoolList.model_validate(self.json("GET", "/v1/storage-pools", params=params))

    def get_pool(self, ref: str) -> StoragePool | PoolConceptView:
        """One instance (``StoragePool``) for a UUID, the concept view (every
        instance of the name, ``PoolConceptView``) for a name."""
        return _POOL_VIEW.validate_python(self.json("GET", f"/v1/storage-pools/{_seg(ref)}"))

    def get_pool_instance(self, pool_id: str) -> StoragePool:
        """One instance by its UUID (what ``get_pool`` answers for a UUID)."""
        return StoragePool.model_validate(self.json("GET", f"/v1/storage-pools/{_seg(pool_id)}"))

    def create_pool(
        self, body: dict[str, Any], idempotency_key: str | None = None, *, dry_run: bool = False
    ) -> StoragePool:
        """``dry_run``: the server checks everything and answers the would-be pool."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        params = {"dry_run": "true"} if dry_run else None
        data = self.json("POST", "/v1/storage-pools", json=body, headers=headers, params=params)
        return StoragePool.model_validate(data)

    def update_pool(self, ref: str, body: dict[str, Any]) -> StoragePool:
        data = self.json("PATCH", f"/v1/storage-pools/{_seg(ref)}", json=body)
        return StoragePool.model_validate(data)

    def delete_pool(self, ref: str) -> None:
        self.json("DELETE", f"/v1/storage-pools/{_seg(ref)}")

    def scan_pool(self, ref: str) -> AsyncTaskAccepted:
        data = self.json("POST", f"/v1/storage-pools/{_seg(ref)}/scan")
        return AsyncTaskAccepted.model_validate(data)

    def cordon_pool(self, ref: str, cordoned: bool = True) -> StoragePool:
        verb = "cordon" if cordoned else "uncordon"
        return StoragePool.model_validate(
            self.json("POST", f"/v1/storage-pools/{_seg(ref)}/{verb}")
        )

    def pool_capacity_history(
        self, ref: str, *, since: str | None = None, limit: int | None = None
    ) -> PoolCapacityHistory:
        """A pool instance's capacity samples and trend (issue 16.6)."""
        params: dict[str, str] = {}
        if since is not None:
            params["since"] = since
        if limit is not None:
            params["limit"] = str(limit)
        data = self.json(
            "GET", f"/v1/storage-pools/{_seg(ref)}/capacity-history", params=params or None
        )
        return PoolCapacityHistory.model_validate(data)

    def pool_cache(self, ref: str) -> PoolCacheView:
        data = self.json("GET", f"/v1/storage-pools/{_seg(ref)}/cache")
        return PoolCacheView.model_validate(data)

    def pin_image(self, ref: str, image: str, *, pinned: bool = True) -> PoolCacheView:
        method = "PUT" if pinned else "DELETE"
        data = self.json(method, f"/v1/storage-pools/{_seg(ref)}/cache/pins/{_seg(image)}")
        return PoolCacheView.model_validate(data)

    def prune_cache(self, ref: str, *, dry_run: bool = False) -> AsyncTaskAccepted:
        params = {"dry_run": "true"} if dry_run else None
        data = self.json("POST", f"/v1/storage-pools/{_seg(ref)}/cache/prune", params=params)
        return AsyncTaskAccepted.model_validate(data)

    def clear_quarantine(self, ref: str, images: Sequence[str] = ()) -> AsyncTaskAccepted:
        params = {"image": list(images)} if images else None
        path = f"/v1/storage-pools/{_seg(ref)}/cache/quarantine/clear"
        data = self.json("POST", path, params=params)
        return AsyncTaskAccepted.model_validate(data)

    def scrub_pool(self, ref: str) -> AsyncTaskAccepted:
        data = self.json("POST", f"/v1/storage-pools/{_seg(ref)}/scrub")
        return AsyncTaskAccepted.model_validate(data)

    # drift (issue 16): pool doctor, its purge, vm import
    def pool_drift(self, ref: str) -> PoolDriftView:
        data = self.json("GET", f"/v1/storage-pools/{_seg(ref)}/drift")
        return PoolDriftView.model_validate(data)

    def purge_drift(self, ref: str, paths: list[str]) -> AsyncTaskAccepted:
        data = self.json(
            "POST", f"/v1/storage-pools/{_seg(ref)}/drift/purge", json={"paths": paths}
        )
        return AsyncTaskAccepted.model_validate(data)

    def import_vm(self, body: dict[str, Any]) -> VM:
        return VM.model_validate(self.json("POST", "/v1/vms/import", json=body))

    def reinit_pool(self, ref: str) -> StoragePool:
        data = self.json("POST", f"/v1/storage-pools/{_seg(ref)}/reinit")
        return StoragePool.model_validate(data)

    # cluster ----------------------------------------------------------------
    def server_version(self) -> str:
        """The control plane's version (``GET /healthz``, public)."""
        data = self.json("GET", "/healthz")
        return str(data["version"])

    def get_default_pool(self) -> str | None:
        try:
            data = self.json("GET", "/v1/cluster/default-pool")
        except DefaultPoolMissing:
            return None
        return DefaultPool.model_validate(data).name

    def set_default_pool(self, name: str) -> str:
        data = self.json("PUT", "/v1/cluster/default-pool", json={"name": name})
        return DefaultPool.model_validate(data).name

    def unset_default_pool(self) -> None:
        self.json("DELETE", "/v1/cluster/default-pool")

    # VMs --------------------------------------------------------------------
    def list_vms(self, **params: Any) -> Page[VM]:
        return Page[VM].model_validate(self.json("GET", "/v1/vms", params=params))

    def create_vm(
        self, body: dict[str, Any], idempotency_key: str | None = None, *, dry_run: bool = False
    ) -> VM:
        """``dry_run``: the server checks everything and answers the would-be VM."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        params = {"dry_run": "true"} if dry_run else None
        data = self.json("POST", "/v1/vms", json=body, headers=headers, params=params)
        return VM.model_validate(data)

    def get_vm(self, name: str) -> VM:
        return VM.model_validate(self.json("GET", f"/v1/vms/{_seg(name)}"))

    def delete_vm(self, name: str, *, force: bool = False) -> AsyncTaskAccepted | None:
        """None when the VM is gone at once (204); else the accepted vm.delete task (202).
        ``force``: a VM whose QEMU runs is powered off first (else 409 ``vm_running``)."""
        params = {"force": "true"} if force else None
        body = self.json("DELETE", f"/v1/vms/{_seg(name)}", params=params)
        return AsyncTaskAccepted.model_validate(body) if body else None

    def power_vm(
        self, name: str, action: str, *, timeout_seconds: int | None = None
    ) -> AsyncTaskAccepted:
        """``action``: start, stop, restart or poweroff; the accepted ``vm.<action>`` task."""
        body = {"timeout_seconds": timeout_seconds} if timeout_seconds is not None else None
        data = self.json("POST", f"/v1/vms/{_seg(name)}/{_seg(action)}", json=body)
        return AsyncTaskAccepted.model_validate(data)

    def move_vm(self, name: str, pool: str, *, node: str | None = None) -> AsyncTaskAccepted:
        """Move the stopped VM's disk to ``pool`` (on its node, or on ``node``); the
        accepted ``vm.move`` task."""
        body: dict[str, str] = {"pool": pool}
        if node is not None:
            body["node"] = node
        data = self.json("POST", f"/v1/vms/{_seg(name)}/move", json=body)
        return AsyncTaskAccepted.model_validate(data)

    def vm_console(self, name: str) -> VmConsole:
        return VmConsole.model_validate(self.json("GET", f"/v1/vms/{_seg(name)}/console"))

    # tasks ------------------------------------------------------------------
    def get_task(self, task_id: str) -> Task:
        return Task.model_validate(self.json("GET", f"/v1/tasks/{_seg(task_id)}"))

    def list_tasks(self, **params: Any) -> Page[Task]:
        return Page[Task].model_validate(self.json("GET", "/v1/tasks", params=params))

    def cancel_task(self, task_id: str) -> Task:
        return Task.model_validate(self.json("POST", f"/v1/tasks/{_seg(task_id)}/cancel"))
