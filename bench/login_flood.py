"""``/healthz`` latency while wrong-password logins flood the control plane
(issue 13.5: p99 < 100 ms during a login flood from one client; before the
fix the argon2 work took it from milliseconds to 21 s).

One real ``otherix-api serve`` in a subprocess, with the production argon2
parameters (library defaults: 3 passes, 64 MiB, 4 lanes; the test suite's
cheap hashing does not apply here) and ``server.trusted_proxies: [127.0.0.1]``
so that one phase can play many clients. The flood is wrk (C) with
``login_flood.lua``: every request a wrong password for a new user name. A
prober asks ``/healthz`` every 10 ms on its own connection. Phases, one run:

- **no flood**: the baseline;
- **login flood, one client**, paced (``--rate``, default ~200 logins a
  second over 32 connections): the per-client window and in-flight cap soon
  refuse everything, most of it before the body is even read;
- **login flood, many clients**, paced: each login with another
  ``X-Forwarded-For`` address, so no window applies and the bounded
  password-hash queue alone keeps the server responsive;
- **control, unpaced**: the same connections as fast as the server answers,
  ``GET /v1/users/me`` with a bad token (401 without any password work): what
  any flood of cheap requests costs this server;
- **login flood, one client, unpaced**: the same rate against logins, to
  compare with the control (logins should cost no more than it).

Reports p50/p99/max of ``/healthz`` per phase, the requests a second, how
many passwords were checked (401) and the 429s by cause (window and in-flight
cap, queue full).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.common import headline, machine, start_control_plane, summary, table

TARGET_MS = 100.0
EXPECTED = ("401", "429 window", "429 queue", "control 401")  # anything else is "other"
PHASES = {
    None: "no flood",
    "one": "login flood, one client",
    "many": "login flood, many clients",
    "cheap": "control: bad-token GET /v1/users/me",
}


def _probe(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(base_url=url, timeout=60) as c:
        while not stop.is_set():
            started = time.perf_counter()
            r = c.get("/healthz")
            out.append(time.perf_counter() - started)
            r.raise_for_status()
            stop.wait(0.01)


def _flood(url: str, seconds: float, conns: int, mode: str, rate: float) -> Counter[str]:
    """Drive the flood with wrk (C): a Python client saturates long before the
    server. ``rate`` > 0 paces it to about that many requests a second."""
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--timeout", "60s"]
    cmd += ["-s", str(Path(__file__).with_name("login_flood.lua")), url]
    delay = round(conns * 1000 / rate) if rate > 0 else 0
    env = {**os.environ, "OTHERIX_FLOOD_MODE": mode, "OTHERIX_FLOOD_DELAY_MS": str(delay)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("OTHERIX "))
    _, c401, window, queue, other, sock = (int(v) for v in line.split()[1:])
    counts: Counter[str] = Counter()
    counts["control 401" if mode == "cheap" else "401"] = c401
    counts.update({"429 window": window, "429 queue": queue, "other": other, "socket": sock})
    return counts


def _phase(url: str, seconds: float, conns: int, mode: str | None, rate: float) -> dict[str, Any]:
    samples: list[float] = []
    stop = threading.Event()
    prober = threading.Thread(target=_probe, args=(url, stop, samples))
    prober.start()
    counts: Counter[str] = Counter()
    try:
        if mode is None:
            time.sleep(seconds)
        else:
            counts = _flood(url, seconds, conns, mode, rate)
    finally:
        stop.set()
        prober.join()
    s = summary(samples)
    sent = sum(v for k, v in counts.items() if k != "socket")
    offered = "-" if mode is None else (f"~{rate:g}/s" if rate > 0 else "max")
    return {
        "phase": PHASES[mode],
        "offered": offered,
        "healthz_n": s["n"],
        "p50_ms": round(s["p50_ms"], 1),
        "p99_ms": round(s["p99_ms"], 1),
        "max_ms": round(max(samples) * 1000, 1) if samples else float("nan"),
        "requests/s": round(sent / seconds) if mode else 0,
        "checked (401)": counts["401"],
        "429 window": counts["429 window"],
        "429 queue": counts["429 queue"],
        "other": sum(v for k, v in counts.items() if k not in EXPECTED),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    ap.add_argument("--connections", type=int, default=32, help="concurrent flood connections")
    ap.add_argument("--rate", type=float, default=200.0, help="paced flood, requests a second")
    ap.add_argument("--quick", action="store_true", help="3 s phases")
    args = ap.parse_args(argv)
    seconds = 3.0 if args.quick else args.seconds
    conns, rate = args.connections, args.rate
    if shutil.which("wrk") is None:
        raise SystemExit("bench/login_flood.py needs wrk: apt-get install -y wrk")
    plan = [(None, 0.0), ("one", rate), ("many", rate), ("cheap", 0.0), ("one", 0.0)]
    with tempfile.TemporaryDirectory() as tmp:
        cp = start_control_plane(
            Path(tmp) / "api", {"OTHERIX_SERVER__TRUSTED_PROXIES": '["127.0.0.1"]'}
        )
        try:
            cpu0 = cp.cpu_seconds()
            rows = [_phase(cp.url, seconds, conns, mode, r) for mode, r in plan]
            cpu = cp.cpu_seconds() - cpu0
        finally:
            cp.stop()
    base, one, many, cheap, one_max = rows
    result = {
        "machine": machine(),
        "rows": rows,
        "server_cpu_seconds": round(cpu, 1),
        "headline": [
            headline(
                f"/healthz p99 during a login flood from one client (~{rate:g}/s)",
                f"p99 {one['p99_ms']:.1f} ms (p50 {one['p50_ms']:.1f}); "
                f"{one['checked (401)']} passwords checked",
                target=f"p99 < {TARGET_MS:.0f} ms",
                baseline=f"no flood: p99 {base['p99_ms']:.1f} ms",
                met=one["p99_ms"] < TARGET_MS and one["other"] == 0,
            ),
            headline(
                f"/healthz p99 during a login flood from many clients (~{rate:g}/s)",
                f"p99 {many['p99_ms']:.1f} ms (p50 {many['p50_ms']:.1f}); "
                f"{many['429 queue']} queue-full 429s",
                target=f"p99 < {TARGET_MS:.0f} ms",
                baseline=f"no flood: p99 {base['p99_ms']:.1f} ms",
                met=many["p99_ms"] < TARGET_MS and many["other"] == 0,
            ),
            headline(
                "/healthz p99 during an unpaced login flood from one client",
                f"p99 {one_max['p99_ms']:.1f} ms at {one_max['requests/s']} logins/s",
                baseline=f"unpaced flood of bad-token requests: p99 {cheap['p99_ms']:.1f} ms "
                f"at {cheap['requests/s']}/s",
            ),
        ],
    }
    print(f"# login flood ({result['machine']})\n")
    print(
        f"production argon2 (library defaults); {seconds:g} s per phase, {conns} flood "
        f"connections (wrk); server CPU {cpu:.1f} s over the run\n"
    )
    print(table(rows))
    return result


if __name__ == "__main__":
    out = main()
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/login_flood.json").write_text(json.dumps(out, indent=2, default=str))
