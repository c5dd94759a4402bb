"""RBAC: invariants of the literal table, the doc that mirrors it, and the walk
over every route of the real app (guard markers, then live calls per role)."""

from __future__ import annotations

import contextlib
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from apihelpers import ROLES, assert_error, http
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from otherix.api import guards
from otherix.api.app import create_app, iter_routes
from otherix.api.bootstrap import open_deps
from otherix.rbac import TABLE, Permission, Role, Scope, allowed, scope_for
from support.server import make_settings

pytestmark = pytest.mark.security

DOC = Path(__file__).resolve().parents[2] / "docs" / "rbac.md"
BEGIN = "<!-- BEGIN GENERATED: rbac-table"
END = "<!-- END GENERATED: rbac-table -->"
#: how wide a scope is; admin must be at least as wide as every other role
WIDTH = {Scope.NONE: 0, Scope.OWN: 1, Scope.SUMMARY: 1, Scope.ANY: 2, Scope.FULL: 2}
WRITE_VERBS = ("create", "update", "delete", "manage", "maintenance", "cancel", "scan")


def render_table() -> str:
    lines = [
        "| Permission | " + " | ".join(str(r) for r in Role) + " |",
        "|---|" + "---|" * len(Role),
    ]
    for perm in Permission:
        cells = " | ".join(str(TABLE[(role, perm)]) for role in Role)
        lines.append(f"| `{perm}` | {cells} |")
    return "\n".join(lines)


# the table ---------------------------------------------------------------------------


def test_every_role_has_every_permission():
    assert set(TABLE) == {(r, p) for r in Role for p in Permission}
    assert len(TABLE) == len(Role) * len(Permission)


def test_admin_is_at_least_as_wide_as_every_role():
    for perm in Permission:
        admin = WIDTH[scope_for(Role.ADMIN, perm)]
        for role in Role:
            assert admin >= WIDTH[scope_for(role, perm)], (role, perm)
        assert allowed(Role.ADMIN, perm), perm


def test_roles_are_ordered_admin_operator_developer_viewer():
    order = list(Role)
    for perm in Permission:
        widths = [WIDTH[scope_for(r, perm)] for r in order]
        assert widths == sorted(widths, reverse=True), (perm, widths)


#: a viewer's only write: its own credentials (contract section 4, api_token:manage own)
SELF_SERVICE = {Permission.API_TOKEN_MANAGE}


def test_viewer_has_no_write():
    for perm in Permission:
        if perm in SELF_SERVICE:
            assert scope_for(Role.VIEWER, perm) is Scope.OWN, perm
        elif perm.split(":")[1] in WRITE_VERBS:
            assert scope_for(Role.VIEWER, perm) is Scope.NONE, perm
        else:
            assert perm.endswith(":read"), f"classify {perm} as read or write"


def test_api_token_manage_is_own_for_non_admins():
    for role in (Role.OPERATOR, Role.DEVELOPER, Role.VIEWER):
        assert scope_for(role, Permission.API_TOKEN_MANAGE) is Scope.OWN


def test_pool_rows_match_the_contract():
    rows = {
        Permission.STORAGE_POOL_READ: ("any", "any", "any", "any"),
        Permission.STORAGE_POOL_MANAGE: ("any", "none", "none", "none"),
        Permission.STORAGE_POOL_SCAN: ("any", "any", "none", "none"),
        Permission.CLUSTER_READ: ("any", "any", "any", "any"),
        Permission.CLUSTER_MANAGE: ("any", "none", "none", "none"),
    }
    for perm, expected in rows.items():
        assert tuple(str(scope_for(r, perm)) for r in Role) == expected, perm


def test_doc_table_matches_the_code_table():
    text = DOC.read_text(encoding="utf-8")
    assert BEGIN in text, f"{DOC} lost its generated-table markers"
    assert END in text, f"{DOC} lost its generated-table markers"
    block = text.split(BEGIN, 1)[1].split("-->", 1)[1].split(END, 1)[0].strip()
    assert block == render_table(), (
        "docs/rbac.md is out of date with otherix.rbac.TABLE; replace the generated block with:\n"
        + render_table()
    )


def test_doc_states_the_404_rule():
    text = DOC.read_text(encoding="utf-8")
    assert re.search(r"404.*never 403", text, re.S)
    assert "details.required" in text


# the walk: every route carries a guard -------------------------------------------------


def _markers(dependant: Dependant) -> list[Any]:
    found: list[Any] = []
    for dep in dependant.dependencies:
        call = dep.call
        if call is not None and hasattr(call, "permission"):
            found.append(call.permission)
        elif call is guards.public:
            found.append("public")
        elif call is guards.agent_node:
            found.append("agent")
        found.extend(_markers(dep))
    return found


