"""A deleted node's agent stops (issue 13 item 9) instead of retrying forever.

Unit: the loop (``otherix.agent.daemon``) with a stub control plane that
answers ``401`` reason ``node_deleted``: one error log that says the node was
removed and how to re-join, then :class:`NodeRemoved`, no retry. Any other 401
keeps the slow retry (``tests/agent/test_agent_daemon.py``).

Real: an ``otherix-agent serve`` process from the harness; ``DELETE
/v1/nodes/{name}`` makes it exit with status 78 and the message in its log,
and it sends nothing after that.
"""

from __future__ import annotations

import logging
import re
import time

import pytest

from otherix.agent.daemon import EXIT_NODE_REMOVED, Daemon, LoopConfig, NodeRemoved
from otherix.agent.fs import ProtectedRoots
from otherix.agent.pools import PoolReconciler
from otherix.agent.report import PoolState
from otherix.agent.runtime import StopToken
from otherix.agent.state import NodeState
from otherix.agent.tasks import TaskRunner
from otherix.client.errors import api_error
from support.clock import FakeClock
from support.harness import FAST, Cluster, ControlPlane, wait_until

NODE = NodeState(
    server="http://cp", node_name="n1", node_id="id-1", credential="otxn_x", architecture="amd64"
)
REMOVED = api_error(
    401,
    "unauthenticated",
    "node n1 was removed from the cluster",
    {"reason": "node_deleted", "node": "n1"},
)


class Refusing:
    """A control plane that answers every call with ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    def heartbeat(self, node, report):
        self.calls += 1
        raise self.error

    def watch(self, node, revision, timeout):
        self.calls += 1
        raise self.error

    def update_task(self, node, task_id, update):
        self.calls += 1
        raise self.error


def _daemon(tmp_path, client) -> tuple[Daemon, FakeClock]:
    clock = FakeClock(monotonic_start=0.0)
    pools = PoolState(
        PoolReconciler(protected=ProtectedRoots()), allowed_prefixes=[f"{tmp_path}/pools/"]
    )
    daemon = Daemon(
        client=client,
        pools=pools,
        tasks=TaskRunner(pools),
        state=NODE,
        clock=clock,
        stop=StopToken(),
        config=LoopConfig(heartbeat_interval=30),
        agent_version="0.1.0",
    )
    return daemon, clock


def test_node_deleted_ends_the_loop_with_one_message(tmp_path, caplog):
    cp = Refusing(REMOVED)
    daemon, clock = _daemon(tmp_path, cp)
    with caplog.at_level(logging.INFO, "otherix.agent.daemon"), pytest.raises(NodeRemoved):
        daemon.run()
    assert cp.calls == 1  # no retry
    assert clock.sleeps == []
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    text = record.getMessage()
    assert "node n1 was removed from the cluster" in text
    assert "will not retry" in text
    assert "otherix node join-token create" in text
    assert "otherix-agent bootstrap --force --server URL --join-token TOKEN --node-name n1" in (
        text
    )


def test_an_unknown_credential_is_still_retried(tmp_path):
    cp = Refusing(api_error(401, "unauthenticated", "unknown", {"reason": "credential_unknown"}))
    daemon, clock = _daemon(tmp_path, cp)
    for _ in range(3):
        daemon.step()  # never raises
    assert cp.calls == 3
    assert len(clock.sleeps) == 3


def _heartbeat_answers(cluster: Cluster, status: int) -> float:
    """``otherix_http_requests_total`` for agent routes answered ``status``."""
    text = cluster.admin.get("/metrics").text
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"otherix_http_requests_total\{(.*)\} (\S+)$", line)
        if m and "/v1/nodes/{name}/" in m.group(1) and f'status="{status}"' in m.group(1):
            total += float(m.group(2))
    return total


@pytest.mark.slow
def test_a_deleted_nodes_agent_exits_78_and_stops_heartbeating(tmp_path):
    cp = ControlPlane(tmp_path / "api", overrides=FAST).start()
    try:
        with Cluster(cp, tmp_path) as cluster:
            agent = cluster.add_node("leaving")
            cluster.wait_pool_status("leaving", "default", "ready", timeout=15)
            # the node holds the only instance of the cluster default: unset it first
            assert cluster.admin.delete("/v1/cluster/default-pool").status_code == 204
            r = cluster.admin.delete("/v1/nodes/leaving")
            assert r.status_code == 200, r.text
            (deleted,) = r.json()["deleted_pools"]
            assert deleted["name"] == "default"
            assert agent.proc is not None
            code = agent.proc.wait(timeout=30)
            assert code == EXIT_NODE_REMOVED == 78
            log = agent.logs()
            assert "node leaving was removed from the cluster" in log
            assert "will not retry" in log
            assert "otherix-agent bootstrap --force" in log
            assert log.count("was removed from the cluster") == 1
            refused = _heartbeat_answers(cluster, 401)
            assert 1 <= refused <= 3  # the watch and/or a heartbeat, then nothing
            time.sleep(3 * FAST["agents.heartbeat_interval"])  # three heartbeat intervals
            assert _heartbeat_answers(cluster, 401) == refused
            wait_until(lambda: not agent.alive, 1, "the agent to be gone")
            # the pool directory is left on disk (files are never deleted)
            assert agent.host_path(deleted["path"]).is_dir()
    finally:
        cp.stop()
