"""Heartbeat throughput and latency, and watch wake-up latency.

N simulated agents (default 1,000 nodes with 10 pools each, state mostly
unchanged) heartbeat against one control plane on SQLite, as fast as a
bounded number of concurrent connections allows, for a fixed time. Reported:
heartbeats/s, p50/p99 latency, control-plane CPU and RSS. Then watch
wake-up: K nodes hold a watch open, a pool is created on each, and the time
from the create request to the watch's answer is measured.

Targets (issue 3): >= 1,000 heartbeats/s at p99 <= 100 ms; watch wake-up
p99 <= 100 ms. Baseline in the same run: ``GET /healthz`` through the same
client and server (the floor of this HTTP stack on this machine).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import headline, machine, seed_nodes, start_control_plane, summary, table


def _report(node: dict[str, Any], pools: int, full: bool) -> dict[str, Any]:
    reports = [
        {
            "name": f"pool-{j}",
            "reconciliation_status": "ready",
            "capacity_bytes": 10**12,
            "available_bytes": 5 * 10**11,
        }
        for j in range(pools)
    ]
    digest = hashlib.sha256(json.dumps(reports, sort_keys=True).encode()).hexdigest()
    return {
        "agent_version": "bench",
        "architecture": "amd64",
        "revision": 1,
        "pools": reports if full else None,
        "digest": digest,
    }


async def _prime(url: str, nodes: list[dict[str, Any]], pools: int) -> None:
    """Each node's first report is full (as after an agent start)."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        sem = asyncio.Semaphore(32)

        async def one(node: dict[str, Any]) -> None:
            async with sem:
                r = await client.post(
                    f"/v1/nodes/{node['name']}/heartbeat",
                    json=_report(node, pools, True),
                    headers={"Authorization": f"Bearer {node['credential']}"},
                )
                r.raise_for_status()

        await asyncio.gather(*(one(n) for n in nodes))


async def _watch_wakeups(
    url: str, token: str, nodes: list[dict[str, Any]], data_dir: Path
) -> list[float]:
    out: list[float] = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for k, node in enumerate(nodes):
            auth = {"Authorization": f"Bearer {node['credential']}"}
            r = await client.get(
                f"/v1/nodes/{node['name']}/watch",
                params={"revision": 0, "timeout": 0},
                headers=auth,
            )
            revision = r.json()["desired"]["revision"]
            watch = asyncio.create_task(
                client.get(
                    f"/v1/nodes/{node['name']}/watch",
                    params={"revision": revision, "timeout": 20},
                    headers=auth,
                )
            )
            await asyncio.sleep(0.05)  # let the watch reach the server and park
            t = time.perf_counter()
            created = await client.post(
                "/v1/storage-pools",
                json={
                    "node": node["name"],
                    "name": f"wake-{k}",
                    "path": f"{data_dir}/pools/wake-{k}",
                },
                headers={"Authorization": f"Bearer {token}"},
            )
            created.raise_for_status()
            answer = await watch
            out.append(time.perf_counter() - t)
            assert answer.json()["changed"] is True
    return out


