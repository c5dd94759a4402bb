"""VM runtime numbers with the real test guest (``tests/support/guest.py``), with
baselines from the same run: at the agent runtime level (``otherix.agent.vms.VmRuntime``)
and through the whole product (a control plane, a real agent, the API).

Every VM is TCG, ``-m 256``, 1 vcpu, on its own copy of the guest's qcow2; the
guest prints ``OTHERIX-GUEST-UP boot=1`` on its console once booted. Measured:

1. boot to marker: from ``VmRuntime.start`` to the marker, n=3 (``--quick``)
   or 10; baseline: the same guest under a plain ``qemu-system-x86_64`` command
   line (no runtime, no QMP), alternating with the runtime's boots;
2. VMs held at once: in a child Python process that holds only the runtime,
   guests are started one after another, each once the one before printed its
   marker, until the next one's 256 MiB would not fit in ``MemAvailable`` (at
   the start, and now) minus 2 GiB, or the cap is reached (3 ``--quick``, else
   40); the time is from the first start to the last marker, and the boot time
   of the last one (with all the others running) is shown. Baseline: ``MemAvailable`` at the
   start / the QEMUs' mean RSS;
3. runtime RSS: that child's ``VmRSS`` (``/proc/self/status``) once its first
   10 VMs (3 ``--quick``) have printed the marker, against a bare Python
   importing the runtime; the QEMUs' total RSS as information.

4. through the API (a real ``otherix-api serve`` and ``otherix-agent serve``, the guest
   served over HTTP on loopback into a pool's image cache): ``POST /v1/vms`` until
   ``status.state`` is ``running`` (the disk made from the cache, QEMU started), and
   until the marker is in ``GET /v1/vms/{name}/console`` (which adds the agent's report
   latency, up to its 2 s watch cap). The first VM downloads the image (a cache miss);
   the others hit the cache. Baseline: ``VmRuntime.start`` alone (QEMU up and answering
   QMP), from (1). All of them keep running;
5. agent RSS: the real agent's ``VmRSS`` with that many VMs running (10, 4 ``--quick``),
   against the same agent before its first VM.

The guest is built once into ``$TMPDIR/otherix-bench-guest`` (``build_guest``
caches it). Every QEMU is powered off in a ``finally``; any left (found by the
pidfiles in this run's directory) is killed. Timings are printed, not asserted.
Writes ``bench/results/vm_runtime.json`` when run on its own.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from otherix.agent.vms import VmLaunch, VmRuntime

MEMORY_MB = 256
RESERVE_MIB = 2048  # MemAvailable kept free for the rest of the machine
TESTS = Path(__file__).resolve().parents[1] / "tests"
GUEST_CACHE = Path(tempfile.gettempdir()) / "otherix-bench-guest"
MARKER_TIMEOUT = 300.0


def _support_guest_on_path() -> None:
    """tests/ on sys.path, for ``support.guest`` (pytest puts it there for the tests; the
    bench is not run by pytest). Appended, so nothing installed is shadowed."""
    if str(TESTS) not in sys.path:
        sys.path.append(str(TESTS))


def _build_guest() -> Path:
    _support_guest_on_path()
    from support.guest import build_guest

    return build_guest(GUEST_CACHE)


def _marker() -> re.Pattern[str]:
    _support_guest_on_path()
    from support.guest import MARKER

    return MARKER


def _mem_available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def _rss(pid: int | str, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _wait_marker(log: Path, began: float, alive: Callable[[], bool] | None = None) -> float:
    """Seconds from ``began`` (perf_counter) until the guest's marker is in ``log``."""
    marker = _marker()
    deadline = time.monotonic() + MARKER_TIMEOUT
    while time.monotonic() < deadline:
        try:
            text = log.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        if marker.search(text):
            return time.perf_counter() - began
        if "OTHERIX-GUEST-ERROR" in text:
            raise RuntimeError(f"guest failed: {text[-300:]}")
        if alive is not None and not alive():
            raise RuntimeError(f"QEMU exited before the marker: {text[-300:]}")
        time.sleep(0.02)
    raise RuntimeError(f"no marker in {log} within {MARKER_TIMEOUT:g} s")


