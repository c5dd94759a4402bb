"""Strict input on a real server, on SQLite and PostgreSQL (issue 13, items 1 and 2).

Every string in a body, query, path and header must be valid text; bodies are
strict JSON (nesting <= 64, integers within +-(2^63-1), finite numbers, no
repeated key). Each refusal is ``400 validation_failed`` naming the value
(``details.field``, ``details.in``), nothing is stored, and afterwards every
list, the node's heartbeat and its watch still answer 200. Before the input
boundary, SQLite stored the lone surrogates (and every list holding one
answered 500) and PostgreSQL answered 500 on the write itself.

Each test walks a whole table on one server per backend (``api_any_backend``),
so a failure lists every case that broke, not only the first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from apihelpers import (
    POOLS,
    assert_error,
    create_pool,
    heartbeat,
    http,
    pool_report,
    ready_node,
)

from support.hostile import LONE, broken, dumps, heartbeat_body, nested_text, post_raw, views

INT64_MAX = 2**63 - 1
MIB = 1024 * 1024


@dataclass
class World:
    """A ready node with a ready pool, a scan task and a VM of the developer's."""

    api: Any
    node: Any
    pool_id: str
    task_id: str

    def views(self) -> dict[str, int]:
        return views(self.api.url, self.api.tokens, self.node.name, self.node.credential)


def world(api) -> World:
    node = ready_node(api, "strict-node")
    r = heartbeat(api, node, [pool_report("default")])
    assert r.status_code == 200, r.text
    pool = create_pool(api, node, "strict-pool")
    with http(api) as c:
        r = c.post(f"/v1/storage-pools/{pool['id']}/scan")
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
    with http(api, "developer") as c:
        r = c.post(
            "/v1/vms",
            json={
                "name": "dev-vm",
                "image_url": "http://images.invalid/a.img",
                "arch": "amd64",
                "vcpus": 1,
                "memory_mb": 128,
                "pool": "default",
            },
        )
        assert r.status_code == 201, r.text
    w = World(api, node, pool["id"], task_id)
    assert broken(w.views()) == {}
    return w


def refused(r: httpx.Response, field: str, where: str = "body") -> str | None:
    """None when ``r`` is the expected refusal, else what was wrong."""
    if r.status_code != 400:
        return f"{r.status_code} {r.text[:200]}"
    err = r.json()["error"]
    details = err.get("details") or {}
    if err["code"] != "validation_failed" or details.get("field") != field:
        return f"{err}"
    if details.get("in") != where or field not in err["message"]:
        return f"{err}"
    return None


def send(w: World, role: str | None, method: str, path: str, body: bytes) -> httpx.Response:
    """As ``role`` (``"node"``: the node's credential; None: anonymous)."""
    if role == "node":
        with http(w.api, token=w.node.credential) as c:
            return post_raw(c, method, path, body)
    with http(w.api, role) as c:
        return post_raw(c, method, path, body)


