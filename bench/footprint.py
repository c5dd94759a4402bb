"""Memory footprint: RSS of the control plane at 10k nodes and 100k pools, and
of one real agent in that cluster.

The 10k agents are simulated (their rows seeded in the store, their traffic
made here): every node sends a full first report (as after an agent start),
then unchanged heartbeats for a while (wrk, all nodes in turn), then every
node holds its long-poll watch open at once (raw sockets, one per node, as
real agents do), and an admin pages through all 100k pool instances. The
control plane's RSS is sampled at each step; its peak (``VmHWM``) is the
figure. One real ``otherix-agent`` is then enrolled into the same cluster with
10 pools and measured once it has converged.

Targets (ours; the issue sets none): control plane <= 512 MiB peak at 10k
nodes / 100k pools on SQLite, agent <= 128 MiB. Baselines in the same run: an
empty control plane after the same kinds of request, and a bare Python
process importing the agent's package (the floor for any agent).
``--quick``: 1k nodes / 10k pools.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.common import (
    headline,
    machine,
    rss_mib,
    seed_nodes,
    start_agent,
    start_control_plane,
    stop_process,
    table,
)
from bench.heartbeat import _prime, _report, _wrk


def _waiters(url: str) -> int:
    text = httpx.get(f"{url}/metrics", timeout=60).raise_for_status().text
    match = re.search(r"^otherix_watch_waiters (\S+)$", text, re.MULTILINE)
    return int(float(match.group(1))) if match else -1


async def _hold_watches(
    url: str, nodes: list[dict[str, Any]], revision: int, sample: Callable[[], None]
) -> int:
    """Open one long-poll watch per node (raw HTTP/1.1, as cheap as a client gets),
    wait until the server counts them all parked (``otherix_watch_waiters``), call
    ``sample()``, then close them. Returns the most the server held at once."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    writers: list[asyncio.StreamWriter] = []
    sem = asyncio.Semaphore(256)

    async def open_one(node: dict[str, Any]) -> None:
        async with sem:
            _, writer = await asyncio.open_connection(host, port)
            writer.write(
                (
                    f"GET /v1/nodes/{node['name']}/watch?revision={revision}&timeout=120 "
                    f"HTTP/1.1\r\nHost: {host}\r\n"
                    f"Authorization: Bearer {node['credential']}\r\n\r\n"
                ).encode()
            )
            await writer.drain()
            writers.append(writer)

    await asyncio.gather(*(open_one(n) for n in nodes))
    most, deadline = 0, time.monotonic() + 60
    while time.monotonic() < deadline:
        most = max(most, await asyncio.to_thread(_waiters, url))
        if most >= len(nodes):
            break
        await asyncio.sleep(0.5)
    sample()
    for w in writers:
        w.close()
    return most


def _page_all(url: str, token: str) -> int:
    seen, cursor = 0, None
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        while True:
            params: dict[str, Any] = {"limit": 500}
            if cursor:
                params["cursor"] = cursor
            body = c.get("/v1/storage-pools", params=params).raise_for_status().json()
            seen += len(body["data"])
            cursor = body["meta"]["next_cursor"]
            if not cursor:
                return seen


