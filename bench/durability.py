"""What ``synchronous=FULL`` costs: the same workload at FULL and at NORMAL, in
the same run, on the same filesystem.

The control plane runs as ``otherix-api serve`` (FULL, as shipped) and as
``python -m bench.sync_normal serve`` (the same server with every SQLite
connection set to NORMAL by the benchmark; production code cannot ask for
it). The sides alternate, ``--rounds`` times each, on a fresh data directory
in the system's temporary directory (``--dir`` to pick another filesystem).
Measured on each:

- N pool creates, one after the other (each one commit: FULL syncs the WAL
  every time, NORMAL only at checkpoints);
- the unchanged-state heartbeat rate (wrk, as ``bench/heartbeat.py``): reads
  only, plus the write-behind flush of last-seen times once a second;
- heartbeats that all change state (async clients), so each one writes.

Also the price of the lost-file check on the write path: ``Database.check()``
(one ``stat`` of the database path) per call, next to a bare ``os.stat`` and
to one write transaction. A write transaction makes two checks; the
unchanged-heartbeat path makes none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import headline, machine, seed_nodes, start_control_plane, summary, table
from bench.heartbeat import _prime, _report, _wrk

ROOT = Path(__file__).resolve().parents[1]


def _start(mode: str, data: Path) -> Any:
    if mode == "FULL":
        return start_control_plane(data)
    return start_control_plane(
        data,
        extra_env={"PYTHONPATH": str(ROOT)},
        command=[sys.executable, "-m", "bench.sync_normal"],
    )


def _creates(url: str, token: str, node: str, data: Path, n: int, tag: str) -> list[float]:
    out = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as c:
        for i in range(n):
            body = {"node": node, "name": f"{tag}-{i}", "path": f"{data}/pools/{tag}-{i}"}
            t = time.perf_counter()
            r = c.post("/v1/storage-pools", json=body)
            out.append(time.perf_counter() - t)
            r.raise_for_status()
    return out


async def _changing(
    url: str, nodes: list[dict[str, Any]], pools: int, seconds: float, conc: int
) -> list[float]:
    """Heartbeats whose pool reports alternate between two states: each one writes."""
    out: list[float] = []
    flip = dict.fromkeys((n["name"] for n in nodes), False)
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def worker(k: int) -> None:
            i = k
            while time.monotonic() < deadline:
                node = nodes[i % len(nodes)]
                i += conc
                flip[node["name"]] = not flip[node["name"]]
                report = _report(node, pools, True)
                for p in report["pools"]:
                    p["available_bytes"] = 4 * 10**11 if flip[node["name"]] else 5 * 10**11
                t = time.perf_counter()
                r = await client.post(
                    f"/v1/nodes/{node['name']}/heartbeat",
                    json=report,
                    headers={"Authorization": f"Bearer {node['credential']}"},
                )
                out.append(time.perf_counter() - t)
                r.raise_for_status()

        await asyncio.gather(*(worker(k) for k in range(conc)))
    return out


def _one_side(mode: str, base: Path, args: argparse.Namespace, round_: int) -> dict[str, Any]:
    data = base / f"{mode.lower()}-{round_}"
    nodes = seed_nodes(f"sqlite:///{data}/otherix.db", args.nodes, args.pools)
    nodes_file = data / "nodes.txt"
    nodes_file.write_text(
        "".join(
            f"{n['name']} {n['credential']} {json.dumps(_report(n, args.pools, False))}\n"
            for n in nodes
        )
    )
    cp = _start(mode, data)
    try:
        asyncio.run(_prime(cp.url, nodes, args.pools))
        creates = _creates(cp.url, cp.token(), nodes[0]["name"], data, args.creates, "c")
        unchanged = _wrk(cp.url, nodes_file, "", args.seconds, args.concurrency)
        t = time.perf_counter()
        changing = asyncio.run(_changing(cp.url, nodes, args.pools, args.seconds, 8))
        changing_rate = len(changing) / (time.perf_counter() - t)
    finally:
        cp.stop()
    return {
        "creates": creates,
        "unchanged": unchanged,
        "changing": changing,
        "changing_per_s": changing_rate,
    }


def _write_ms(db: Any, n: int = 200) -> float:
    from otherix.store.settings import store as qs

    times = []
    for i in range(n):
        t = time.perf_counter()
        with db.write() as conn:
            qs.put_setting(conn, "bench", str(i), datetime.now(UTC))
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _check_cost(base: Path, calls: int) -> dict[str, float]:
    """In-process: the lost-file check, and one write transaction at FULL and NORMAL."""
    from sqlalchemy import event

    from otherix.store import Database
    from otherix.store.migrate import upgrade

    out: dict[str, float] = {}
    for mode in ("FULL", "NORMAL"):
        db = Database(f"sqlite:///{base}/check-{mode}/otherix.db")
        try:
            upgrade(db)
            if mode == "NORMAL":
                event.listen(
                    db.engine, "connect", lambda c, _r: c.execute("PRAGMA synchronous=NORMAL")
                )
                db.engine.pool.dispose()  # reconnect with the hook
            out[f"write_ms_{mode}"] = _write_ms(db)
            if mode == "FULL":
                assert db.file is not None
                t = time.perf_counter()
                for _ in range(calls):
                    db.check()
                out["check_us"] = (time.perf_counter() - t) / calls * 1e6
                t = time.perf_counter()
                for _ in range(calls):
                    os.stat(db.file.path)
                out["stat_us"] = (time.perf_counter() - t) / calls * 1e6
        finally:
            db.close()
    return out


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--creates", type=int, default=200)
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--pools", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2, help="FULL/NORMAL pairs, alternating")
    ap.add_argument("--dir", type=Path, default=None, help="filesystem to run on (default: tmp)")
    ap.add_argument("--quick", action="store_true", help="50 creates, 5 s, one round")
    args = ap.parse_args(argv)
    if args.quick:
        args.creates, args.seconds, args.rounds = 50, 5.0, 1
    runs: dict[str, list[dict[str, Any]]] = {"FULL": [], "NORMAL": []}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        for r in range(args.rounds):
            for mode in ("FULL", "NORMAL"):
                runs[mode].append(_one_side(mode, base, args, r))
        cost = _check_cost(base, 100_000)
    figures: dict[str, dict[str, float]] = {}
    for mode, sides in runs.items():
        creates = summary([x for s in sides for x in s["creates"]])
        changing = summary([x for s in sides for x in s["changing"]])
        figures[mode] = {
            "create_p50_ms": creates["p50_ms"],
            "create_p99_ms": creates["p99_ms"],
            "creates_per_s": 1000 / creates["mean_ms"],
            "hb_per_s": _median([s["unchanged"]["per_s"] for s in sides]),
            "hb_p99_ms": _median([s["unchanged"]["p99_ms"] for s in sides]),
            "hb_write_per_s": _median([s["changing_per_s"] for s in sides]),
            "hb_write_p99_ms": changing["p99_ms"],
        }
    full, normal = figures["FULL"], figures["NORMAL"]
    rows = [
        {
            "what": what,
            "FULL": f"{full[k]:,.1f}",
            "NORMAL (same run)": f"{normal[k]:,.1f}",
            "FULL / NORMAL": f"{full[k] / normal[k]:.2f}",
        }
        for what, k in (
            ("pool create, sequential, p50 ms", "create_p50_ms"),
            ("pool create, sequential, p99 ms", "create_p99_ms"),
            ("pool creates/s, sequential", "creates_per_s"),
            ("heartbeats/s, unchanged state (wrk)", "hb_per_s"),
            ("heartbeat p99 ms, unchanged state", "hb_p99_ms"),
            ("heartbeats/s, every one a write (8 clients)", "hb_write_per_s"),
            ("heartbeat p99 ms, every one a write", "hb_write_p99_ms"),
        )
    ]
    result = {
        "machine": machine(),
        "rounds": args.rounds,
        "creates": args.creates,
        "nodes": args.nodes,
        "figures": figures,
        "check": cost,
        "rows": rows,
        "headline": [
            headline(
                f"pool create, sequential, SQLite synchronous=FULL (n={args.creates * args.rounds})",
                f"p50 {full['create_p50_ms']:.2f} ms, {full['creates_per_s']:,.0f}/s",
                baseline=f"NORMAL p50 {normal['create_p50_ms']:.2f} ms, "
                f"{normal['creates_per_s']:,.0f}/s",
            ),
            headline(
                "heartbeats/s at synchronous=FULL: unchanged state; every one a write",
                f"{full['hb_per_s']:,.0f}/s; {full['hb_write_per_s']:,.0f}/s",
                baseline=f"NORMAL {normal['hb_per_s']:,.0f}/s; {normal['hb_write_per_s']:,.0f}/s",
            ),
            headline(
                "lost-file check (one stat), twice per write transaction",
                f"{cost['check_us']:.2f} us a check",
                baseline=f"os.stat {cost['stat_us']:.2f} us; a FULL write transaction "
                f"{cost['write_ms_FULL']:.2f} ms",
            ),
            headline(
                "one write transaction (in-process, median of 200), synchronous=FULL",
                f"{cost['write_ms_FULL']:.2f} ms",
                baseline=f"NORMAL {cost['write_ms_NORMAL']:.2f} ms",
            ),
        ],
    }
    print(f"# durability: synchronous=FULL vs NORMAL ({result['machine']})\n")
    print(
        f"{args.rounds} round(s) of each side, alternating; {args.creates} sequential creates, "
        f"{args.nodes} nodes x {args.pools} pools, {args.seconds:.0f} s of heartbeats per side\n"
    )
    print(table(rows))
    print(
        f"\nDatabase.check(): {cost['check_us']:.2f} us (os.stat {cost['stat_us']:.2f} us); "
        f"one write transaction (median of 200): FULL {cost['write_ms_FULL']:.2f} ms, "
        f"NORMAL {cost['write_ms_NORMAL']:.2f} ms"
    )
    return result


if __name__ == "__main__":
    out = main()
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/durability.json").write_text(json.dumps(out, indent=2, default=str))
