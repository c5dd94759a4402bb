"""``python -m bench [--quick] [--only NAME ...]``: run every benchmark in
``bench/``, print one markdown table per benchmark, and write everything to
``bench/results/latest.json``. Each benchmark measures its baseline (curl,
sha256sum, cp, raw SQL, ``/healthz``, the CLI's own start) in the same run and
names the machine. ``--quick`` is the short pass CI can afford; the full sizes
(100k pool instances, 1 GiB images, 1,000 nodes) run by hand.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import heartbeat, image_cache, pool_list, pool_ready
from bench.common import machine

BENCHES: dict[str, Callable[[list[str]], dict[str, Any]]] = {
    "heartbeat": heartbeat.main,
    "pool_ready": pool_ready.main,
    "pool_list": pool_list.main,
    "image_cache": image_cache.main,
}


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
            out = BENCHES[name](["--quick"] if args.quick else [])
        except Exception as exc:  # one broken bench must not hide the others' numbers
            failed.append(name)
            out = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"FAILED: {out['error']}")
        out["wall_seconds"] = round(time.monotonic() - started, 1)
        results["benches"][name] = out
    target = Path(__file__).with_name("results") / "latest.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {target}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