def surrogate_cases(w: World) -> list[tuple[str | None, str, str, Any, str]]:
    """(role, method, path, body with a lone surrogate, the field it names)."""
    node, bad = w.node.name, f"x{LONE}y"
    pool = {"node": node, "name": "p-ok", "path": POOLS + "p-ok"}
    vm: dict[str, Any] = {"name": "vm-ok", "image_url": "http://h.invalid/a.img", "arch": "amd64"}
    vm |= {"vcpus": 1, "memory_mb": 128}
    hb = heartbeat_body
    task = f"/v1/nodes/{node}/tasks/{w.task_id}"
    return [
        ("admin", "POST", "/v1/storage-pools", pool | {"config": {"a": bad}}, "config.a"),
        (
            "admin",
            "POST",
            "/v1/storage-pools",
            pool | {"config": {"a": {"b": [bad]}}},
            "config.a.b.0",
        ),
        ("admin", "POST", "/v1/storage-pools", pool | {"config": {bad: 1}}, "config.x\\ud800y"),
        ("admin", "POST", "/v1/storage-pools", pool | {"name": bad}, "name"),
        ("admin", "POST", "/v1/storage-pools", pool | {"path": POOLS + bad}, "path"),
        ("admin", "PATCH", f"/v1/storage-pools/{w.pool_id}", {"config": {"a": bad}}, "config.a"),
        ("admin", "PATCH", f"/v1/storage-pools/{w.pool_id}", {"name": bad}, "name"),
        (
            "developer",
            "POST",
            "/v1/vms",
            vm | {"image_url": f"http://h.invalid/{bad}.img"},
            "image_url",
        ),
        ("developer", "POST", "/v1/vms", vm | {"name": bad}, "name"),
        ("developer", "POST", "/v1/vms", vm | {"pool": bad}, "pool"),
        ("developer", "POST", "/v1/vms", vm | {"node": bad}, "node"),
        ("developer", "POST", "/v1/vms", vm | {"image_sha256": bad}, "image_sha256"),
        ("node", "POST", f"/v1/nodes/{node}/heartbeat", hb(agent_version=bad), "agent_version"),
        (
            "node",
            "POST",
            f"/v1/nodes/{node}/heartbeat",
            hb(capabilities={"k": bad}),
            "capabilities.k",
        ),
        ("node", "POST", f"/v1/nodes/{node}/heartbeat", hb([pool_report(bad)]), "pools.0.name"),
        (
            "node",
            "POST",
            f"/v1/nodes/{node}/heartbeat",
            hb([pool_report("default", "failed", error=bad)]),
            "pools.0.reconciliation_error",
        ),
        ("node", "POST", task, {"status": "success", "result": {"k": bad}}, "result.k"),
        ("node", "POST", task, {"status": "failed", "error": {"message": bad}}, "error.message"),
        (None, "POST", "/v1/auth/login", {"username": bad, "password": "x"}, "username"),
        (None, "POST", "/v1/auth/login", {"username": "admin", "password": bad}, "password"),
        (None, "POST", "/v1/auth/refresh", {"refresh_token": bad}, "refresh_token"),
        (None, "POST", "/v1/nodes/join", {"join_token": bad, "name": "n"}, "join_token"),
        (None, "POST", "/v1/nodes/join", {"join_token": "otxj_x", "name": bad}, "name"),
        ("admin", "POST", "/v1/nodes/join-tokens", {"description": bad}, "description"),
        ("admin", "POST", "/v1/users", {"username": bad, "password": "long-enough"}, "username"),
        ("admin", "POST", "/v1/users", {"username": "u-x", "password": bad * 4}, "password"),
        ("developer", "PATCH", "/v1/users/me", {"password": bad * 4}, "password"),
        ("developer", "POST", "/v1/users/me/api-tokens", {"name": bad}, "name"),
        ("admin", "PUT", "/v1/cluster/default-pool", {"name": bad}, "name"),
        ("admin", "POST", "/v1/auth/logout", {"refresh_token": bad}, "refresh_token"),
    ]


def test_lone_surrogates_anywhere_in_a_body_are_refused_naming_the_field(api_any_backend):
    w = world(api_any_backend)
    problems = {}
    cases = surrogate_cases(w)
    for role, method, path, body, field in cases:
        why = refused(send(w, role, method, path, dumps(body)), field)
        if why:
            problems[f"{method} {path} {field}"] = why
        if bad := broken(w.views()):
            problems[f"views after {method} {path} {field}"] = str(bad)
    assert problems == {}, json.dumps(problems, indent=1)
    assert len(cases) >= 30
    # nothing with a surrogate was stored: the pool list shows none of the names
    with http(w.api) as c:
        names = {
            p["name"] for p in c.get("/v1/storage-pools", params={"limit": 200}).json()["data"]
        }
    assert "p-ok" not in names