def _bare_python_rss() -> float:
    code = (
        "import otherix.agent.main, httpx, pydantic, yaml\n"
        "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=10_000)
    ap.add_argument("--pools", type=int, default=10, help="pools per node")
    ap.add_argument("--seconds", type=float, default=10.0, help="unchanged heartbeats for")
    ap.add_argument("--quick", action="store_true", help="1k nodes, 5 s of heartbeats")
    args = ap.parse_args(argv)
    if args.quick:
        args.nodes, args.seconds = 1_000, 5.0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.nodes + 1024:  # one socket per watching node, both ends
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * args.nodes + 4096), hard))
    samples: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # Baseline: an empty control plane after a login and a pool list.
        empty = start_control_plane(work / "empty")
        try:
            _page_all(empty.url, empty.token())
            empty_rss = empty.rss_mib()
        finally:
            empty.stop()

        data = work / "api"
        t0 = time.perf_counter()
        nodes = seed_nodes(f"sqlite:///{data}/otherix.db", args.nodes, args.pools)
        seed_s = time.perf_counter() - t0
        cp = start_control_plane(data)
        agent = None
        try:
            pid = cp.proc.pid
            samples["started"] = cp.rss_mib()
            t0 = time.perf_counter()
            asyncio.run(_prime(cp.url, nodes, args.pools))
            prime_s = time.perf_counter() - t0
            samples["after full reports"] = cp.rss_mib()
            nodes_file = work / "nodes.txt"
            nodes_file.write_text(
                "".join(
                    f"{n['name']} {n['credential']} {json.dumps(_report(n, args.pools, False))}\n"
                    for n in nodes
                )
            )
            hb = _wrk(cp.url, nodes_file, "", args.seconds, 32)
            samples["after unchanged heartbeats"] = cp.rss_mib()
            r = httpx.get(
                f"{cp.url}/v1/nodes/{nodes[0]['name']}/watch",
                params={"revision": 0, "timeout": 0},
                headers={"Authorization": f"Bearer {nodes[0]['credential']}"},
                timeout=60,
            )
            revision = int(r.raise_for_status().json()["desired"]["revision"])
            parked = asyncio.run(
                _hold_watches(
                    cp.url,
                    nodes,
                    revision,
                    lambda: samples.__setitem__(f"{len(nodes):,} watches parked", cp.rss_mib()),
                )
            )
            token = cp.token()
            listed = _page_all(cp.url, token)
            samples[f"after paging {listed:,} pools"] = cp.rss_mib()
            cp_peak = rss_mib(pid, "VmHWM")

            # One real agent in this cluster, with 10 pools of its own.
            agent = start_agent(cp, token, work, "bench-agent")
            with httpx.Client(base_url=cp.url, headers={"Authorization": f"Bearer {token}"}) as c:
                for j in range(10):
                    c.post(
                        "/v1/storage-pools",
                        json={"node": "bench-agent", "name": f"a{j}", "path": f"{data}/pools/a{j}"},
                    ).raise_for_status()
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    body = c.get("/v1/storage-pools", params={"node": "bench-agent"}).json()
                    ready = {
                        p["name"] for p in body["data"] if p["reconciliation_status"] == "ready"
                    }
                    if {f"a{j}" for j in range(10)} <= ready:
                        break
                    time.sleep(0.2)
                else:
                    log = (work / "agent-bench-agent.log").read_text()[-3000:]
                    raise RuntimeError(f"the agent's pools did not become ready: {body}\n{log}")
            time.sleep(3)  # a few more heartbeats and watch rounds
            agent_rss, agent_peak = rss_mib(agent.pid), rss_mib(agent.pid, "VmHWM")
        finally:
            if agent is not None:
                stop_process(agent)
            cp.stop()
    bare = _bare_python_rss()
    pools_total = args.nodes * args.pools
    rows = [{"control plane": k, "rss_mib": round(v)} for k, v in samples.items()]
    rows.append({"control plane": "peak (VmHWM)", "rss_mib": round(cp_peak)})
    result = {
        "machine": machine(),
        "nodes": args.nodes,
        "pools": pools_total,
        "seed_s": round(seed_s, 1),
        "first_reports_per_s": round(args.nodes / prime_s),
        "heartbeats_per_s": round(hb["per_s"]),
        "heartbeat_errors": hb["errors"],
        "watches_parked": parked,
        "pools_listed": listed,
        "cp_samples_mib": {k: round(v, 1) for k, v in samples.items()},
        "cp_peak_mib": round(cp_peak, 1),
        "cp_empty_mib": round(empty_rss, 1),
        "agent_rss_mib": round(agent_rss, 1),
        "agent_peak_mib": round(agent_peak, 1),
        "bare_python_mib": round(bare, 1),
        "rows": rows,
        "headline": [
            headline(
                f"control plane RSS, {args.nodes:,} nodes / {pools_total:,} pools "
                "(reports, heartbeats, a watch per node, paging all pools)",
                f"peak {cp_peak:.0f} MiB ({parked:,} watches parked at once; "
                f"{listed:,} pools listed)",
                target="<= 512 MiB (ours)",
                baseline=f"empty control plane {empty_rss:.0f} MiB",
                met=cp_peak <= 512 and parked == args.nodes and listed >= pools_total,
            ),
            headline(
                f"agent RSS, 10 pools + the default, in the {args.nodes:,}-node cluster",
                f"{agent_rss:.0f} MiB (peak {agent_peak:.0f} MiB)",
                target="<= 128 MiB (ours)",
                baseline=f"bare python importing the agent {bare:.0f} MiB",
                met=agent_peak <= 128,
            ),
        ],
    }
    print(f"# footprint ({result['machine']})\n")
    print(
        f"{args.nodes:,} simulated nodes x {args.pools} pools on SQLite (seeded in {seed_s:.1f} s); "
        f"first reports {args.nodes / prime_s:,.0f}/s; "
        f"{hb['per_s']:,.0f} heartbeats/s during the unchanged phase, {hb['errors']} errors. "
        "Pools listed beyond nodes x pools are default pools: a node whose first report "
        "came after the 90 s liveness threshold was marked unreachable, then promoted "
        "and given the default pool, as a real late agent would be\n"
    )
    print(table(rows))
    print(
        f"\nagent: {agent_rss:.0f} MiB (peak {agent_peak:.0f}); bare python importing it: {bare:.0f} MiB"
    )
    return result


if __name__ == "__main__":
    out = main()
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/footprint.json").write_text(json.dumps(out, indent=2, default=str))
