"""``vm move`` throughput (issue 16, deliverable 5) through the real API and agent, against
``cp`` and ``cp --reflink=always`` of the same file between the same filesystems, in the
same run.

A control plane (``otherix-api serve``) and an ``otherix-agent`` run as subprocesses; a
qcow2 of random data (256 MiB; 64 MiB with ``--quick``) is served over HTTP on loopback
and becomes a stopped VM's disk. The VM then moves between two pools ``--repeat`` times
(default 3; 2 with ``--quick``), each move waited for with its follow-up removal of the
source. Two setups, each skipped (with the reason printed) where it cannot be made:

(a) two tmpfs mounts, one pool on each (no reflink: the agent copies, then hashes the copy);
(b) one XFS loop filesystem made with ``mkfs.xfs -m reflink=1`` holding both pools (the
    agent should reflink; the method the task result names is reported);
(c) across nodes: a second ``otherix-agent`` (another node on the same host; both agents'
    ``transfer.listen`` on ``127.0.0.1:0``), a tmpfs pool on each node, the VM moved
    back and forth with ``--node``: the target agent pulls the disk from the source
    agent's transfer endpoint over loopback (the source hashes it, the target receives
    and hashes its copy). Its baseline is ``curl`` downloading the same file from a
    local HTTP server (``http.server`` on loopback) onto the target's tmpfs.

A move reads the disk twice for sha256 (source, then copy; the copy itself on a reflink is
instant), so ``sha256sum`` of the file is printed too. Figures: the agent's time (the
task's ``started_at`` to ``finished_at``) and the API round trip (POST to the success seen
by polling), as MiB/s of the disk's bytes; medians. Baselines: ``cp --reflink=never``
followed by ``sync`` of the copy (the agent fsyncs), plain ``cp`` (coreutils' default,
``--reflink=auto`` since 9.0) and ``cp --reflink=always``. Numbers are
printed, never asserted. Needs root (mounts); writes ``bench/results/vm_move.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench.common import headline, machine, start_agent, start_control_plane, stop_process, table

MiB = 1 << 20
NODE = "bench-mv"
NODE_B = "bench-mv2"
FINAL = ("success", "failed", "cancelled")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _until(what: str, fn: Callable[[], Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := fn()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


def _image(work: Path, size: int) -> Path:
    raw, out = work / "disk.raw", work / "www" / "disk.qcow2"
    out.parent.mkdir()
    with open(raw, "wb") as f:
        for _ in range(size // (16 * MiB)):
            f.write(os.urandom(16 * MiB))
        f.write(os.urandom(size % (16 * MiB)))
    done = _run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out))
    if done.returncode:
        raise RuntimeError(f"qemu-img convert: {done.stderr.strip()}")
    raw.unlink()
    return out


@contextlib.contextmanager
def _mounted(kind: str, where: Path, work: Path, size: int) -> Iterator[str | None]:
    """Mount a tmpfs or a reflink XFS loop filesystem at ``where``; yields None when it
    is mounted, else why it could not be."""
    if os.geteuid() != 0:
        yield "needs root (mounts)"
        return
    where.mkdir(parents=True)
    if kind == "tmpfs":
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={3 * size // MiB + 64}M", "oxmv", str(where)]
    else:
        if shutil.which("mkfs.xfs") is None:
            yield "needs mkfs.xfs (xfsprogs)"
            return
        img = work / "xfs.img"
        with open(img, "wb") as f:
            f.truncate(max(4 * size + 512 * MiB, 1024 * MiB))
        made = _run("mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(img))
        if made.returncode:
            yield f"mkfs.xfs -m reflink=1 failed: {made.stderr.strip()}"
            return
        cmd = ["mount", "-o", "loop", str(img), str(where)]
    done = _run(*cmd)
    if done.returncode:
        yield f"{' '.join(cmd[:3])} failed: {done.stderr.strip()}"
        return
    try:
        yield None
    finally:
        if _run("umount", str(where)).returncode:
            _run("umount", "-l", str(where))


def _median_time(fn: Callable[[], object], repeat: int, after: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        after()
    return statistics.median(times)


def _mibs(size: int, seconds: float) -> float:
    return round(size / MiB / seconds, 1) if seconds > 0 else float("inf")


class Api:
    """The admin API of the bench's control plane."""

    def __init__(self, url: str, token: str) -> None:
        self.c = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def ok(self, r: httpx.Response, status: int) -> dict[str, Any]:
        if r.status_code != status:
            raise RuntimeError(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}")
        return dict(r.json())

    def pool(self, name: str, path: Path, node: str = NODE) -> str:
        body = {"name": name, "node": node, "path": str(path)}
        pool_id = str(self.ok(self.c.post("/v1/storage-pools", json=body), 201)["id"])

        def ready() -> bool:
            view = self.c.get(f"/v1/storage-pools/{pool_id}").json()
            if view["reconciliation_status"] == "failed":
                raise RuntimeError(f"pool {name} failed: {view.get('reconciliation_error')}")
            return bool(view["reconciliation_status"] == "ready")

        _until(f"pool {name} ready", ready, 60)
        return pool_id

    def vm(self, name: str) -> dict[str, Any]:
        return self.ok(self.c.get(f"/v1/vms/{name}"), 200)

    def task(self, task_id: str, timeout: float = 600) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            t = self.ok(self.c.get(f"/v1/tasks/{task_id}"), 200)
            return t if t["status"] in FINAL else None

        return dict(_until(f"task {task_id}", final, timeout))