def _wrk(
    url: str, nodes_file: Path | None, path: str, seconds: float, connections: int
) -> dict[str, float]:
    """Drive load with wrk (C): the Python clients saturate before the server does."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", "--latency"]
    env = dict(os.environ)
    if nodes_file is not None:
        cmd += ["-s", str(Path(__file__).with_name("heartbeat.lua"))]
        env["OTHERIX_BENCH_NODES"] = str(nodes_file)
    else:
        cmd += ["-s", str(Path(__file__).with_name("summary.lua"))]
    out = subprocess.run(
        [*cmd, url + path], capture_output=True, text=True, env=env, check=True
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("OTHERIX "))
    reqs, status_err, dur_us, p50_us, p99_us, sock_err = line.split()[1:]
    return {
        "per_s": int(reqs) / (int(dur_us) / 1e6),
        "p50_ms": float(p50_us) / 1000,
        "p99_ms": float(p99_us) / 1000,
        "errors": int(status_err) + int(sock_err),
        "requests": int(reqs),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--pools", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--watchers", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="200 nodes, 5 s, 20 watchers")
    args = ap.parse_args(argv)
    if args.quick:
        args.nodes, args.seconds, args.watchers = 200, 5.0, 20
    if shutil.which("wrk") is None:
        raise SystemExit("bench/heartbeat.py needs wrk: apt-get install -y wrk")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        nodes = seed_nodes(f"sqlite:///{data}/otherix.db", args.nodes, args.pools)
        nodes_file = data / "nodes.txt"
        nodes_file.write_text(
            "".join(
                f"{n['name']} {n['credential']} {json.dumps(_report(n, args.pools, False))}\n"
                for n in nodes
            )
        )
        cp = start_control_plane(data)
        try:
            asyncio.run(_prime(cp.url, nodes, args.pools))
            base = _wrk(cp.url, None, "/healthz", min(5.0, args.seconds), args.concurrency)
            cpu0, t0 = cp.cpu_seconds(), time.perf_counter()
            hb = _wrk(cp.url, nodes_file, "", args.seconds, args.concurrency)
            wall = time.perf_counter() - t0
            cpu = (cp.cpu_seconds() - cpu0) / wall * 100
            rss = cp.rss_mib()
            wake = asyncio.run(_watch_wakeups(cp.url, cp.token(), nodes[: args.watchers], data))
        finally:
            cp.stop()
    wk = summary(wake)
    rows = [
        {
            "what": "heartbeat (unchanged state)",
            "per_s": round(hb["per_s"]),
            "p50_ms": round(hb["p50_ms"], 2),
            "p99_ms": round(hb["p99_ms"], 2),
            "target": ">= 1000/s, p99 <= 100 ms",
        },
        {
            "what": "baseline GET /healthz",
            "per_s": round(base["per_s"]),
            "p50_ms": round(base["p50_ms"], 2),
            "p99_ms": round(base["p99_ms"], 2),
            "target": "-",
        },
        {
            "what": "watch wake-up (create -> watch answer)",
            "per_s": "-",
            "p50_ms": round(wk["p50_ms"], 2),
            "p99_ms": round(wk["p99_ms"], 2),
            "target": "p99 <= 100 ms",
        },
    ]
    result = {
        "machine": machine(),
        "nodes": args.nodes,
        "pools_per_node": args.pools,
        "connections": args.concurrency,
        "errors": hb["errors"],
        "cp_cpu_percent": round(cpu),
        "cp_rss_mib": round(rss),
        "rows": rows,
        "headline": [
            headline(
                f"heartbeat, {args.nodes:,} nodes x {args.pools} pools, unchanged state",
                f"{hb['per_s']:,.0f}/s, p50 {hb['p50_ms']:.1f} ms, p99 {hb['p99_ms']:.1f} ms; "
                f"CP {round(cpu)}% CPU, {round(rss)} MiB",
                target=">= 1,000/s at p99 <= 100 ms",
                baseline=f"GET /healthz {base['per_s']:,.0f}/s, p99 {base['p99_ms']:.1f} ms",
                met=hb["per_s"] >= 1000 and hb["p99_ms"] <= 100 and hb["errors"] == 0,
            ),
            headline(
                f"watch wake-up (create -> watch answer), n={wk['n']}",
                f"p50 {wk['p50_ms']:.1f} ms, p99 {wk['p99_ms']:.1f} ms",
                target="p99 <= 100 ms",
                baseline=f"GET /healthz p50 {base['p50_ms']:.1f} ms under load",
                met=wk["p99_ms"] <= 100,
            ),
        ],
    }
    print(f"# heartbeat ({result['machine']})\n")
    print(
        f"{args.nodes} nodes x {args.pools} pools, {args.concurrency} connections (wrk, 2 threads), SQLite; load generator on the same 2 cores\n"
    )
    print(table(rows))
    print(
        f"\ncontrol plane: {result['cp_cpu_percent']}% CPU (100% = one core), {result['cp_rss_mib']} MiB RSS; errors: {hb['errors']}"
    )
    return result


if __name__ == "__main__":
    out = main()
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/heartbeat.json").write_text(json.dumps(out, indent=2, default=str))
