"""A real two-minute control-plane outage with three agents running.

The control plane is an ``otherix-api serve`` process (``CpProcess``) on
SQLite; the agents reach it through ``CountingProxy``, which timestamps every
TCP connection per client address. Each agent runs in its own network
namespace (harness ``net_ns=True``, root only), so its connections come from
its own address and can be told apart from the test's own requests.

The agents run with the shipped backoff settings (``control_plane.backoff_initial``
0.5 s doubling up to ``backoff_max`` 30 s, full jitter: the n-th consecutive
failure waits uniform [0, min(30, 0.5 * 2**n)] s; ``otherix.agent.backoff``).
Over 120 s that is about 14 attempts per agent on average (about 19 for an
agent restarted half-way, which starts its ramp again; simulated), against
the 120 a fixed one-second retry would make. The test requires:

- at most a third of the fixed-retry count per agent, whatever the jitter drew
  (exceeding it with the real schedule has odds below 1e-10);
- every gap between consecutive attempts within the schedule's ceiling for that
  attempt plus 2 s of slack (request time, one heartbeat interval of loop
  overhead), including the last gap, the one that reconnects: an agent never
  waits longer than the cap and never stops retrying;
- one "control plane unreachable" warning per agent process, not one per retry.

The control plane is SIGKILLed, stays down for 120 s and comes back on the same
port and store. Meanwhile two things happen on the nodes: one agent is restarted
(a node reboot while the control plane is away), and on another node a pool's
``scratch/`` directory is removed, which the agent restores from the desired
state it holds, without the control plane. After the restart every agent must
reconnect with a fresh heartbeat, its node ``ready``, the pools it had still
``ready`` with the same ids, and a pool created right after the restart must
reach ``ready`` on every node and exist on its disk.
"""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime
from functools import partial

import pytest
from cphelpers import POOLS_PREFIX, CountingProxy, CpProcess, cluster_target

from otherix.agent.settings import ControlPlaneSection
from support.harness import FAST, AgentProc, Cluster, wait_until

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

OUTAGE = 120.0
NODES = ["out-1", "out-2", "out-3"]
REBOOTED, DAMAGED = "out-3", "out-1"
SHIPPED = ControlPlaneSection()  # the agent's defaults: backoff 0.5 s doubling to 30 s
SLACK = 2.0
#: FAST liveness, but the production grace before ``gone`` (longer than the outage).
CP_ENV = {
    **{f"OTHERIX_{k.upper().replace('.', '__')}": str(v) for k, v in FAST.items()},
    "OTHERIX_WORKERS__HEARTBEAT__GONE_GRACE": "300",
}


def ceiling(failures: int) -> float:
    """The longest wait the agent may draw after ``failures`` consecutive failures."""
    return float(min(SHIPPED.backoff_max, SHIPPED.backoff_initial * 2**failures))


def gaps_over_schedule(times: list[float]) -> list[str]:
    """Gaps between consecutive attempts (the last one being the reconnect) longer
    than the schedule allows. The i-th failed attempt waits at most ceiling(i + 1):
    one failure may already be counted for the connection the kill cut."""
    out = []
    for i in range(len(times) - 1):
        gap = times[i + 1] - times[i]
        if gap > ceiling(i + 1) + SLACK:
            out.append(f"attempt {i}->{i + 1}: {gap:.1f}s > {ceiling(i + 1) + SLACK:.1f}s")
    return out


def _pool(cluster: Cluster, node: str, name: str) -> None:
    r = cluster.admin.post(
        "/v1/storage-pools",
        json={"node": node, "name": name, "type": "local_dir", "path": POOLS_PREFIX + name},
    )
    assert r.status_code == 201, r.text


def _sleep_until(deadline: float) -> None:
    time.sleep(max(0.0, deadline - time.monotonic()))


def _fresh_and_ready(cluster: Cluster, name: str, since: datetime) -> bool:
    node = cluster.node(name)
    beat = node["last_heartbeat_at"]
    return (
        node["status"] == "ready"
        and beat is not None
        and datetime.fromisoformat(beat.replace("Z", "+00:00")) >= since
    )