def _seconds(task: dict[str, Any]) -> float:
    started = datetime.fromisoformat(task["started_at"])
    return (datetime.fromisoformat(task["finished_at"]) - started).total_seconds()


def _moves(
    api: Api, vm: str, pools: list[str], repeat: int, nodes: list[str] | None = None
) -> list[dict[str, Any]]:
    """``repeat`` moves of ``vm`` back and forth between ``pools`` (on ``nodes``, one
    each, for moves across nodes); one record each."""
    out = []
    for i in range(repeat):
        target = pools[(i + 1) % 2]
        body = {"pool": target, **({"node": nodes[(i + 1) % 2]} if nodes else {})}
        t = time.perf_counter()
        accepted = api.ok(api.c.post(f"/v1/vms/{vm}/move", json=body), 202)
        task = api.task(accepted["task_id"])
        round_trip = time.perf_counter() - t
        if task["status"] != "success":
            raise RuntimeError(f"move to {target}: {task['status']} {task.get('error')}")
        removal = api.task(api.vm(vm)["status"]["task_id"])
        if removal["status"] != "success":
            raise RuntimeError(f"source removal: {removal['status']} {removal.get('error')}")
        result = task["result"]
        out.append(
            {
                "method": result["method"],
                "bytes": result["bytes"],
                "agent_s": _seconds(task),
                "round_trip_s": round_trip,
            }
        )
    return out


def _baselines(src: Path, scratch: Path, repeat: int) -> dict[str, Any]:
    """``cp`` (+ sync), ``cp --reflink=always`` and ``sha256sum`` of ``src`` into ``scratch``
    (a directory on the target's filesystem, outside every pool)."""
    scratch.mkdir(exist_ok=True)
    dst = scratch / "copy"

    def clean() -> None:
        dst.unlink(missing_ok=True)
        _run("sync", "-f", str(scratch))

    def cp(*flags: str) -> Callable[[], None]:
        def go() -> None:
            done = _run("cp", *flags, str(src), str(dst))
            if done.returncode:
                raise OSError(done.stderr.strip())

        return go

    out: dict[str, Any] = {}
    clean()
    out["cp_s"] = _median_time(cp(), repeat, clean)
    out["cp_sync_s"] = _median_time(
        lambda: (cp("--reflink=never")(), _run("sync", str(dst))), repeat, clean
    )
    try:
        out["cp_reflink_s"] = _median_time(cp("--reflink=always"), repeat, clean)
    except OSError as exc:
        out["cp_reflink_s"] = None
        out["cp_reflink_error"] = str(exc).rsplit(": ", 1)[-1] or "refused"
        clean()
    out["sha256sum_s"] = _median_time(lambda: _run("sha256sum", str(src)), repeat, lambda: None)
    shutil.rmtree(scratch, ignore_errors=True)
    return out


def _downloads(src: Path, scratch: Path, repeat: int) -> dict[str, Any]:
    """``curl`` of ``src`` from a local HTTP server into ``scratch`` (on the target's
    filesystem, outside every pool), and ``sha256sum`` of it."""
    scratch.mkdir(exist_ok=True)
    dst = scratch / "download"
    httpd, url = _serve(src.parent, src.name)

    def clean() -> None:
        dst.unlink(missing_ok=True)
        _run("sync", "-f", str(scratch))

    def curl() -> None:
        done = _run("curl", "-sSf", "-o", str(dst), url)
        if done.returncode:
            raise OSError(f"curl: {done.stderr.strip()}")

    try:
        clean()
        out = {"curl_s": _median_time(curl, repeat, clean)}
    finally:
        httpd.shutdown()
        httpd.server_close()
    out["sha256sum_s"] = _median_time(lambda: _run("sha256sum", str(src)), repeat, lambda: None)
    shutil.rmtree(scratch, ignore_errors=True)
    return out


