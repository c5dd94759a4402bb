"""Roles, permissions and the literal (role, permission) -> scope table.

Every row of docs/rbac.md is spelled out below; nothing is derived. The
API's route guard (``otherix.api.deps``) asks :func:`scope_for`; invariant
tests in ``tests/unit/test_rbac.py`` check the table's shape (every role has
every permission, admin has the widest scope everywhere, viewer writes nothing).

Scopes:
- ``any``: every resource of the kind; for non-owned kinds this is plain "yes".
- ``own``: only resources the caller owns (VMs, snapshots, tasks, API tokens).
  Someone else's resource answers 404, never 403, so existence does not leak.
- ``full`` / ``summary``: node reads (admins and operators see the full node).
- ``none``: denied (403 ``permission_denied`` with ``details.required``).
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    DEVELOPER = "developer"
    VIEWER = "viewer"


class Scope(StrEnum):
    ANY = "any"
    OWN = "own"
    FULL = "full"
    SUMMARY = "summary"
    NONE = "none"


class Permission(StrEnum):
    VM_READ = "vm:read"
    VM_CREATE = "vm:create"
    VM_UPDATE = "vm:update"
    VM_DELETE = "vm:delete"
    STORAGE_POOL_READ = "storage_pool:read"
    STORAGE_POOL_MANAGE = "storage_pool:manage"
    STORAGE_POOL_SCAN = "storage_pool:scan"
    NODE_READ = "node:read"
    NODE_MAINTENANCE = "node:maintenance"
    NODE_MANAGE = "node:manage"
    USER_READ = "user:read"
    USER_MANAGE = "user:manage"
    API_TOKEN_MANAGE = "api_token:manage"
    TASK_READ = "task:read"
    TASK_CANCEL = "task:cancel"
    CLUSTER_READ = "cluster:read"
    CLUSTER_MANAGE = "cluster:manage"


_A, _O, _F, _S, _N = Scope.ANY, Scope.OWN, Scope.FULL, Scope.SUMMARY, Scope.NONE
P = Permission

#: (admin, operator, developer, viewer) for each permission, as in docs/rbac.md.
_ROWS: dict[Permission, tuple[Scope, Scope, Scope, Scope]] = {
    P.VM_READ: (_A, _A, _A, _A),
    P.VM_CREATE: (_A, _A, _A, _N),
    P.VM_UPDATE: (_A, _A, _O, _N),
    P.VM_DELETE: (_A, _A, _O, _N),
    P.STORAGE_POOL_READ: (_A, _A, _A, _A),
    P.STORAGE_POOL_MANAGE: (_A, _N, _N, _N),
    P.STORAGE_POOL_SCAN: (_A, _A, _N, _N),
    P.NODE_READ: (_F, _F, _S, _S),
    P.NODE_MAINTENANCE: (_A, _A, _N, _N),
    P.NODE_MANAGE: (_A, _N, _N, _N),
    P.USER_READ: (_A, _A, _N, _N),
    P.USER_MANAGE: (_A, _N, _N, _N),
    P.API_TOKEN_MANAGE: (_A, _O, _O, _O),
    P.TASK_READ: (_A, _A, _O, _O),
    P.TASK_CANCEL: (_A, _A, _O, _N),
    P.CLUSTER_READ: (_A, _A, _A, _A),
    P.CLUSTER_MANAGE: (_A, _N, _N, _N),
}

_ROLE_INDEX = {Role.ADMIN: 0, Role.OPERATOR: 1, Role.DEVELOPER: 2, Role.VIEWER: 3}

TABLE: dict[tuple[Role, Permission], Scope] = {
    (role, perm): row[idx] for perm, row in _ROWS.items() for role, idx in _ROLE_INDEX.items()
}


def scope_for(role: Role, permission: Permission) -> Scope:
    """The scope ``role`` has for ``permission`` (``none`` when denied)."""
    return TABLE[(role, permission)]


def allowed(role: Role, permission: Permission) -> bool:
    return scope_for(role, permission) is not Scope.NONE