def test_invalid_utf8_bytes_in_a_body_are_refused_naming_the_field(api_any_backend):
    w = world(api_any_backend)
    cases = [
        (b'{"node": "n", "name": "a\xffb", "path": "/p"}', "name"),
        (b'{"node": "n", "name": "p", "path": "/p", "config": {"k": "\xed\xa0\x80"}}', "config.k"),
        (b'{"node": "n", "name": "p", "path": "/p", "config": {"k": "\xc0\xaf"}}', "config.k"),
    ]
    problems = {}
    for body, field in cases:
        why = refused(send(w, "admin", "POST", "/v1/storage-pools", body), field)
        if why:
            problems[repr(body)] = why
    assert problems == {}
    assert broken(w.views()) == {}


def test_query_path_and_header_text_is_checked_too(api_any_backend):
    w = world(api_any_backend)
    node = w.node
    cases = [
        ("GET", "/v1/storage-pools?node=%ED%A0%80", {}, "query.node", "query"),
        ("GET", "/v1/storage-pools?node=%FF", {}, "query.node", "query"),
        ("GET", "/v1/vms?pool=a%00b", {}, "query.pool", "query"),
        ("GET", "/v1/tasks?resource_id=%C0%AF", {}, "query.resource_id", "query"),
        ("GET", "/v1/nodes/%ED%A0%80", {}, "path.name", "path"),
        ("GET", "/v1/storage-pools/%FF", {}, "path.id", "path"),
        ("GET", "/v1/vms/a%00b", {}, "path.name", "path"),
        ("DELETE", "/v1/users/%ED%B0%80", {}, "path.user_id", "path"),
        ("POST", f"/v1/nodes/{node.name}/tasks/%FF", {}, "path.task_id", "path"),
        ("GET", "/v1/nodes", {"X-Request-Id": b"\xff\xfe"}, "header.x-request-id", "header"),
        (
            "POST",
            "/v1/nodes/join-tokens",
            {"Idempotency-Key": b"k\xed\xa0\x80"},
            "header.idempotency-key",
            "header",
        ),
    ]
    problems = {}
    with http(w.api) as c:
        for method, path, headers, field, where in cases:
            r = c.request(method, path, headers=headers, json={} if method == "POST" else None)
            why = refused(r, field, where)
            if why:
                problems[f"{method} {path} {headers}"] = why
    assert problems == {}, json.dumps(problems, indent=1)
    # the watch's own query string, as an agent would send it
    with http(w.api, token=node.credential) as c:
        r = c.get(f"/v1/nodes/{node.name}/watch?revision=0&timeout=0&x=%FF")
    assert refused(r, "query.x", "query") is None
    # valid UTF-8 in a query or path is fine
    with http(w.api) as c:
        assert c.get("/v1/storage-pools/caf%C3%A9").status_code == 404
    assert broken(w.views()) == {}


def test_nesting_is_limited_to_64_levels(api_any_backend):
    """``{"node", "name", "path", "config": {"a": [...]}}``: the body is level 1,
    config level 2, so ``k`` arrays under ``config.a`` make a depth of 2 + k."""
    w = world(api_any_backend)
    problems: dict[int | str, str] = {}
    for depth in (63, 64, 65, 10_000):
        arrays = depth - 2
        body = (
            f'{{"node": "{w.node.name}", "name": "deep-{depth}", "path": "{POOLS}deep-{depth}", '
            f'"config": {{"a": {nested_text(arrays)}}}}}'
        ).encode()
        r = send(w, "admin", "POST", "/v1/storage-pools", body)
        patch = f'{{"config": {{"a": {nested_text(arrays)}}}}}'.encode()
        rp = send(w, "admin", "PATCH", f"/v1/storage-pools/{w.pool_id}", patch)
        if depth <= 64:
            if r.status_code != 201 or rp.status_code != 200:
                problems[depth] = f"{r.status_code} {rp.status_code} {r.text[:200]}"
            elif json.loads(nested_text(arrays)) != r.json()["config"]["a"]:
                problems[depth] = "config not stored as given"
        else:
            field = "config.a" + ".0" * (65 - 3)  # the container at level 65
            why = refused(r, field) or refused(rp, field)
            if why:
                problems[depth] = why
        if bad := broken(w.views()):
            problems[f"views after {depth}"] = str(bad)
    assert problems == {}, problems
    with http(w.api) as c:
        r = c.get("/v1/storage-pools/deep-64")
    assert r.status_code == 200, r.text


