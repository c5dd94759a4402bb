"""``ApiClient``: the user-facing REST calls.

A call whose answer has one wire model returns it parsed into that model
(``otherix.models``): ``login`` a ``TokenPair``, ``me``/``create_user``/
``update_user`` a ``User``, the lists of users, API tokens and join tokens a
``Page`` of them, ``reset_node_credentials`` a ``NodeRejoinToken``,
``provision_default_pool`` a ``DefaultPoolProvisioned``, ``scan_pool`` and
``delete_vm`` an ``AsyncTaskAccepted``, the task calls a ``Task`` (a
``Page[Task]``), the VM calls a ``VM`` (a ``Page[VM]``), the default-pool
calls the name of a ``DefaultPool``. The others still return the decoded
JSON: their answers have several shapes (a concept view or an instance,
``view=`` variants), or a replay may lack a field the model requires (a
token's secret), or they are not converted yet.

Errors are the typed classes of ``otherix.client.errors``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from otherix.client.base import HttpClient
from otherix.client.errors import DefaultPoolMissing
from otherix.models.auth import ApiToken, TokenPair, User
from otherix.models.common import AsyncTaskAccepted, Page
from otherix.models.nodes import DefaultPoolProvisioned, JoinToken, NodeRejoinToken
from otherix.models.pools import DefaultPool
from otherix.models.tasks import Task
from otherix.models.vms import VM


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
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name}
        if expires_at:
            body["expires_at"] = expires_at
        return dict(self.json("POST", f"/v1/users/{_seg(user)}/api-tokens", json=body))

    def revoke_token(self, token_id: str, user: str = "me") -> None:
        self.json("DELETE", f"/v1/users/{_seg(user)}/api-tokens/{_seg(token_id)}")

    # nodes ------------------------------------------------------------------
    def create_join_token(
        self, ttl_seconds: int | None, max_uses: int | None, description: str = ""
    ) -> dict[str, Any]:
        body = {"ttl_seconds": ttl_seconds, "max_uses": max_uses, "description": description}
        return dict(self.json("POST", "/v1/nodes/join-tokens", json=body))

    def list_join_tokens(self) -> Page[JoinToken]:
        return Page[JoinToken].model_validate(self.json("GET", "/v1/nodes/join-tokens"))

    def delete_join_token(self, token_id: str) -> None:
        self.json("DELETE", f"/v1/nodes/join-tokens/{_seg(token_id)}")

    def list_nodes(self, **params: Any) -> dict[str, Any]:
        return dict(self.json("GET", "/v1/nodes", params=params))

    def get_node(self, name: str) -> dict[str, Any]:
        return dict(self.json("GET", f"/v1/nodes/{_seg(name)}"))

    def node_action(self, name: str, action: str) -> dict[str, Any]:
        return dict(self.json("POST", f"/v1/nodes/{_seg(name)}/{action}"))

    def reset_node_credentials(self, name: str, ttl_seconds: int | None = None) -> NodeRejoinToken:
        """A one-time re-enrol token for the node (``otxr_…``, shown once)."""
        body = {"ttl_seconds": ttl_seconds}
        data = self.json("POST", f"/v1/nodes/{_seg(name)}/reset-credentials", json=body)
        return NodeRejoinToken.model_validate(data)

    def delete_node(self, name: str) -> dict[str, Any]:
        """The deleted node and its deleted pool instances (``{}`` from an older
        server, which answered 204 and kept the pools)."""
        return dict(self.json("DELETE", f"/v1/nodes/{_seg(name)}") or {})

    def provision_default_pool(self, name: str) -> DefaultPoolProvisioned:
        data = self.json("POST", f"/v1/nodes/{_seg(name)}/provision-default-pool")
        return DefaultPoolProvisioned.model_validate(data)

    # storage pools ----------------------------------------------------------
    def list_pools(self, **params: Any) -> dict[str, Any]:
        return dict(self.json("GET", "/v1/storage-pools", params=params))

    def get_pool(self, ref: str) -> dict[str, Any]:
        return dict(self.json("GET", f"/v1/storage-pools/{_seg(ref)}"))

    def create_pool(
        self, body: dict[str, Any], idempotency_key: str | None = None, *, dry_run: bool = False
    ) -> dict[str, Any]:
        """``dry_run``: the server checks everything and answers the would-be pool."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        params = {"dry_run": "true"} if dry_run else None
        return dict(
            self.json("POST", "/v1/storage-pools", json=body, headers=headers, params=params)
        )

    def update_pool(self, ref: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.json("PATCH", f"/v1/storage-pools/{_seg(ref)}", json=body))

    def delete_pool(self, ref: str) -> None:
        self.json("DELETE", f"/v1/storage-pools/{_seg(ref)}")

    def scan_pool(self, ref: str) -> AsyncTaskAccepted:
        data = self.json("POST", f"/v1/storage-pools/{_seg(ref)}/scan")
        return AsyncTaskAccepted.model_validate(data)

    def reinit_pool(self, ref: str) -> dict[str, Any]:
        return dict(self.json("POST", f"/v1/storage-pools/{_seg(ref)}/reinit"))

    # cluster ----------------------------------------------------------------
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

    def delete_vm(self, name: str) -> AsyncTaskAccepted | None:
        """None when the VM is gone at once (204); else the accepted vm.delete task (202)."""
        body = self.json("DELETE", f"/v1/vms/{_seg(name)}")
        return AsyncTaskAccepted.model_validate(body) if body else None

    # tasks ------------------------------------------------------------------
    def get_task(self, task_id: str) -> Task:
        return Task.model_validate(self.json("GET", f"/v1/tasks/{_seg(task_id)}"))

    def list_tasks(self, **params: Any) -> Page[Task]:
        return Page[Task].model_validate(self.json("GET", "/v1/tasks", params=params))

    def cancel_task(self, task_id: str) -> Task:
        return Task.model_validate(self.json("POST", f"/v1/tasks/{_seg(task_id)}/cancel"))