def _launch(work: Path, image: Path, vm_id: str) -> VmLaunch:
    vm_dir = work / "pool" / vm_id
    vm_dir.mkdir(parents=True)
    disk = vm_dir / "disk.qcow2"
    shutil.copyfile(image, disk)
    return VmLaunch(vm_id, vm_id, disk, "qcow2", 1, MEMORY_MB, "tcg", vm_dir)


def _runtime_boot(rt: VmRuntime, work: Path, image: Path, vm_id: str) -> tuple[float, float]:
    """(seconds until ``start`` answered running, seconds until the marker)."""
    launch = _launch(work, image, vm_id)
    began = time.perf_counter()
    seen = rt.start(launch)
    started = time.perf_counter() - began
    if seen.state != "running":
        raise RuntimeError(f"{vm_id}: {seen.state}: {seen.detail}")
    took = _wait_marker(launch.console_log, began, lambda: rt.state(vm_id).state == "running")
    rt.poweroff(vm_id)
    return started, took


def _plain_boot(work: Path, image: Path, vm_id: str) -> float:
    launch = _launch(work, image, vm_id)
    argv = ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-smp", "1"]
    argv += ["-m", str(MEMORY_MB), "-nodefaults", "-no-user-config", "-display", "none"]
    argv += ["-nic", "none", "-drive", f"file={launch.disk_path},if=virtio,format=qcow2"]
    argv += ["-serial", f"file:{launch.console_log}"]
    began = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        return _wait_marker(launch.console_log, began, lambda: proc.poll() is None)
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _kill_leftovers(work: Path, run: str = "run") -> int:
    """SIGKILL every QEMU whose pidfile is in ``work/run`` and whose command line names
    ``work`` (so a reused pid is left alone); how many there were."""
    killed = 0
    for pidfile in work.glob(f"{run}/*/qemu.pid"):
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if str(work).encode() in cmdline:
            os.kill(pid, signal.SIGKILL)
            killed += 1
    return killed


def _hold(work: Path, image: Path, cap: int, rss_at: int) -> dict[str, Any]:
    """The child's part (module docstring, 2 and 3), in a process holding only the runtime."""
    rt = VmRuntime(work / "run", start_timeout=120.0)
    avail_at_start = _mem_available_mib()
    logs: list[Path] = []
    boots: list[float] = []
    out: dict[str, Any] = {"mem_available_mib": round(avail_at_start)}
    try:
        began = time.perf_counter()
        stopped_by = "cap"
        while len(logs) < cap:
            if len(logs) == rss_at:  # the RSS figure: rss_at VMs running, all booted
                for log in logs:
                    _wait_marker(log, began)
                out["rss"] = _rss_figures(rt, len(logs))
            # the next VM's whole -m must fit above the reserve, both as counted from the
            # start (guests still booting have not touched their memory yet) and as now
            bound = avail_at_start - RESERVE_MIB
            if (
                len(logs) + 1
            ) * MEMORY_MB > bound or _mem_available_mib() - MEMORY_MB < RESERVE_MIB:
                stopped_by = "memory"
                break
            launch = _launch(work, image, f"vm{len(logs):03d}")
            booting = time.perf_counter()
            seen = rt.start(launch)
            if seen.state != "running":
                raise RuntimeError(f"{launch.vm_id}: {seen.state}: {seen.detail}")
            logs.append(launch.console_log)
            # one boot at a time: the VMs held are booted and idle, as on a node whose VMs
            # came up one by one (40 TCG boots at once on 2 cores only measure the herd)
            boots.append(_wait_marker(launch.console_log, booting))
        last = max(_wait_marker(log, began) for log in logs)
        out["held"] = {
            "count": len(logs),
            "stopped_by": stopped_by,
            "last_marker_s": last,
            "boot_s": boots,
        }
        all_held = _rss_figures(rt, len(logs))
        out["held"]["qemu_rss_mib"] = all_held["qemu_rss_mib"]
        out.setdefault("rss", all_held)
        running = [rt.state(v).state for v in rt.vm_ids()]
        out["held"]["all_running"] = running.count("running") == len(logs)
        return out
    finally:
        for vm_id in rt.vm_ids():
            rt.poweroff(vm_id)
        _kill_leftovers(work)