def test_numbers_must_be_finite_and_integers_fit_64_bits(api_any_backend):
    w = world(api_any_backend)
    node = w.node.name

    def config(name: str, value: str) -> bytes:
        return (
            f'{{"node": "{node}", "name": "{name}", "path": "{POOLS}{name}", '
            f'"config": {{"x": {value}}}}}'
        ).encode()

    problems: dict[str, str] = {}
    for value, ok in [
        ("NaN", False),
        ("Infinity", False),
        ("-Infinity", False),
        ("1e400", False),
        (str(INT64_MAX), True),
        (str(-INT64_MAX), True),
        (str(INT64_MAX + 1), False),
        (str(-INT64_MAX - 1), False),
        (str(2**64), False),
        ("1" * 5000, False),
        ("1.5e18", True),
        ("0.25", True),
        ("1.5e300", False),  # PostgreSQL would give it back as a 301-digit integer
    ]:
        name = f"num-{len(problems)}-{abs(hash(value)) % 10**6}"
        r = send(w, "admin", "POST", "/v1/storage-pools", config(name, value))
        if ok:
            if r.status_code != 201 or r.json()["config"]["x"] != json.loads(value):
                problems[value] = f"{r.status_code} {r.text[:200]}"
        elif why := refused(r, "config.x"):
            problems[value] = why
    # per-field bounds on the agent's report and the watch
    hb = f"/v1/nodes/{node}/heartbeat"
    for body, field in [
        (heartbeat_body(revision=2**64), "revision"),
        (heartbeat_body(revision=-1), None),
        (heartbeat_body([pool_report("default", capacity=2**63)]), "pools.0.capacity_bytes"),
        (heartbeat_body([pool_report("default", available=-1)]), None),
        (heartbeat_body(resources={"memory_total_mib": 2**64}), "resources.memory_total_mib"),
        (heartbeat_body(capabilities={"n": -(2**63)}), "capabilities.n"),
    ]:
        r = send(w, "node", "POST", hb, dumps(body))
        if field is None:  # in 64 bits but below the field's minimum: the model refuses it
            if r.status_code != 400:
                problems[str(body)[:60]] = f"{r.status_code} {r.text[:200]}"
        elif why := refused(r, field):
            problems[field] = why
    r = send(
        w,
        "node",
        "POST",
        hb,
        dumps(heartbeat_body([pool_report("default", capacity=INT64_MAX, available=INT64_MAX)])),
    )
    if r.status_code != 200:
        problems["capacity 2^63-1"] = f"{r.status_code} {r.text[:200]}"
    with http(w.api, token=w.node.credential) as c:
        r = c.get(f"/v1/nodes/{node}/watch", params={"revision": 2**63, "timeout": 0})
        if r.status_code != 400:
            problems["watch revision 2^63"] = r.text[:200]
    with http(w.api) as c:
        r = c.get("/v1/storage-pools", params={"limit": 2**63})
        if r.status_code != 400 or r.json()["error"]["details"] != {"field": "limit"}:
            problems["limit 2^63"] = r.text[:200]
        r = c.post(
            "/v1/users/me/api-tokens", json={"name": "t", "expires_at": "9999-12-31T23:00:00-05:00"}
        )
        if r.status_code != 400:
            problems["expires_at past year 9999 in UTC"] = f"{r.status_code} {r.text[:200]}"
    assert problems == {}, json.dumps(problems, indent=1)
    assert broken(w.views()) == {}


