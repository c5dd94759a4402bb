"""``GET /v1/storage-pools`` page latency at 1k, 10k and 100k pool instances.

Targets (issue 4): p50 under 30 ms at 100k, and the 100k/1k ratio at most 1.5
(keyset pagination: page cost flat as the table grows). Pages are fetched at
random depths through real cursors. Baselines in the same run: the same
keyset query run directly on the database, and the OFFSET query the design
avoids, at the same depths.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from bench.common import headline, machine, seed_nodes, start_control_plane, summary, table
from otherix.models.pagination import encode_cursor
from otherix.store import Database
from otherix.store import pools as store_pools
from otherix.store.pools import store as qp
from otherix.store.schema import storage_pools
from otherix.store.tx import sql


def run_size(total: int, samples: int, limit: int) -> dict[str, Any]:
    pools_per_node = 10
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        db_url = f"sqlite:///{data}/otherix.db"
        t0 = time.perf_counter()
        seed_nodes(db_url, max(1, total // pools_per_node), pools_per_node)
        seed_s = time.perf_counter() - t0
        db = Database(db_url)
        with db.read() as conn:
            keys = [
                (r.created_at, r.id)
                for r in sql(conn).execute(
                    sa.select(storage_pools.c.created_at, storage_pools.c.id).order_by(
                        storage_pools.c.created_at, storage_pools.c.id
                    )
                )
            ]
        rng = random.Random(42)
        depths = [rng.randrange(0, max(1, len(keys) - limit)) for _ in range(samples)]
        cp = start_control_plane(data)
        try:
            token = cp.token()
            with httpx.Client(base_url=cp.url, headers={"Authorization": f"Bearer {token}"}) as c:
                for _ in range(20):  # warm-up
                    c.get("/v1/storage-pools", params={"limit": limit}).raise_for_status()
                api = []
                for d in depths:
                    cursor = encode_cursor(*keys[d]) if d else None
                    t = time.perf_counter()
                    r = c.get("/v1/storage-pools", params={"limit": limit, "cursor": cursor})
                    api.append(time.perf_counter() - t)
                    r.raise_for_status()
                    assert len(r.json()["data"]) == limit
            raw, offset = [], []
            with db.read() as conn:
                for d in depths:
                    t = time.perf_counter()
                    qp.list_pools(conn, after=keys[d] if d else None, limit=limit + 1)
                    raw.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    sql(conn).execute(  # the same query, paged with OFFSET instead of a key
                        store_pools._select()
                        .order_by(storage_pools.c.created_at, storage_pools.c.id)
                        .offset(d)
                        .limit(limit + 1)
                    ).fetchall()
                    offset.append(time.perf_counter() - t)
        finally:
            cp.stop()
            db.close()
    return {
        "instances": total,
        "seed_s": round(seed_s, 1),
        "api_p50_ms": round(summary(api)["p50_ms"], 2),
        "api_p99_ms": round(summary(api)["p99_ms"], 2),
        "raw_keyset_p50_ms": round(summary(raw)["p50_ms"], 2),
        "raw_offset_p50_ms": round(summary(offset)["p50_ms"], 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="1k and 10k only, fewer samples")
    ap.add_argument("--limit", type=int, default=50)
    args = ap.parse_args(argv)
    sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    samples = 100 if args.quick else 300
    rows = [run_size(n, samples, args.limit) for n in sizes]
    ratio = rows[-1]["api_p50_ms"] / rows[0]["api_p50_ms"]
    result = {
        "machine": machine(),
        "limit": args.limit,
        "rows": rows,
        f"ratio_p50_{sizes[-1] // 1000}k_over_1k": round(ratio, 2),
        "targets": {"p50_ms_at_100k": 30, "ratio_100k_over_1k": 1.5},
        "headline": [
            headline(
                f"pool list page ({args.limit}) at {row['instances']:,} pool instances",
                f"p50 {row['api_p50_ms']} ms, p99 {row['api_p99_ms']} ms",
                target="p50 < 30 ms at 100k" if row["instances"] == 100_000 else "-",
                baseline=f"raw keyset SQL p50 {row['raw_keyset_p50_ms']} ms; "
                f"OFFSET SQL p50 {row['raw_offset_p50_ms']} ms",
                met=row["api_p50_ms"] < 30 if row["instances"] == 100_000 else None,
            )
            for row in rows
        ]
        + [
            headline(
                f"pool list p50 ratio {sizes[-1]:,} / 1,000",
                f"{ratio:.2f}",
                target="<= 1.5 (flat paging)",
                baseline="OFFSET SQL ratio "
                f"{rows[-1]['raw_offset_p50_ms'] / rows[0]['raw_offset_p50_ms']:.2f}",
                met=ratio <= 1.5,
            )
        ],
    }
    print(f"# pool list paging ({result['machine']})\n")
    print(table(rows))
    print(
        f"\np50 ratio {sizes[-1]:,}/1,000 = {ratio:.2f} (target <= 1.5); target p50 at 100k < 30 ms"
    )
    return result


if __name__ == "__main__":
    out = main()
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/pool_list.json").write_text(json.dumps(out, indent=2, default=str))