def _rss_figures(rt: VmRuntime, count: int) -> dict[str, Any]:
    pids = [rt.state(v).pid for v in rt.vm_ids()]
    qemu = [_rss(pid) for pid in pids if pid is not None]
    return {
        "vms": count,
        "self_rss_mib": _rss("self"),
        "self_hwm_mib": _rss("self", "VmHWM"),
        "qemu_rss_mib": qemu,
    }


def _bare_python_rss() -> float:
    code = "import otherix.agent.vms, pathlib; print(pathlib.Path('/proc/self/status').read_text())"
    status = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    for line in status.decode().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _until(what: str, fn: Callable[[], bool], timeout: float = MARKER_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:g} s")
        time.sleep(0.02)


def _api_vm(c: httpx.Client, name: str, body: dict[str, Any]) -> tuple[float, float]:
    """(create -> running, create -> marker in the console), seconds."""
    marker = _marker()
    began = time.perf_counter()
    r = c.post("/v1/vms", json={"name": name, **body})
    if r.status_code != 201:
        raise RuntimeError(f"create {name}: {r.status_code} {r.text}")

    def state() -> bool:
        vm = c.get(f"/v1/vms/{name}").json()
        status = vm["status"]
        if status["phase"] == "error" or status.get("state") == "failed":
            raise RuntimeError(f"{name}: {status}")
        return bool(status.get("state") == "running")

    _until(f"{name} running", state)
    running = time.perf_counter() - began

    def booted() -> bool:
        lines: list[str] = c.get(f"/v1/vms/{name}/console").json()["lines"]
        return any(marker.search(f"{line}\n") for line in lines)

    _until(f"{name} marker", booted)
    return running, time.perf_counter() - began


