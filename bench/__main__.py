"""``python -m bench [--quick] [--only NAME ...]``: run every benchmark in
``bench/``, print each one's own table, then one combined markdown table (the
figure, its target, the baseline measured in the same run, met or MISSED) under
the machine's name. Everything goes to ``bench/results/latest.json`` and the
combined table to ``bench/results/latest.md``. Baselines: curl, sha256sum, cp,
raw SQL, ``/healthz``, the CLI's own start, an empty control plane, a bare
Python, a plain ``qemu-system-x86_64``, a reader without a scrub beside it,
``cp`` and ``cp --reflink``. ``--quick`` is the short pass CI runs; the full sizes (100k pool
instances, 10k nodes, 1 GiB images, 1,000 heartbeating nodes) run by hand.
Exit status 1 if a benchmark failed to run (a missed target is reported, not
an error).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    durability,
    footprint,
    heartbeat,
    image_cache,
    login_flood,
    pool_list,
    pool_ready,
    scrub_reader,
    vm_move,
    vm_runtime,
)
from bench.common import machine, table

BENCHES: dict[str, Callable[[list[str]], dict[str, Any]]] = {
    "heartbeat": heartbeat.main,
    "pool_ready": pool_ready.main,
    "pool_list": pool_list.main,
    "image_cache": image_cache.main,
    "footprint": footprint.main,
    "durability": durability.main,
    "login_flood": login_flood.main,
    "vm_runtime": vm_runtime.main,
    "scrub_reader": scrub_reader.main,
    "vm_move": vm_move.main,
}


def _argv(name: str, quick: bool) -> list[str]:
    argv = ["--quick"] if quick else []
    if name == "image_cache" and os.geteuid() == 0 and shutil.which("mkfs.xfs"):
        argv.append("--xfs")  # reflink clone on a loop-mounted XFS (root only)
    return argv


def summary_table(results: dict[str, Any]) -> str:
    rows = []
    for name, out in results["benches"].items():
        if "error" in out:
            rows.append(
                {
                    "metric": f"{name}: FAILED TO RUN",
                    "figure": out["error"],
                    "target": "-",
                    "baseline (same run)": "-",
                    "verdict": "**ERROR**",
                }
            )
        rows += out.get("headline", [])
    mode = "quick pass" if results["quick"] else "full sizes"
    return (
        f"Machine: {results['machine']}; {mode}; started {results['started_at'][:19]}Z\n\n"
        + table(rows)
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short pass (CI)")
    ap.add_argument("--only", nargs="*", choices=sorted(BENCHES), help="run only these")
    args = ap.parse_args()
    results: dict[str, Any] = {
        "machine": machine(),
        "started_at": datetime.now(UTC).isoformat(),
        "quick": args.quick,
        "benches": {},
    }
    failed = []
    for name in args.only or list(BENCHES):
        print(f"\n## {name}\n", flush=True)
        started = time.monotonic()
        try:
            out = BENCHES[name](_argv(name, args.quick))
        except Exception as exc:  # one broken bench must not hide the others' numbers
            failed.append(name)
            out = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"FAILED: {out['error']}")
        out["wall_seconds"] = round(time.monotonic() - started, 1)
        results["benches"][name] = out
    combined = summary_table(results)
    print(f"\n## summary\n\n{combined}")
    out_dir = Path(__file__).with_name("results")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(results, indent=2, default=str))
    (out_dir / "latest.md").write_text(combined + "\n")
    print(f"\nwrote {out_dir / 'latest.json'} and {out_dir / 'latest.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