@pytest.fixture(scope="module")
def routes(tmp_path_factory) -> list[APIRoute]:
    deps = open_deps(make_settings(tmp_path_factory.mktemp("rbac-app")))
    try:
        return iter_routes(create_app(deps, run_workers=False))
    finally:
        deps.db.close()


def guard_of(route: APIRoute) -> Permission | str:
    markers = list(dict.fromkeys(_markers(route.dependant)))
    assert len(markers) == 1, f"{route.methods} {route.path}: guards {markers}"
    return markers[0]


def test_every_route_has_exactly_one_guard(routes):
    unguarded = [f"{sorted(r.methods)} {r.path}" for r in routes if not _markers(r.dependant)]
    assert not unguarded, (
        f"routes without require(...), public or agent_node (add a guard dependency): {unguarded}"
    )
    for route in routes:
        guard_of(route)


def test_the_walk_sees_the_known_routes(routes):
    seen = {(m, r.path) for r in routes for m in r.methods}
    for expected in [
        ("POST", "/v1/auth/login"),
        ("GET", "/v1/storage-pools"),
        ("POST", "/v1/storage-pools"),
        ("DELETE", "/v1/storage-pools/{id}"),
        ("PUT", "/v1/cluster/default-pool"),
        ("POST", "/v1/nodes/{name}/heartbeat"),
    ]:
        assert expected in seen


def test_public_and_agent_routes_are_the_expected_ones(routes):
    public = sorted((sorted(r.methods)[0], r.path) for r in routes if guard_of(r) == "public")
    assert public == [
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/readyz"),
        ("POST", "/v1/auth/login"),
        ("POST", "/v1/auth/refresh"),
        ("POST", "/v1/nodes/join"),
        ("POST", "/v1/nodes/rejoin"),
    ]
    agent = {r.path for r in routes if guard_of(r) == "agent"}
    assert {"/v1/nodes/{name}/heartbeat", "/v1/nodes/{name}/watch"} <= agent
    assert all(p.startswith("/v1/nodes/{name}/") for p in agent)


# the walk: live calls ------------------------------------------------------------------


def _fill(path: str) -> str:
    def value(m: re.Match[str]) -> str:
        return "rbac-walk-target" if m.group(1) == "name" else str(uuid.uuid4())

    return re.sub(r"\{(\w+)\}", value, path)


#: valid bodies for agent routes, so a refusal there is about the credential
AGENT_BODIES = {
    "/heartbeat": {
        "agent_version": "t",
        "architecture": "amd64",
        "revision": 0,
        "digest": "0" * 64,
        "pools": [],
    },
    "/tasks/{task_id}": {"status": "running"},
}


def _call(client, method: str, path: str, template: str = ""):
    kwargs: dict[str, Any] = {}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = next(
            (body for end, body in AGENT_BODIES.items() if template.endswith(end)), {}
        )
    params = {"revision": 0, "timeout": 0} if path.endswith("/watch") else None
    return client.request(method, path, params=params, **kwargs)


def _calls(routes: list[APIRoute]):
    for route in routes:
        for method in sorted(route.methods or ()):
            yield route, method, _fill(route.path)


def _hit(client, route: APIRoute, method: str, path: str):
    return _call(client, method, path, route.path)


def test_anonymous_gets_401_on_every_guarded_route(api, routes):
    checked = 0
    with http(api, None) as anon:
        for route, method, path in _calls(routes):
            if guard_of(route) == "public":
                r = _hit(anon, route, method, path)
                assert r.status_code not in (401, 403), (method, path, r.text)
                continue
            r = _hit(anon, route, method, path)
            assert r.status_code == 401, (method, path, r.text)
            assert_error(r, 401, "unauthenticated")
            checked += 1
    assert checked >= 20


def test_each_role_gets_exactly_what_the_table_says(api, routes):
    checked = 0
    with contextlib.ExitStack() as stack:
        clients = {role: stack.enter_context(http(api, role)) for role in ROLES}
        for route, method, path in _calls(routes):
            guard = guard_of(route)
            if not isinstance(guard, Permission):
                continue
            for role in ROLES:
                r = _hit(clients[role], route, method, path)
                where = (role, method, route.path, r.status_code, r.text)
                if scope_for(Role(role), guard) is Scope.NONE:
                    assert r.status_code == 403, where
                    assert_error(r, 403, "permission_denied", details={"required": str(guard)})
                else:
                    assert r.status_code not in (401, 403), where
                checked += 1
    assert checked >= 80


def test_agent_routes_refuse_user_tokens(api, routes):
    agent_routes = [(rt, m, p) for rt, m, p in _calls(routes) if guard_of(rt) == "agent"]
    assert agent_routes
    for route, method, path in agent_routes:
        for role in ROLES:
            with http(api, role) as c:
                r = _hit(c, route, method, path)
            assert r.status_code == 401, (role, method, path, r.text)
            assert_error(r, 401, "unauthenticated")