def _vm_on(api: Api, label: str, url: str, vm: str, pool_id: str) -> None:
    body = {"name": vm, "image_url": url, "arch": "amd64", "vcpus": 1, "memory_mb": 256}
    created = api.ok(
        api.c.post("/v1/vms", json={**body, "pool": pool_id, "power_state": "stopped"}), 201
    )
    task = api.task(created["status"]["task_id"])
    if task["status"] != "success":
        raise RuntimeError(f"vm create on {label}: {task['status']} {task.get('error')}")


def _measure(
    label: str,
    api: Api,
    url: str,
    roots: tuple[Path, Path],
    vm: str,
    repeat: int,
    baselines: Callable[[Path, Path, int], dict[str, Any]],
    nodes: list[str] | None = None,
) -> dict[str, Any]:
    """A pool at each of ``roots`` (on ``nodes``, one each; else both on ``NODE``), a VM
    on the first, its moves and ``baselines`` of its disk into the other root; the record,
    its row with the move columns only (the caller adds the baselines')."""
    names = [f"{vm}-a", f"{vm}-b"]
    pool_ids = [
        api.pool(n, r / "pool", node)
        for n, r, node in zip(names, roots, nodes or [NODE, NODE], strict=True)
    ]
    _vm_on(api, label, url, vm, pool_ids[0])
    moves = _moves(api, vm, names, repeat, nodes)
    disk = Path(api.vm(vm)["disks"][0]["file_path"])
    other = roots[0] if disk.is_relative_to(roots[1]) else roots[1]
    base = baselines(disk, other / "baseline", repeat)
    size = moves[0]["bytes"]
    agent_s = statistics.median(m["agent_s"] for m in moves)
    trip_s = statistics.median(m["round_trip_s"] for m in moves)
    methods = sorted({m["method"] for m in moves})
    return {
        "setup": label,
        "size_bytes": size,
        "methods": methods,
        "agent_s": agent_s,
        "round_trip_s": trip_s,
        "moves": moves,
        **base,
        "row": {
            "setup": label,
            "method": "/".join(methods),
            "move MiB/s (agent)": _mibs(size, agent_s),
            "move MiB/s (API round trip)": _mibs(size, trip_s),
        },
    }


def _cross(
    label: str, api: Api, url: str, roots: tuple[Path, Path], vm: str, repeat: int
) -> dict[str, Any]:
    """A pool on each node at ``roots``, a VM on the first, its moves across the nodes,
    and ``curl`` of the same file over loopback."""
    out = _measure(label, api, url, roots, vm, repeat, _downloads, [NODE, NODE_B])
    size = out["size_bytes"]
    out["row"] |= {
        "curl over loopback HTTP": f"{_mibs(size, out['curl_s'])} MiB/s",
        "sha256sum": f"{_mibs(size, out['sha256sum_s'])} MiB/s",
    }
    return out


def _setup(
    label: str, api: Api, url: str, roots: tuple[Path, Path], vm: str, repeat: int
) -> dict[str, Any]:
    """Two pools at ``roots``, a VM on the first, its moves and the baselines."""
    out = _measure(label, api, url, roots, vm, repeat, _baselines)
    size = out["size_bytes"]
    reflink = (
        f"{_mibs(size, out['cp_reflink_s'])} MiB/s ({out['cp_reflink_s']:.4f} s)"
        if out["cp_reflink_s"] is not None
        else f"refused ({out['cp_reflink_error']})"
    )
    out["row"] |= {
        "cp": f"{_mibs(size, out['cp_s'])} MiB/s",
        "cp --reflink=never + sync": f"{_mibs(size, out['cp_sync_s'])} MiB/s",
        "cp --reflink=always": reflink,
        "sha256sum": f"{_mibs(size, out['sha256sum_s'])} MiB/s",
    }
    return out


