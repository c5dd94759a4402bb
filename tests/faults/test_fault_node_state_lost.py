"""A node loses its enrolment state (``node.json`` deleted, then damaged) and
comes back as itself, with the real CLI and real agent processes.

On a harness cluster, ``node-a`` has its default pool, a pool ``data`` and a
VM whose disk lives on ``data``. Its agent is stopped and ``node.json`` is
deleted. Then, as an operator would:

1. ``otherix-agent serve`` refuses to start and names the way back
   (``otherix node reset-credentials`` and ``bootstrap --rejoin-token``);
2. every bad token is refused by ``otherix-agent bootstrap --rejoin-token``
   with a clear message, and changes nothing: no ``node.json`` is written,
   the old credential still works, the node and its pools are as they were
   (a wrong token; another node's token with ``--node-name node-a``; an
   expired token, with the control plane's wall clock stepped past its
   expiry through the clock seam; a deleted node's token);
3. ``otherix node reset-credentials node-a`` and ``otherix-agent bootstrap
   --rejoin-token`` give the node new credentials: the same node id, the old
   credential answers 401 at once, the agent starts, the node and both pools
   are ``ready``, the VM disk's bytes are untouched; the used token is refused
   a second time and changes nothing either.

The same recovery then runs for a damaged ``node.json`` (cut in half).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from otherix.api.clock import SystemClock
from support.cli import cli_env, run
from support.harness import FAST, NODE_ROOT, AgentProc, Cluster, ControlPlane, _agent_env
from support.images import IMAGE, ImageOrigin

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NODE = "node-a"
POOL_PATH = f"{NODE_ROOT}/pools/data"


class SteppedClock(SystemClock):
    """The real clock with the wall clock set ``offset`` ahead; monotonic time untouched."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return super().now() + self.offset


def agent(node: AgentProc, *args: str) -> subprocess.CompletedProcess[str]:
    """``otherix-agent ARGS`` for this node (its data dir and config), as a process."""
    return subprocess.run(
        node.command(*args),
        capture_output=True,
        text=True,
        timeout=60,
        env=_agent_env(),
        check=False,
    )