@pytest.mark.timeout(OUTAGE + 240)
def test_agents_back_off_through_a_2_minute_outage_and_reconverge(tmp_path, reliability) -> None:
    cp = CpProcess(tmp_path / "api", env=CP_ENV).start()
    proxy = CountingProxy(cp.port)
    agent_config = {
        "control_plane": {
            "backoff_initial": SHIPPED.backoff_initial,
            "backoff_max": SHIPPED.backoff_max,
        }
    }
    try:
        with Cluster(
            cluster_target(cp, host="0.0.0.0", port=proxy.port), tmp_path, agent_config=agent_config
        ) as cluster:
            agents: dict[str, AgentProc] = {n: cluster.add_node(n, net_ns=True) for n in NODES}
            ips = {n: a.netns.ns_ip for n, a in agents.items() if a.netns is not None}
            for name in NODES:
                cluster.wait_node_status(name, "ready", timeout=20)
                _pool(cluster, name, "before")
            for name in NODES:
                for pool in ("default", "before"):
                    cluster.wait_pool_status(name, pool, "ready", timeout=20)
            ids_before = {n: {p["name"]: p["id"] for p in cluster.pools(n)} for n in NODES}
            seen_before = {n: len(proxy.from_ip(ip)) for n, ip in ips.items()}

            # --- the outage -----------------------------------------------------------
            t_kill = time.monotonic()
            cp.kill(signal.SIGKILL)
            scratch = agents[DAMAGED].host_path(POOLS_PREFIX + "before") / "scratch"
            _sleep_until(t_kill + 20)
            scratch.rmdir()
            restored = wait_until(scratch.is_dir, 30, "the agent to restore scratch/ on its own")
            _sleep_until(t_kill + OUTAGE / 2)
            agents[REBOOTED].stop()
            t_reboot = time.monotonic()
            agents[REBOOTED].start()
            _sleep_until(t_kill + OUTAGE)
            t_start = time.monotonic()
            restarted_at = datetime.now(UTC)
            cp.start()
            t_up = time.monotonic()

            # --- reconnect and converge ------------------------------------------------
            for name in NODES:
                wait_until(
                    partial(_fresh_and_ready, cluster, name, restarted_at),
                    SHIPPED.backoff_max + 30,
                    f"{name} to heartbeat again and be ready",
                )
            for name in NODES:
                _pool(cluster, name, "after")
            converged = []
            for name in NODES:
                cluster.wait_pool_status(name, "after", "ready", timeout=20)
                pools = {p["name"]: p for p in cluster.pools(name)}
                on_disk = all(
                    (agents[name].host_path(POOLS_PREFIX + p) / sub).is_dir()
                    for p in ("default", "before", "after")
                    for sub in ("images", "scratch", "vms")
                )
                same = all(pools[p]["id"] == i for p, i in ids_before[name].items() if p in pools)
                ready = all(p["reconciliation_status"] == "ready" for p in pools.values())
                if on_disk and same and ready and set(pools) == {"default", "before", "after"}:
                    converged.append(name)
            missing = sum(1 for n in NODES for p in ids_before[n] if cluster.pool(n, p) is None)
            warnings = {n: a.logs().count("control plane unreachable") for n, a in agents.items()}
    finally:
        proxy.close()
        cp.stop()

    # --- what the agents did while the control plane was down -------------------------------
    attempts: dict[str, list[float]] = {}
    over: dict[str, list[str]] = {}
    leaked: dict[str, int] = {}
    lag: dict[str, float] = {}  # reconnect minus the moment the CP answered again
    for name, ip in ips.items():
        conns = proxy.from_ip(ip, since=t_kill)
        leaked[name] = sum(1 for c in conns if c.forwarded and c.at < t_start)
        reconnect = next((c.at for c in conns if c.forwarded), None)
        if reconnect is None:
            attempts[name], over[name] = [], ["never reconnected"]
            continue
        refused = [c.at for c in conns if not c.forwarded and c.at < reconnect]
        attempts[name] = refused
        lag[name] = round(reconnect - t_up, 1)
        if name == REBOOTED:  # two processes, two ramps
            old = [t for t in refused if t < t_reboot]
            new = [t for t in refused if t >= t_reboot]
            over[name] = gaps_over_schedule(old) + gaps_over_schedule([*new, reconnect])
        else:
            over[name] = gaps_over_schedule([*refused, reconnect])
    outage = t_up - t_kill
    fixed_retry = outage / 1.0
    counts = {n: len(a) for n, a in attempts.items()}
    reliability.record(
        "control plane down 2 minutes with 3 agents",
        injected=1,
        survived=len(converged),
        checked=len(NODES) + sum(len(ids) + 1 for ids in ids_before.values()),
        lost=missing,
        detail=(
            f"agents' connection attempts during the outage "
            f"{'/'.join(str(counts[n]) for n in NODES)} (a fixed 1 s retry: {fixed_retry:.0f}); "
            "one agent restarted and one pool directory damaged meanwhile"
        ),
    )
    print(f"outage {outage:.1f}s; attempts {counts}; reconnected {lag}s after the CP was up")

    assert all(seen_before[n] >= 1 for n in NODES), "the agents did not go through the proxy"
    assert leaked == dict.fromkeys(NODES, 0), "connections got through while the CP was down"
    assert restored
    for name in NODES:
        assert counts[name] >= 2, f"{name} stopped retrying"
        assert counts[name] <= fixed_retry / 3, f"{name}: {counts[name]} attempts, no backoff"
    assert over == {n: [] for n in NODES}, "waits longer than the backoff schedule allows"
    assert warnings == {n: 2 if n == REBOOTED else 1 for n in NODES}, warnings
    assert missing == 0
    assert converged == NODES