def _serve(
    directory: Path, name: str = "disk.qcow2"
) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_Quiet, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/{name}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="64 MiB, 2 moves per setup")
    ap.add_argument("--repeat", type=int, default=None, help="moves per setup (3; 2 quick)")
    ap.add_argument("--mib", type=int, default=None, help="disk size (256; 64 quick)")
    args = ap.parse_args(argv)
    size = (args.mib or (64 if args.quick else 256)) * MiB
    repeat = args.repeat or (2 if args.quick else 3)
    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="oxmv-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        image = _image(work, size)
        httpd, url = _serve(image.parent)
        stack.callback(httpd.shutdown)
        cp = start_control_plane(work / "cp")
        stack.callback(cp.stop)
        pools = cp.data_dir / "pools"
        mounts = {
            "tmpfs": [pools / "ta", pools / "tb"],
            "xfs": [pools / "x"],
            "cross": [pools / "na", pools / "nb"],
        }
        why: dict[str, str | None] = {}
        for kind, wheres in mounts.items():
            for where in wheres:
                fs = "xfs" if kind == "xfs" else "tmpfs"
                reason = stack.enter_context(_mounted(fs, where, work, size))
                why[kind] = why.get(kind) or reason
        if not why.get("cross") and shutil.which("curl") is None:
            why["cross"] = "needs curl (the baseline)"
        env = {
            "OTHERIX_IMAGES__ALLOW_LOOPBACK_AND_LINK_LOCAL": "true",
            "OTHERIX_IMAGES__SPACE_MARGIN_BYTES": str(MiB),
            "OTHERIX_VMS__ENABLED": "false",
            # two agents on one host: any free loopback port each
            "OTHERIX_TRANSFER__LISTEN": "127.0.0.1:0",
        }
        # the agents hold their pool roots open: they go before the unmounts (LIFO)
        for node in (NODE, NODE_B):
            stack.callback(stop_process, start_agent(cp, cp.token(), work, node, extra_env=env))
        api = Api(cp.url, cp.token())
        stack.callback(api.c.close)
        setups = {
            "tmpfs": ("two tmpfs pools (no reflink)", (pools / "ta", pools / "tb")),
            "xfs": ("one XFS, reflink=1, loop", (pools / "x" / "a", pools / "x" / "b")),
        }
        for kind, (label, roots) in setups.items():
            if why.get(kind):
                skipped[label] = str(why[kind])
                print(f"skipped {label}: {why[kind]}")
                continue
            results.append(_setup(label, api, url, roots, f"mv-{kind}", repeat))
        cross_label = "two nodes (two agents, loopback), a tmpfs pool each"
        cross: dict[str, Any] | None = None
        if why.get("cross"):
            skipped[cross_label] = str(why["cross"])
            print(f"skipped {cross_label}: {why['cross']}")
        else:
            nodes = (pools / "na", pools / "nb")
            cross = _cross(cross_label, api, url, nodes, "mv-cross", repeat)
    rows = [r.pop("row") for r in results]
    cross_row = cross.pop("row") if cross else None
    heads = [
        headline(
            f"vm move {r['size_bytes'] // MiB} MiB, {r['setup']}",
            f"{row['move MiB/s (agent)']} MiB/s ({row['method']}; "
            f"{row['move MiB/s (API round trip)']} MiB/s POST to success)",
            baseline=f"cp {row['cp']}; cp+sync {row['cp --reflink=never + sync']}; "
            f"cp --reflink=always {row['cp --reflink=always']}; sha256sum {row['sha256sum']}",
        )
        for r, row in zip(results, rows, strict=True)
    ]
    if cross is not None and cross_row is not None:
        heads.append(
            headline(
                f"vm move {cross['size_bytes'] // MiB} MiB across nodes, {cross['setup']}",
                f"{cross_row['move MiB/s (agent)']} MiB/s ({cross_row['method']}; "
                f"{cross_row['move MiB/s (API round trip)']} MiB/s POST to success)",
                baseline=f"curl over loopback HTTP {cross_row['curl over loopback HTTP']}; "
                f"sha256sum {cross_row['sha256sum']}",
            )
        )
    heads += [
        headline(f"vm move, {label}", "skipped", baseline=reason)
        for label, reason in skipped.items()
    ]
    print(f"# vm move ({machine()})\n")
    print(f"{size // MiB} MiB qcow2 of random data; median of {repeat} moves per setup\n")
    print(table(rows) if rows else "(no setup could run)")
    if cross_row is not None:
        print(f"\n{table([cross_row])}")
    return {
        "machine": machine(),
        "headline": heads,
        "size_bytes": size,
        "repeat": repeat,
        "setups": results,
        "across_nodes": cross,
        "skipped": skipped,
    }


if __name__ == "__main__":
    out = main()
    Path("bench/results").mkdir(parents=True, exist_ok=True)
    Path("bench/results/vm_move.json").write_text(json.dumps(out, indent=2, default=str))