def test_repeated_keys_and_nul_are_refused(api_any_backend):
    w = world(api_any_backend)
    node = w.node.name
    cases = [
        (f'{{"node": "{node}", "name": "d", "name": "e", "path": "{POOLS}d"}}'.encode(), "name"),
        (
            f'{{"node": "{node}", "name": "d", "path": "{POOLS}d", '
            f'"config": {{"a": 1, "a": 2}}}}'.encode(),
            "config.a",
        ),
        # NUL: PostgreSQL stores it in neither text nor JSONB (these answered 500 there)
        (dumps({"node": node, "name": "nul\x00", "path": POOLS + "d"}), "name"),
        (dumps({"node": node, "name": "d", "path": POOLS + "a\x00b"}), "path"),
        (
            dumps({"node": node, "name": "d", "path": POOLS + "d", "config": {"a": "\x00"}}),
            "config.a",
        ),
    ]
    problems = {}
    for body, field in cases:
        if why := refused(send(w, "admin", "POST", "/v1/storage-pools", body), field):
            problems[repr(body)] = why
    r = send(w, "admin", "POST", "/v1/nodes/join-tokens", dumps({"description": "a\x00b"}))
    if why := refused(r, "description"):
        problems["join token description"] = why
    assert problems == {}, problems
    assert broken(w.views()) == {}


@pytest.mark.security
def test_the_body_cap_holds_on_every_route_including_the_agents(api):
    """More than 1 MiB is refused before it is parsed, announced or streamed. (Before
    the input boundary read every body, a streamed body on a route that takes none,
    a DELETE for one, was never read, so the cap never applied and the route ran.)"""
    node = ready_node(api, "cap-node")
    schema = httpx.get(f"{api.url}/openapi.json").json()
    too_big = b'{"x": "' + b"a" * MIB + b'"}'
    problems = {}
    routes = 0
    for path, item in schema["paths"].items():
        for method in ("post", "put", "patch", "delete"):
            if method not in item:
                continue
            routes += 1
            url = path.replace("{name}", node.name)
            for key in ("{id}", "{task_id}", "{user_id}", "{user_ref}", "{token_id}"):
                url = url.replace(key, "x")
            agent = url.startswith(f"/v1/nodes/{node.name}/") and url.endswith(("/heartbeat", "/x"))
            token = node.credential if agent else None
            with http(api, token=token) if token else http(api) as c:
                for label, content in (("declared", too_big), ("streamed", iter([too_big]))):
                    r = c.request(method.upper(), url, content=content)
                    err = r.json().get("error", {}) if r.status_code == 400 else {}
                    if err.get("details") != {"max_bytes": MIB}:
                        problems[f"{method} {url} {label}"] = f"{r.status_code} {r.text[:120]}"
    assert routes >= 20
    assert problems == {}, json.dumps(problems, indent=1)


def test_a_large_body_is_checked_all_through(api):
    """Bodies over 64 KiB are decoded off the event loop: same rules, same answer."""
    node = ready_node(api, "large-node")
    config = {f"k{i}": "v" * 100 for i in range(1000)}
    config["last"] = LONE
    body = dumps({"node": node.name, "name": "large", "path": POOLS + "large", "config": config})
    assert len(body) > 100_000
    with http(api) as c:
        r = post_raw(c, "POST", "/v1/storage-pools", body)
    assert refused(r, "config.last") is None, r.text
    del config["last"]
    with http(api) as c:
        r = post_raw(
            c,
            "POST",
            "/v1/storage-pools",
            dumps({"node": node.name, "name": "large", "path": POOLS + "large", "config": config}),
        )
    assert r.status_code == 201, r.text


def test_malformed_json_keeps_its_message(api):
    with http(api) as c:
        r = post_raw(c, "POST", "/v1/users", b'{"name": ')
    assert_error(r, 400, "validation_failed", "invalid request body: malformed JSON", None)