def _cluster(work: Path, image: Path, vms: int) -> dict[str, Any]:
    """The API rows (module docstring, 4 and 5)."""
    from bench.common import rss_mib, start_agent, start_control_plane, stop_process

    www = work / "www"
    www.mkdir()
    shutil.copyfile(image, www / "guest.qcow2")
    handler = functools.partial(_Quiet, directory=str(www))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/guest.qcow2"
    cp = start_control_plane(work / "cp")
    agent = None
    try:
        env = {
            "OTHERIX_VMS__RUN_DIR": str(work / "arun"),
            "OTHERIX_IMAGES__ALLOW_LOOPBACK_AND_LINK_LOCAL": "true",
        }
        agent = start_agent(cp, cp.token(), work, "bench-a", extra_env=env)
        auth = {"Authorization": f"Bearer {cp.token()}"}
        with httpx.Client(base_url=cp.url, headers=auth, timeout=30) as c:
            path = f"{cp.data_dir}/pools/bench"
            r = c.post("/v1/storage-pools", json={"name": "bench", "node": "bench-a", "path": path})
            if r.status_code != 201:
                raise RuntimeError(f"pool create: {r.status_code} {r.text}")
            pool_id = r.json()["id"]

            def ready() -> bool:
                pool = c.get(f"/v1/storage-pools/{pool_id}").json()
                return bool(pool["reconciliation_status"] == "ready")

            _until("pool ready", ready, 60)
            time.sleep(1.0)  # the agent settles after its first reconcile
            idle_rss = rss_mib(agent.pid)
            body = {"image_url": url, "vcpus": 1, "memory_mb": MEMORY_MB, "arch": "amd64"}
            body["pool"] = "bench"
            miss = _api_vm(c, "miss", body)
            hits = [_api_vm(c, f"hit{i}", body) for i in range(vms - 1)]
            time.sleep(2.0)  # a couple of supervisor ticks and heartbeats with all running
            states = [v["status"]["state"] for v in c.get("/v1/vms").json()["data"]]
            return {
                "miss": miss,
                "hits_running_s": [h[0] for h in hits],
                "hits_marker_s": [h[1] for h in hits],
                "agent_idle_rss_mib": idle_rss,
                "agent_rss_mib": rss_mib(agent.pid),
                "agent_hwm_mib": rss_mib(agent.pid, "VmHWM"),
                "running": states.count("running"),
                "vms": vms,
            }
    finally:
        _kill_leftovers(work, "arun")
        if agent is not None:
            stop_process(agent)
        cp.stop()
        httpd.shutdown()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="3 boots, 3 VMs held")
    ap.add_argument("--boots", type=int, default=10)
    ap.add_argument("--cap", type=int, default=40, help="at most this many VMs at once")
    ap.add_argument("--rss-vms", type=int, default=10)
    ap.add_argument("--api-vms", type=int, default=10, help="VMs created through the API")
    ap.add_argument("--child", nargs=2, metavar=("WORK", "IMAGE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    boots, cap, rss_vms = (3, 3, 3) if args.quick else (args.boots, args.cap, args.rss_vms)
    if args.child:
        work, image = map(Path, args.child)
        print(json.dumps(_hold(work, image, cap, min(rss_vms, cap))))
        return {}
    from bench.common import headline, machine, summary, table

    image = _build_guest()
    with tempfile.TemporaryDirectory(prefix="oxb-") as tmp:  # short: QMP socket paths
        work = Path(tmp)
        rt = VmRuntime(work / "run", start_timeout=120.0)
        runtime_s: list[float] = []
        start_s: list[float] = []
        plain_s: list[float] = []
        try:
            for i in range(boots):
                started, booted = _runtime_boot(rt, work, image, f"boot{i}")
                start_s.append(started)
                runtime_s.append(booted)
                plain_s.append(_plain_boot(work, image, f"plain{i}"))
        finally:
            for vm_id in rt.vm_ids():
                rt.poweroff(vm_id)
            _kill_leftovers(work)
        child_argv = [sys.executable, "-m", "bench.vm_runtime", "--child", str(work), str(image)]
        child_argv += ["--quick"] if args.quick else ["--cap", str(cap), "--rss-vms", str(rss_vms)]
        try:
            done = subprocess.run(child_argv, capture_output=True, check=False, timeout=1800)
        finally:
            _kill_leftovers(work)
        if done.returncode != 0:
            raise RuntimeError(f"hold child failed: {done.stderr.decode()[-800:]}")
        held_out = json.loads(done.stdout.decode().strip().splitlines()[-1])
        api = _cluster(work, image, 4 if args.quick else args.api_vms)
    bare = _bare_python_rss()
    r, p = summary(runtime_s), summary(plain_s)
    held, rss = held_out["held"], held_out["rss"]
    qemu_rss = rss["qemu_rss_mib"]
    per_qemu = sum(held["qemu_rss_mib"]) / len(held["qemu_rss_mib"])  # all the VMs held
    theoretical = int(held_out["mem_available_mib"] / per_qemu)
    boot_fig = f"p50 {r['p50_ms'] / 1000:.2f} s, max {max(runtime_s):.2f} s"
    plain_fig = f"plain qemu p50 {p['p50_ms'] / 1000:.2f} s, max {max(plain_s):.2f} s"
    rows = [
        {"what": "boot to marker, VmRuntime.start", "n": boots, "figure": boot_fig},
        {"what": "baseline: plain qemu-system-x86_64", "n": boots, "figure": plain_fig},
        {
            "what": f"VMs held at once (cap {cap}, stopped by {held['stopped_by']})",
            "n": held["count"],
            "figure": f"{held['count']} running, all booted after {held['last_marker_s']:.1f} s; "
            f"the last one booted in {held['boot_s'][-1]:.2f} s",
        },
        {
            "what": "baseline: MemAvailable / mean QEMU RSS",
            "n": held["count"],
            "figure": f"{held_out['mem_available_mib']} MiB / {per_qemu:.0f} MiB = {theoretical}",
        },
        {
            "what": f"runtime process RSS, {rss['vms']} VMs running",
            "n": rss["vms"],
            "figure": f"{rss['self_rss_mib']:.0f} MiB (peak {rss['self_hwm_mib']:.0f} MiB)",
        },
        {
            "what": "baseline: bare python importing the runtime",
            "n": 1,
            "figure": f"{bare:.0f} MiB",
        },
        {
            "what": f"information: the {len(qemu_rss)} QEMUs' total RSS",
            "n": len(qemu_rss),
            "figure": f"{sum(qemu_rss):.0f} MiB ({sum(qemu_rss) / len(qemu_rss):.0f} MiB each)",
        },
    ]
    st = summary(start_s)
    hit_run, hit_mark = summary(api["hits_running_s"]), summary(api["hits_marker_s"])
    n_hits = len(api["hits_running_s"])
    run_fig = f"p50 {hit_run['p50_ms'] / 1000:.2f} s, max {max(api['hits_running_s']):.2f} s"
    mark_fig = f"p50 {hit_mark['p50_ms'] / 1000:.2f} s, max {max(api['hits_marker_s']):.2f} s"
    start_fig = f"p50 {st['p50_ms'] / 1000:.2f} s"
    miss_fig = f"{api['miss'][0]:.2f} s to running, {api['miss'][1]:.2f} s to the marker"
    agent_fig = f"{api['agent_rss_mib']:.0f} MiB (peak {api['agent_hwm_mib']:.0f} MiB)"
    rows += [
        {"what": "API: create -> running, cache hit", "n": n_hits, "figure": run_fig},
        {"what": "baseline: VmRuntime.start alone", "n": boots, "figure": start_fig},
        {"what": "API: create -> marker in vm console, cache hit", "n": n_hits, "figure": mark_fig},
        {"what": "information: the first create (cache miss)", "n": 1, "figure": miss_fig},
        {
            "what": f"agent RSS, {api['running']} of {api['vms']} VMs running",
            "n": api["vms"],
            "figure": agent_fig,
        },
        {
            "what": "baseline: the same agent before its first VM",
            "n": 1,
            "figure": f"{api['agent_idle_rss_mib']:.0f} MiB",
        },
    ]
    tcg = "TCG, -m 256, 1 vcpu"
    result = {
        "machine": machine(),
        "rows": rows,
        "runtime_boot_s": runtime_s,
        "plain_boot_s": plain_s,
        "runtime_start_s": start_s,
        "api": api,
        "child": held_out,
        "headline": [
            headline(
                f"boot to marker, VmRuntime.start ({tcg}, n={boots})", boot_fig, baseline=plain_fig
            ),
            headline(
                f"VMs held at once, all at the marker ({tcg}, cap {cap})",
                f"{held['count']} (stopped by {held['stopped_by']}); last marker {held['last_marker_s']:.2f} s",
                baseline=f"MemAvailable / QEMU RSS = {theoretical}",
            ),
            headline(
                f"API create -> running, cache hit ({tcg}, n={n_hits})",
                run_fig,
                baseline=f"VmRuntime.start alone {start_fig}",
            ),
            headline(
                f"API create -> marker in vm console, cache hit ({tcg}, n={n_hits})",
                mark_fig,
                baseline=f"boot to marker, VmRuntime.start {boot_fig}",
            ),
            headline(
                f"agent RSS with {api['running']} running VMs",
                agent_fig,
                baseline=f"the same agent idle {api['agent_idle_rss_mib']:.0f} MiB",
            ),
            headline(
                f"runtime process RSS with {rss['vms']} running VMs",
                f"{rss['self_rss_mib']:.0f} MiB; QEMUs {sum(qemu_rss):.0f} MiB in all",
                baseline=f"bare python importing the runtime {bare:.0f} MiB",
            ),
        ],
    }
    print(f"# VM runtime ({result['machine']})\n\n{tcg}; the test guest's marker line\n")
    print(table(rows))
    return result


if __name__ == "__main__":
    out = main()
    if out:
        Path("bench/results").mkdir(parents=True, exist_ok=True)
        Path("bench/results/vm_runtime.json").write_text(json.dumps(out, indent=2, default=str))
