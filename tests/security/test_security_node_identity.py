"""A node credential speaks for its own node only.

``tests/api/test_api_nodes.py`` checks the heartbeat; here every agent route
(heartbeat, watch, task report) is tried with node A's credential against node
B, both ways round, plus A reporting on B's task through A's own URL, and a
deleted node's and a forged credential on each route. After the attempts the
victim's state is read back (heartbeat times flushed first): its last heartbeat,
status, pools and task are exactly what they were.
"""

from __future__ import annotations

import httpx
import pytest
from securityhelpers import Node, heartbeat_body, join_node

from otherix.api.workers.liveness import flush_heartbeats

pytestmark = pytest.mark.security

POOLS = "/var/lib/otherix/pools/"


def scan_task(admin: httpx.Client, node: Node) -> str:
    """A pool on ``node``, reported ready, and a scan task for it (the node's task)."""
    body = {"node": node.name, "name": f"{node.name}-pool", "path": f"{POOLS}{node.name}"}
    pool = admin.post("/v1/storage-pools", json=body)
    assert pool.status_code == 201, pool.text
    report = {"name": f"{node.name}-pool", "reconciliation_status": "ready"}
    r = httpx.post(
        f"{admin.base_url}/v1/nodes/{node.name}/heartbeat",
        json=heartbeat_body([report]),
        headers=node.auth,
    )
    assert r.status_code == 200, r.text
    r = admin.post(f"/v1/storage-pools/{pool.json()['id']}/scan")
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


def snapshot(api, admin: httpx.Client, node: Node, task_id: str) -> tuple:
    flush_heartbeats(api.server.deps)  # heartbeat times are written in batches; write them now
    view = admin.get(f"/v1/nodes/{node.name}").json()
    pool = admin.get("/v1/storage-pools", params={"node": node.name}).json()["data"]
    task = admin.get(f"/v1/tasks/{task_id}").json()
    return view["last_heartbeat_at"], view["status"], pool, task


def attempts(actor: Node, victim: Node, victim_task: str, forged_report: dict):
    """(what, method, url path, json, params) tried with ``actor``'s credential."""
    bad_pool = [{"name": f"{victim.name}-pool", "reconciliation_status": "failed"}]
    yield (
        "heartbeat as the other node",
        "POST",
        f"/v1/nodes/{victim.name}/heartbeat",
        (heartbeat_body(bad_pool)),
        None,
    )
    yield (
        "watch the other node",
        "GET",
        f"/v1/nodes/{victim.name}/watch",
        None,
        {
            "revision": 0,
            "timeout": 0,
        },
    )
    yield (
        "report the other node's task",
        "POST",
        (f"/v1/nodes/{victim.name}/tasks/{victim_task}"),
        forged_report,
        None,
    )
    yield (
        "report the other node's task via its own URL",
        "POST",
        (f"/v1/nodes/{actor.name}/tasks/{victim_task}"),
        forged_report,
        None,
    )


def test_a_node_credential_cannot_act_for_another_node(api, reliability):
    a = join_node(api.url, api.tokens["admin"], "node-a")
    b = join_node(api.url, api.tokens["admin"], "node-b")
    forged = {"status": "failed", "error": {"code": "forged", "message": "forged"}}
    refused: list[tuple[str, int]] = []
    with api.client("admin") as admin:
        tasks = {a.name: scan_task(admin, a), b.name: scan_task(admin, b)}
        before = {n.name: snapshot(api, admin, n, tasks[n.name]) for n in (a, b)}
        for actor, victim in ((a, b), (b, a)):
            for what, method, path, body, params in attempts(
                actor, victim, tasks[victim.name], forged
            ):
                r = httpx.request(
                    method, api.url + path, json=body, params=params, headers=actor.auth
                )
                assert r.status_code in (401, 404), (what, r.status_code, r.text)
                assert r.json()["error"]["code"] in ("unauthenticated", "not_found"), r.text
                refused.append((what, r.status_code))
        after = {n.name: snapshot(api, admin, n, tasks[n.name]) for n in (a, b)}
    reliability.record(
        "node credential used for another node",
        injected=len(refused),
        survived=len(refused),
        checked=len(after),
        lost=sum(before[n] != after[n] for n in after),
        detail="heartbeat, watch, task report (also via the actor's own URL), both directions",
    )
    assert after == before
    assert after[b.name][3]["status"] == "pending"  # the forged "failed" never landed


def test_deleted_and_forged_node_credentials_are_refused_on_every_agent_route(api, reliability):
    gone = join_node(api.url, api.tokens["admin"], "node-gone")
    with api.client("admin") as admin:
        task = scan_task(admin, gone)
        # the node holds the only instance of the cluster default: unset it first
        assert admin.delete("/v1/cluster/default-pool").status_code == 204
        assert admin.delete(f"/v1/nodes/{gone.name}").status_code == 200  # 204 before issue 13
    forged = Node(gone.name, gone.id, "otxn_" + "A" * 43)
    # issue 13 item 9: a deleted node's credential says so (its agent then stops)
    reasons = {
        gone.credential: {"reason": "node_deleted", "node": gone.name},
        forged.credential: {"reason": "credential_unknown"},
    }
    sent = 0
    for cred in (gone, forged):
        for what, method, path, body, params in attempts(cred, cred, task, {"status": "running"}):
            r = httpx.request(method, api.url + path, json=body, params=params, headers=cred.auth)
            sent += 1
            assert r.status_code == 401, (what, cred.credential[:8], r.text)
            assert r.json()["error"]["details"] == reasons[cred.credential], r.text
    reliability.record(
        "deleted or forged node credential",
        injected=sent,
        survived=sent,
        detail="heartbeat, watch, task report with a deleted node's and a forged credential",
    )
