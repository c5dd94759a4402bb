"""Two API replicas on one PostgreSQL; kill -9 either one and nothing notices.

Two real ``otherix-api serve`` processes (``CpProcess``) share one database
and one ``auth.jwt_secret``. Three real agents know both URLs: two were
bootstrapped with ``--server A --server B``, the third with ``--server A``
only and ``control_plane.urls: [A, B]`` in its config (the config's list
form). The real CLI uses a context made by ``otherix config add cluster
--server A --server B``.

Then replica A is killed with SIGKILL. For three stale thresholds, every node
is read through the surviving replica several times a second: each must stay
``ready`` without a single flap (``status_changed_at`` unchanged), the
survivor must be serving the agents' heartbeats and watches, and ``otherix
pool list`` and ``otherix pool create --wait`` must work through the context
(the pool reaches ``ready`` and exists on the node's disk). A is started
again, B is killed, and the same is checked through A.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cphelpers import ADMIN, POOLS_PREFIX, CpProcess, cluster_target, list_pools, store_problems

from support import pg
from support.cli import OTHERIX
from support.harness import Cluster, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(420)]

STALE = 4.0
SETTINGS = {
    "workers.heartbeat.stale_threshold": STALE,
    "workers.heartbeat.gone_grace": 120,
    "workers.heartbeat.interval": 0.5,
    "workers.heartbeat.flush_interval": 0.2,
    "agents.heartbeat_interval": 1,
}
CP_ENV = {
    **{f"OTHERIX_{k.upper().replace('.', '__')}": str(v) for k, v in SETTINGS.items()},
    "OTHERIX_AUTH__JWT_SECRET": "replicas-share-this-secret-" + "x" * 24,
}
NODES = ("ha-1", "ha-2", "ha-3")


def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    r = subprocess.run(
        [OTHERIX, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    return r.returncode, r.stdout, r.stderr


def served(survivor: CpProcess, route: str) -> float:
    """How many requests to ``route`` the replica has answered (its /metrics)."""
    text = httpx.get(f"{survivor.url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("otherix_http_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def nodes_by_name(client: httpx.Client) -> dict[str, dict[str, Any]]:
    r = client.get("/v1/nodes", params={"limit": 200})
    assert r.status_code == 200, r.text
    return {n["name"]: n for n in r.json()["data"]}


def watch_through(survivor: CpProcess, before: dict[str, dict[str, Any]]) -> list[str]:
    """Read every node through ``survivor`` for three stale thresholds; every
    moment a node was not ready, or had changed status in between."""
    problems: list[str] = []
    deadline = time.monotonic() + 3 * STALE
    reads = 0
    with survivor.client() as client:
        while time.monotonic() < deadline:
            for name, node in nodes_by_name(client).items():
                if node["status"] != "ready":
                    problems.append(f"{name} {node['status']}")
                elif node["status_changed_at"] != before[name]["status_changed_at"]:
                    problems.append(f"{name} flapped (changed at {node['status_changed_at']})")
            reads += 1
            time.sleep(0.25)
    assert reads >= 3 * STALE  # several reads a second, whatever the load
    return problems


def cli_round(env: dict[str, str], cluster: Cluster, node: str, pool: str) -> list[str]:
    """``pool list`` and ``pool create --wait`` through the two-URL context."""
    problems = []
    code, out, err = cli(env, "pool", "list")
    if code != 0 or not out.startswith("NAME"):
        problems.append(f"pool list exited {code}: {err.strip()}")
    path = POOLS_PREFIX + pool
    code, out, err = cli(env, "pool", "create", pool, "--node", node, "--path", path, "--wait")
    if code != 0:
        problems.append(f"pool create exited {code}: {err.strip()}")
    elif not (cluster.nodes[node].host_path(path) / "images").is_dir():
        problems.append(f"pool {pool} is not on {node}'s disk")
    return problems


def test_killing_either_of_two_replicas_leaves_every_node_ready(tmp_path: Path, reliability):
    if not pg.base_url():
        pytest.skip(f"{pg.ENV} not set")
    db_url = pg.create_database()
    a = CpProcess(tmp_path / "api-a", database_url=db_url, env=CP_ENV)
    b = CpProcess(tmp_path / "api-b", database_url=db_url, env=CP_ENV)
    survived: list[str] = []
    problems: dict[str, list[str]] = {}
    created: list[str] = []
    try:
        a.start()
        b.start()
        urls = [a.url, b.url]
        with Cluster(cluster_target(a), tmp_path) as cluster:
            cluster.add_node("ha-1", servers=urls)
            cluster.add_node("ha-2", servers=urls)
            cluster.add_node("ha-3", config={"control_plane": {"urls": urls}})
            for name in NODES:
                cluster.wait_node_status(name, "ready", timeout=30)
                cluster.wait_pool_status(name, "default", "ready", timeout=30)
            env = {k: v for k, v in os.environ.items() if not k.startswith("OTHERIX_")}
            env.update({"HOME": str(tmp_path / "home"), "OTHERIX_CONFIG": str(tmp_path / "cfg")})
            code, out, err = cli(
                env, "config", "add", "cluster", "--name", "ha", "--server", a.url,
                "--server", b.url, "--login", ADMIN[0], "--password", ADMIN[1],
            )  # fmt: skip
            assert code == 0, err
            assert out.startswith(f'cluster "ha" added: {a.url}, {b.url} as admin')

            for killed, survivor in ((a, b), (b, a)):
                label = "A" if killed is a else "B"
                with survivor.client() as client:
                    before = nodes_by_name(client)
                assert all(before[n]["status"] == "ready" for n in NODES), before
                beats = served(survivor, "/v1/nodes/{name}/heartbeat")
                watches = served(survivor, "/v1/nodes/{name}/watch")
                killed.kill(signal.SIGKILL)
                found = watch_through(survivor, before)
                if served(survivor, "/v1/nodes/{name}/heartbeat") < beats + len(NODES):
                    found.append("the survivor did not take over the heartbeats")

                def took_the_watches(s: CpProcess = survivor, w: float = watches) -> bool:
                    return served(s, "/v1/nodes/{name}/watch") > w

                wait_until(
                    took_the_watches,
                    10,
                    "a watch answered by the survivor",
                )
                pool = f"ha-after-{label.lower()}"
                found += cli_round(env, cluster, "ha-1", pool)
                created.append(pool)
                problems[label] = found
                if not found:
                    survived.append(label)
                killed.start()  # back, for the other round and a clean stop
        with a.client() as client:
            names = {p["name"] for p in list_pools(client)}
        missing = [p for p in created if p not in names]
        report = store_problems(db_url)
    finally:
        for cp in (a, b):
            cp.stop()
        pg.drop_database(db_url)

    reliability.record(
        "kill -9 of one of two API replicas (PostgreSQL), agents and CLI with both URLs",
        injected=2,
        survived=len(survived),
        checked=len(NODES) * 2 + len(created),
        lost=len(missing),
        detail=(
            f"{len(NODES)} agents (two with --server A --server B, one with control_plane.urls) "
            f"read through the survivor for {3 * STALE:g} s after each kill; "
            "pool list and pool create --wait through a two-URL CLI context"
        ),
    )
    assert problems == {"A": [], "B": []}, problems
    assert missing == []
    assert report.problems == []
    assert re.fullmatch(r"[AB],[AB]", ",".join(survived))