def rejoin(node: AgentProc, url: str, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return agent(node, "bootstrap", "--server", url, "--rejoin-token", token, *extra)


def works(url: str, node: str, credential: str) -> int:
    """The status a node credential gets from a read-only agent call (an instant watch)."""
    r = httpx.get(
        f"{url}/v1/nodes/{node}/watch",
        params={"revision": 0, "timeout": 0},
        headers={"Authorization": f"Bearer {credential}"},
        timeout=15,
    )
    return r.status_code


def snapshot(cluster: Cluster) -> tuple:
    node = cluster.node(NODE)
    pools = sorted((p["id"], p["name"], p["path"]) for p in cluster.pools(NODE))
    return node["id"], pools


def reset(env: dict[str, str], node: str, *extra: str) -> str:
    made = json.loads(run(env, "node", "reset-credentials", node, *extra, "-o", "json").stdout)
    assert made["node"] == node
    token = str(made["token"])
    assert token.startswith("otxr_")
    return token


def test_a_node_that_lost_its_state_comes_back_as_itself(tmp_path: Path, reliability) -> None:
    image = tmp_path / IMAGE
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    cp = ControlPlane(tmp_path / "api", overrides=FAST).start()
    refusals: list[str] = []
    recovered: list[str] = []
    checked = lost = 0
    try:
        with (
            ImageOrigin(image) as images,
            Cluster(
                cp, tmp_path, agent_config={"images": {"allow_loopback_and_link_local": True}}
            ) as cluster,
        ):
            node = cluster.add_node(NODE)
            cluster.add_node("node-b")
            cluster.wait_pool_status(NODE, "default", "ready", timeout=20)
            env = cli_env(cp.url, cp.admin_token, tmp_path)
            run(env, "pool", "create", "data", "--node", NODE, "--path", POOL_PATH, "--wait")
            run(env, "vm", "create", "web-1", "--image-url", images.url, "--pool", "data",
                "--node", NODE, "--disk-gib", "1", "--no-start", "--wait")  # fmt: skip
            vm = json.loads(run(env, "vm", "get", "web-1", "-o", "json").stdout)
            disk = node.host_path(vm["disks"][0]["file_path"])
            disk_sha = hashlib.sha256(disk.read_bytes()).hexdigest()
            before = snapshot(cluster)
            state_file = node.data_dir / "node.json"

            for fault in ("deleted", "damaged"):
                old = json.loads(state_file.read_text())
                node.stop()
                if fault == "deleted":
                    state_file.unlink()
                else:
                    text = state_file.read_text()
                    state_file.write_text(text[: len(text) // 2])
                damaged = state_file.read_text() if state_file.exists() else None

                # 1. serve refuses and names the way back
                served = agent(node, "serve")
                assert served.returncode == 1, served.stderr
                assert "otherix node reset-credentials NODE" in served.stderr
                assert "otherix-agent bootstrap --server URL --rejoin-token TOKEN" in served.stderr

                # 2. bad tokens: a clear error each, and nothing changed
                other = reset(env, "node-b")
                gone_node = cluster.add_node(f"doomed-{fault}", start=False)
                doomed = reset(env, gone_node.name)
                run(env, "node", "delete", gone_node.name, "--force")
                short = reset(env, NODE, "--ttl", "1m")  # made before the clock step
                assert cp.server is not None
                cp.server.set_clock(SteppedClock(timedelta(minutes=2)))
                try:
                    expired = rejoin(node, cp.url, short)
                finally:
                    cp.server.set_clock(SystemClock())
                bad = {
                    "unknown re-enrol token": rejoin(node, cp.url, "otxr_" + "w" * 43),
                    "this re-enrol token is for node 'node-b', not 'node-a'": rejoin(
                        node, cp.url, other, "--node-name", NODE
                    ),
                    "re-enrol token has expired": expired,
                    "the node of this re-enrol token has been deleted": rejoin(
                        node, cp.url, doomed
                    ),
                }
                for message, done in bad.items():
                    assert done.returncode == 1, (message, done.stdout, done.stderr)
                    assert done.stderr.startswith(f"error: {message}"), done.stderr
                    now = state_file.read_text() if state_file.exists() else None
                    unchanged = (
                        now == damaged
                        and works(cp.url, NODE, old["credential"]) == 200
                        and snapshot(cluster) == before
                    )
                    checked += 1
                    if unchanged:
                        refusals.append(f"{fault}: {message}")
                assert works(cp.url, "node-b", cluster.nodes["node-b"].state()["credential"]) == 200

                # 3. the way back
                token = reset(env, NODE)
                done = rejoin(node, cp.url, token)
                assert done.returncode == 0, done.stderr
                assert done.stdout.startswith(f"re-enrolled node {NODE} ({before[0]})")
                new = json.loads(state_file.read_text())
                assert new["node_id"] == old["node_id"] == before[0]
                assert new["servers"] == [cp.url]
                assert new["credential"] != old["credential"]
                assert works(cp.url, NODE, old["credential"]) == 401
                again = rejoin(node, cp.url, token, "--force")
                assert again.returncode == 1
                assert again.stderr.startswith("error: re-enrol token has been used already")
                assert json.loads(state_file.read_text()) == new
                node.start()
                cluster.wait_node_status(NODE, "ready", timeout=20)
                for pool in ("default", "data"):
                    cluster.wait_pool_status(NODE, pool, "ready", timeout=20)
                intact = hashlib.sha256(disk.read_bytes()).hexdigest() == disk_sha
                vm_after = json.loads(run(env, "vm", "get", "web-1", "-o", "json").stdout)
                checked += 3  # node id, the two pools, the disk
                if snapshot(cluster) == before and intact and vm_after["node"] == NODE:
                    recovered.append(fault)
                else:
                    lost += 1
    finally:
        cp.stop()

    reliability.record(
        "node.json lost or damaged, node re-enrolled with a re-enrol token",
        injected=2,
        survived=len(recovered),
        checked=checked,
        lost=lost,
        detail=(
            f"{len(refusals)} bad tokens (wrong, other node's, expired by a clock step, "
            "deleted node's) refused with nothing changed; VM disk bytes compared"
        ),
    )
    assert recovered == ["deleted", "damaged"]
    assert len(refusals) == 8, refusals
    assert lost == 0
