"""Helpers for the ``kill -9`` tests of cache eviction and scrub (``test_fault_cache_evict.py``,
``test_fault_cache_scrub.py``).

Real parts only: a control plane and one agent that runs VMs (real QEMU) from the
harness, entries written into the pool's ``images/`` as the contract defines them (an
image, its ``.source`` and its ``.sha256`` sidecar, committed in the agent's order), a
qcow2 disk under ``vms/`` that uses a cache entry as its backing file (what a disk
imported by hand may do), and the agent's fault points (``otherix.agent.faultpoints``:
``debug.pause_at`` makes the agent log ``fault point point=NAME`` and pause there, so
``FaultLog.wait`` can kill it at exactly the n-th point).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agenthelpers import AGENT_CONFIG, file_sha, get_task, sha

from support.clustervms import Pool
from support.harness import FAST, AgentProc, Cluster, ControlPlane, wait_until

FILES = ("", ".source", ".sha256")


@contextlib.contextmanager
def vm_node(
    tmp_path: Path, pause_at: Mapping[str, float], name: str = "node-a"
) -> Iterator[tuple[Cluster, AgentProc]]:
    """A control plane and one ready agent that runs VMs and pauses at ``pause_at``."""
    config = {**AGENT_CONFIG, "debug": {"pause_at": dict(pause_at)}}
    cp = ControlPlane(tmp_path / "api", overrides=FAST).start()
    try:
        with Cluster(cp, tmp_path, agent_config=config) as cluster:
            node = cluster.add_node(name, runs_vms=True)
            cluster.wait_node_status(name, "ready", timeout=20)
            yield cluster, node
    finally:
        cp.stop()


def write_entry(images: Path, name: str, data: bytes) -> None:
    """A cache entry ``name`` holding ``data``, committed in the agent's order (image,
    ``.source``, sidecar last)."""
    digest = sha(data)
    source = {
        "url": f"http://origin.invalid/{name}",
        "aliases": [],
        "sha256": digest,
        "format": "raw",
        "size_bytes": len(data),
        "virtual_size_bytes": len(data),
        "imported_at": "2026-12-01T00:00:00Z",
    }
    for suffix, body in (("", data), (".source", json.dumps(source).encode())):
        tmp = images / f".{name}{suffix}.tmp-test"
        tmp.write_bytes(body)
        os.replace(tmp, images / f"{name}{suffix}")
    (images / f"{name}.sha256").write_text(digest)
    old = time.time() - 86400  # used a day ago: older than any min_age the tests set
    os.utime(images / f"{name}.sha256", (old, old))


def entry_files(images: Path, name: str) -> list[str]:
    """Which of the entry's three files exist."""
    return [f"{name}{s}" for s in FILES if os.path.lexists(images / f"{name}{s}")]


def entry_state(images: Path, name: str, data: bytes) -> str:
    """``present`` (all three files, the bytes hash to the sidecar and to ``data``),
    ``gone`` (no file left), or what is wrong."""
    files = entry_files(images, name)
    if not files:
        return "gone"
    if len(files) < len(FILES):
        return f"half: only {files}"
    side = (images / f"{name}.sha256").read_text().strip()
    got = file_sha(images / name)
    if side != got or got != sha(data):
        return f"bad: sidecar {side[:12]}, file {got[:12]}, want {sha(data)[:12]}"
    return "present"


def backing_disk(pool: Pool, image: str) -> Path:
    """A qcow2 disk ``vms/hand-imported/disk.qcow2`` whose backing file is ``images/image``."""
    vm_dir = pool.root / "vms" / "hand-imported"
    vm_dir.mkdir(parents=True, exist_ok=True)
    disk = vm_dir / "disk.qcow2"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-u",
         "-b", f"../../images/{image}", str(disk), "4M"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return disk


@dataclass
class FaultLog:
    """The agent's ``fault point`` log lines since ``mark``."""

    node: AgentProc
    offset: int = 0

    def mark(self) -> None:
        self.offset = self.node.log_path.stat().st_size

    def points(self, point: str) -> list[str]:
        with open(self.node.log_path, "rb") as fh:
            fh.seek(self.offset)
            text = fh.read().decode("utf-8", "replace")
        return [line for line in text.splitlines() if f"fault point point={point}" in line]

    def wait(self, point: str, n: int, timeout: float = 30) -> str:
        """Wait until the agent stands at the ``n``-th (from 0) ``point``; that log line."""

        def reached() -> str | None:
            lines = self.points(point)
            return lines[n] if len(lines) > n else None

        return wait_until(reached, timeout, f"fault point {point} #{n}")


def final_task(cluster: Cluster, task_id: str, timeout: float = 60) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        t = get_task(cluster, task_id)
        return t if t["status"] in ("success", "failed", "cancelled") else None

    return wait_until(final, timeout, f"task {task_id} final")


def events(cluster: Cluster, node: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in cluster.node(node)["events"] if e["reason"] == reason]


def detail(line: str, key: str) -> str:
    """``key=value`` of a log line."""
    for part in line.split():
        if part.startswith(f"{key}="):
            return part.split("=", 1)[1]
    raise AssertionError(f"no {key}= in {line!r}")
