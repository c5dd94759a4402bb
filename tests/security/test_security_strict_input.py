"""Hostile input against a live two-node cluster: real agents, real control plane.

Before strict input, one request could brick a node or a list for everyone:
a developer's VM ``image_url`` holding a lone surrogate made its node's
heartbeat and watch answer 500 (the node's desired state could no longer be
served), a pool ``config`` with one broke ``pool list``, thousands of nested
arrays answered 500 (``RecursionError``), a heartbeat with 2^64 answered 500.

Each test plays one attacker, counts the attempts and what came through (an
answer other than the 400 naming the value, or any view of any tenant or
node that stopped answering 200), and then proves that both real agents still
get their desired state: a pool created on each node afterwards reaches
``ready`` through the node's own heartbeat and watch.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from otherix.api.workers.liveness import flush_heartbeats
from otherix.rbac import Role
from support.harness import FAST, NODE_ROOT, Cluster, ControlPlane
from support.hostile import LONE, broken, dumps, heartbeat_body, nested_text, views

pytestmark = [pytest.mark.security, pytest.mark.slow, pytest.mark.timeout(240)]

NODES = ("node-a", "node-b")
PASSWORD = "developer-password-1"


@dataclass
class Live:
    cp: ControlPlane
    cluster: Cluster
    tokens: dict[str, str]
    credentials: dict[str, str]

    @property
    def url(self) -> str:
        return self.cp.url

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def every_view(self) -> dict[str, int]:
        out = {}
        for node in NODES:
            for k, v in views(self.url, self.tokens, node, self.credentials[node]).items():
                out[f"{node}: {k}"] = v
        return out

    def agents_not_served(self) -> list[str]:
        """Create a pool on each node: it must reach ``ready`` through the real agent's
        heartbeat and watch. Returns the nodes where it did not."""
        names = {}
        for node in NODES:
            names[node] = name = f"after-{uuid.uuid4().hex[:6]}"
            body = {"node": node, "name": name, "path": f"{NODE_ROOT}/pools/{name}"}
            r = self.cluster.admin.post("/v1/storage-pools", json=body)
            assert r.status_code == 201, r.text
        stuck = []
        for node, name in names.items():
            try:
                self.cluster.wait_pool_status(node, name, "ready", timeout=20)
            except AssertionError:
                stuck.append(node)
        return stuck


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("strict-live")
    cp = ControlPlane(tmp / "api", overrides=FAST).start()
    try:
        with Cluster(cp, tmp) as cluster:
            agents = {name: cluster.add_node(name) for name in NODES}
            for name in NODES:
                cluster.wait_node_status(name, "ready", timeout=20)
                cluster.wait_pool_status(name, "default", "ready", timeout=20)
            assert cp.server is not None
            cp.server.add_user("developer", PASSWORD, Role.DEVELOPER)
            tokens = {"admin": cp.admin_token, "developer": cp.server.login("developer", PASSWORD)}
            credentials = {name: agents[name].state()["credential"] for name in NODES}
            yield Live(cp, cluster, tokens, credentials)
    finally:
        cp.stop()


@dataclass
class Attempts:
    sent: int = 0
    refused: int = 0  # 400 validation_failed naming the value
    through: list[str] | None = None

    def __post_init__(self) -> None:
        self.through = []

    def check(self, what: str, r: httpx.Response, field: str) -> None:
        self.sent += 1
        err = r.json().get("error", {}) if r.status_code == 400 else {}
        if (
            err.get("code") == "validation_failed"
            and (err.get("details") or {}).get("field") == field
        ):
            self.refused += 1
        else:
            assert self.through is not None
            self.through.append(f"{what}: {r.status_code} {r.text[:160]}")


def post(c: httpx.Client, path: str, body: bytes, method: str = "POST") -> httpx.Response:
    return c.request(method, path, content=body, headers={"content-type": "application/json"})


def finish(live: Live, reliability: Any, name: str, attempts: Attempts, detail: str) -> None:
    statuses = live.every_view()
    stuck = live.agents_not_served()
    assert attempts.through is not None
    reliability.record(
        name,
        injected=attempts.sent,
        survived=attempts.refused,
        checked=len(statuses) + len(NODES),
        lost=len(attempts.through) + len(broken(statuses)) + len(stuck),
        detail=detail,
    )
    assert attempts.through == [], "\n".join(attempts.through)
    assert broken(statuses) == {}
    assert stuck == [], f"nodes whose agent no longer gets its desired state: {stuck}"
    assert live.cp.server is not None
    flush_heartbeats(live.cp.server.deps)
    assert [live.cluster.node(n)["status"] for n in NODES] == ["ready"] * len(NODES)


def test_a_developer_cannot_brick_a_node_with_a_surrogate_image_url(live, reliability):
    vm = {"name": "brick", "arch": "amd64", "vcpus": 1, "memory_mb": 64, "node": "node-a"}
    vm["image_url"] = "http://images.invalid/ok.img"
    attempts = Attempts()
    with live.client(live.tokens["developer"]) as dev:
        for what, body, field in [
            (
                "lone high surrogate",
                dumps(vm | {"image_url": f"http://h.invalid/{LONE}.img"}),
                "image_url",
            ),
            (
                "lone low surrogate",
                dumps(vm | {"image_url": "http://h.invalid/\udc00.img"}),
                "image_url",
            ),
            (
                "reversed pair",
                dumps(vm | {"image_url": "http://h.invalid/\udc00\ud800.img"}),
                "image_url",
            ),
            (
                "surrogate encoded as UTF-8 bytes",
                json.dumps(vm | {"image_url": "http://h.invalid/@.img"})
                .encode()
                .replace(b"@", b"\xed\xa0\x80"),
                "image_url",
            ),
            ("in the pool name", dumps(vm | {"pool": f"default{LONE}"}), "pool"),
            ("in the node hint", dumps(vm | {"node": f"node-a{LONE}"}), "node"),
            ("in the VM name", dumps(vm | {"name": f"brick{LONE}"}), "name"),
            ("in the checksum", dumps(vm | {"image_sha256": LONE * 64}), "image_sha256"),
        ]:
            attempts.check(what, post(dev, "/v1/vms", body), field)
        attempts.check("query", dev.get("/v1/vms?pool=%ED%A0%80"), "query.pool")
        attempts.check("path", dev.get("/v1/vms/%ED%A0%80"), "path.name")
        r = dev.get("/v1/vms")
    assert attempts.through is not None
    if r.status_code != 200:
        attempts.through.append(f"the developer's own VM list: {r.status_code}")
    elif r.json()["data"]:
        attempts.through.append(f"VMs admitted: {[v['name'] for v in r.json()['data']]}")
    finish(
        live,
        reliability,
        "strict input: developer bricks a node with a surrogate image_url",
        attempts,
        "POST /v1/vms with lone surrogates (escaped and as UTF-8 bytes) in image_url, pool, "
        "node, name, sha256; query and path; then both real agents reconcile a new pool",
    )


def test_an_admins_deep_config_is_refused_and_the_deepest_allowed_one_reaches_the_agent(
    live, reliability
):
    def pool(name: str, config_text: str) -> bytes:
        path = f"{NODE_ROOT}/pools/{name}"
        head = f'{{"node": "node-b", "name": "{name}", "path": "{path}", '
        return (head + f'"config": {config_text}}}').encode()

    attempts = Attempts()
    too_deep = "config.a" + ".0" * 62  # the body is level 1, config 2, a's first array 3
    with live.client(live.tokens["admin"]) as admin:
        default_b = next(
            p
            for p in admin.get("/v1/storage-pools", params={"node": "node-b"}).json()["data"]
            if p["name"] == "default"
        )
        for depth in (65, 1_000, 10_000, 500_000):
            config = '{"a": ' + nested_text(depth - 2) + "}"
            attempts.check(
                f"create, depth {depth}",
                post(admin, "/v1/storage-pools", pool(f"deep-{depth}", config)),
                too_deep,
            )
            body = ('{"config": ' + config + "}").encode()
            attempts.check(
                f"patch, depth {depth}",
                post(admin, f"/v1/storage-pools/{default_b['id']}", body, "PATCH"),
                too_deep,
            )
        for what, value, field in [
            ("NaN", "NaN", "config.n"),
            ("Infinity", "Infinity", "config.n"),
            ("-Infinity", "-Infinity", "config.n"),
            ("2^63", str(2**63), "config.n"),
            ("1e400", "1e400", "config.n"),
            ("a lone surrogate", '"\\ud800"', "config.n"),
        ]:
            attempts.check(
                what, post(admin, "/v1/storage-pools", pool("num", f'{{"n": {value}}}')), field
            )
        # the deepest allowed config is stored, and the real agent receives and applies it
        deepest = '{"a": ' + nested_text(62) + "}"
        r = post(admin, "/v1/storage-pools", pool("deepest", deepest))
        assert r.status_code == 201, r.text
    pool_b = live.cluster.wait_pool_status("node-b", "deepest", "ready", timeout=20)
    assert pool_b["config"] == json.loads(deepest)
    finish(
        live,
        reliability,
        "strict input: admin's deep or non-finite pool config",
        attempts,
        "create and patch with nesting 65, 1,000, 10,000 and 500,000; NaN, +-Infinity, 2^63, "
        "1e400, a lone surrogate; the 64-level config reaches node-b's agent and goes ready",
    )


def test_a_forged_heartbeat_with_2_64_changes_nothing(live, reliability):
    """Someone holding node-b's credential sends reports no agent would."""
    node, cred = "node-b", live.credentials["node-b"]
    with live.client(live.tokens["admin"]) as admin:
        before = next(
            p
            for p in admin.get("/v1/storage-pools", params={"node": node}).json()["data"]
            if p["name"] == "default"
        )
    report = {
        "name": "default",
        "reconciliation_status": "ready",
        "capacity_bytes": 1,
        "available_bytes": 1,
    }
    attempts = Attempts()
    with live.client(cred) as agent:
        url = f"/v1/nodes/{node}/heartbeat"
        for what, body, field in [
            ("revision 2^64", heartbeat_body(revision=2**64), "revision"),
            ("revision 2^63", heartbeat_body(revision=2**63), "revision"),
            (
                "capacity 2^64",
                heartbeat_body([report | {"capacity_bytes": 2**64}]),
                "pools.0.capacity_bytes",
            ),
            (
                "available -(2^63)",
                heartbeat_body([report | {"available_bytes": -(2**63)}]),
                "pools.0.available_bytes",
            ),
            (
                "memory 2^64",
                heartbeat_body(resources={"memory_total_mib": 2**64}),
                "resources.memory_total_mib",
            ),
            ("capability NaN", heartbeat_body(capabilities={"x": float("nan")}), "capabilities.x"),
            ("agent version surrogate", heartbeat_body(agent_version=LONE), "agent_version"),
            (
                "error surrogate",
                heartbeat_body([report | {"reconciliation_error": LONE}]),
                "pools.0.reconciliation_error",
            ),
        ]:
            attempts.check(what, post(agent, url, dumps(body)), field)
        deep = dumps(heartbeat_body(capabilities={"x": "@"})).replace(
            b'"@"', nested_text(10_000).encode()
        )
        attempts.check("deep capabilities", post(agent, url, deep), "capabilities.x" + ".0" * 62)
        dup = b'{"agent_version": "t", "agent_version": "u"}'
        attempts.check("repeated key", post(agent, url, dup), "agent_version")
        r = agent.get(f"/v1/nodes/{node}/watch", params={"revision": 2**64, "timeout": 0})
        attempts.sent += 1
        if r.status_code == 400:
            attempts.refused += 1
        else:
            assert attempts.through is not None
            attempts.through.append(f"watch revision 2^64: {r.status_code}")
    with live.client(live.tokens["admin"]) as admin:
        after = next(
            p
            for p in admin.get("/v1/storage-pools", params={"node": node}).json()["data"]
            if p["name"] == "default"
        )
    # what the real agent reports stands (free space may move with the host's disk;
    # the filesystem's size does not): none of the forged figures landed
    assert after["capacity_bytes"] == before["capacity_bytes"]
    assert after["available_bytes"] not in (1, 2**64, -(2**63))
    finish(
        live,
        reliability,
        "strict input: forged heartbeat with 2^64 and friends",
        attempts,
        "node-b's credential: revision 2^64/2^63, capacity 2^64, -(2^63), NaN, lone surrogates, "
        "10,000 levels, a repeated key, watch revision 2^64; both agents still reconcile",
    )
