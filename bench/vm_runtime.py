"""VM runtime numbers (``otherix.agent.vms.VmRuntime``) with the real test guest
(``tests/support/guest.py``), with baselines from the same run. Issue 15's
benchmark at the agent runtime level: the API path (create -> running) is not
wired yet, so that row is not here.

Every VM is TCG, ``-m 256``, 1 vcpu, on its own copy of the guest's qcow2; the
guest prints ``OTHERIX-GUEST-UP boot=1`` on its console once booted. Measured:

1. boot to marker: from ``VmRuntime.start`` to the marker, n=3 (``--quick``)
   or 10; baseline: the same guest under a plain ``qemu-system-x86_64`` command
   line (no runtime, no QMP), alternating with the runtime's boots;
2. VMs held at once: in a child Python process that holds only the runtime,
   guests are started until the next one's 256 MiB would not fit in
   ``MemAvailable`` (at the start, and now) minus 2 GiB, or the cap is reached
   (3 ``--quick``, else 40), and every one has printed the marker; the time is
   from the first start to the last marker. Baseline: ``MemAvailable`` at the
   start / the QEMUs' mean RSS;
3. runtime RSS: that child's ``VmRSS`` (``/proc/self/status``) once its first
   10 VMs (3 ``--quick``) have printed the marker, against a bare Python
   importing the runtime; the QEMUs' total RSS as information.

The guest is built once into ``$TMPDIR/otherix-bench-guest`` (``build_guest``
caches it). Every QEMU is powered off in a ``finally``; any left (found by the
pidfiles in this run's directory) is killed. Timings are printed, not asserted.
Writes ``bench/results/vm_runtime.json`` when run on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def _runtime_boot(rt: VmRuntime, work: Path, image: Path, vm_id: str) -> float:
    launch = _launch(work, image, vm_id)
    began = time.perf_counter()
    seen = rt.start(launch)
    if seen.state != "running":
        raise RuntimeError(f"{vm_id}: {seen.state}: {seen.detail}")
    took = _wait_marker(launch.console_log, began, lambda: rt.state(vm_id).state == "running")
    rt.poweroff(vm_id)
    return took


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


def _kill_leftovers(work: Path) -> int:
    """SIGKILL every QEMU whose pidfile is in ``work`` and whose command line names
    ``work`` (so a reused pid is left alone); how many there were."""
    killed = 0
    for pidfile in work.glob("run/*/qemu.pid"):
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
            seen = rt.start(launch)
            if seen.state != "running":
                raise RuntimeError(f"{launch.vm_id}: {seen.state}: {seen.detail}")
            logs.append(launch.console_log)
        last = max(_wait_marker(log, began) for log in logs)
        out["held"] = {"count": len(logs), "stopped_by": stopped_by, "last_marker_s": last}
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="3 boots, 3 VMs held")
    ap.add_argument("--boots", type=int, default=10)
    ap.add_argument("--cap", type=int, default=40, help="at most this many VMs at once")
    ap.add_argument("--rss-vms", type=int, default=10)
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
        plain_s: list[float] = []
        try:
            for i in range(boots):
                runtime_s.append(_runtime_boot(rt, work, image, f"boot{i}"))
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
            "figure": f"{held['count']} running, last marker {held['last_marker_s']:.2f} s",
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
    tcg = "TCG, -m 256, 1 vcpu"
    result = {
        "machine": machine(),
        "rows": rows,
        "runtime_boot_s": runtime_s,
        "plain_boot_s": plain_s,
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
