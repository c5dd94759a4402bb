"""Helpers for the agent-side fault tests (download kills, full pools, cache damage).

Used by ``test_fault_agent_download.py``, ``test_fault_disk_full.py``,
``test_fault_cache_damage.py`` and ``test_fault_pool_identity.py``. Everything
here is real: a control plane from the harness, real ``otherix-agent``
processes, and the image origin the tests steer (``support.images.ImageOrigin``:
``hold(path, offset)`` stops a download at a chosen byte, ``no_length`` serves a
body without ``Content-Length``, every GET is recorded) and the pools and VMs
of ``support.clustervms``. Here: the agent config the faults need, tasks and
disks through the API, and the cache checks.

Cache checks (:func:`entry_problems`) read the pool's ``images/`` the way the
contract defines an entry (``{pool}/images/B`` + ``B.sha256`` + ``B.source``)
and compare with the origin's bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx

from support import clustervms
from support.harness import AgentProc, Cluster, wait_until

MiB = 1 << 20
#: Agent config every fault test needs: the origin is on loopback; quick retries.
AGENT_CONFIG: dict[str, Any] = {
    "images": {"allow_loopback_and_link_local": True, "read_timeout": 20},
    "tasks": {"retry_delay": 0.5},
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# -- cluster, tasks, disks ---------------------------------------------------------------


def one_node(
    tmp_path: Path,
    name: str = "node-a",
    *,
    agent_config: dict[str, Any] | None = None,
    mount_ns: bool = True,
) -> contextlib.AbstractContextManager[tuple[Cluster, AgentProc]]:
    """``support.clustervms.one_node`` (FAST liveness) with ``AGENT_CONFIG`` under
    ``agent_config``."""
    config = {**AGENT_CONFIG, **(agent_config or {})}
    return clustervms.one_node(tmp_path, name, agent_config=config, mount_ns=mount_ns)


def get_task(cluster: Cluster, task_id: str) -> dict[str, Any]:
    r = cluster.admin.get(f"/v1/tasks/{task_id}")
    r.raise_for_status()
    return dict(r.json())


def finished_task(cluster: Cluster, vm: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
    """The VM's latest task once it is final."""
    task_id = vm["status"]["task_id"]
    assert task_id, f"vm {vm['name']} has no task"

    def final() -> dict[str, Any] | None:
        t = get_task(cluster, task_id)
        return t if t["status"] in ("success", "failed", "cancelled") else None

    return wait_until(
        final,
        timeout,
        f"task {task_id} final",
    )


def disk_path(node: AgentProc, vm: dict[str, Any]) -> Path:
    [disk] = vm["disks"]
    assert disk["file_path"], vm
    return node.host_path(disk["file_path"])


# -- cache checks ------------------------------------------------------------------------


def entry_problems(images: Path, name: str, data: bytes) -> list[str]:
    """What is wrong with entry ``name`` as a faithful copy of ``data`` ([] if nothing)."""
    problems: list[str] = []
    image, sidecar, source = (images / name, images / f"{name}.sha256", images / f"{name}.source")
    want = sha(data)
    if not image.is_file():
        return [f"{name}: no image file"]
    got = file_sha(image)
    if got != want:
        problems.append(f"{name}: bytes hash to {got}, origin's to {want}")
    side = sidecar.read_text().strip() if sidecar.is_file() else None
    if side != got:
        problems.append(f"{name}: sidecar {side!r} does not match the file ({got})")
    try:
        meta = json.loads(source.read_text())
    except (OSError, ValueError) as exc:
        problems.append(f"{name}: unreadable .source ({exc})")
    else:
        if (meta.get("sha256"), meta.get("size_bytes")) != (want, len(data)):
            problems.append(f"{name}: .source says {meta.get('sha256')}/{meta.get('size_bytes')}")
    return problems


def uncommitted_files(images: Path) -> list[str]:
    """Image files in ``images/`` without a sidecar that matches their bytes (never usable)."""
    bad: list[str] = []
    for p in sorted(images.iterdir()):
        if p.name.endswith((".sha256", ".source")) or p.name.startswith("."):
            continue
        side = images / f"{p.name}.sha256"
        if not side.is_file() or side.read_text().strip() != file_sha(p):
            bad.append(p.name)
    return bad


def http_ok(r: httpx.Response) -> dict[str, Any]:
    assert r.is_success, r.text
    return dict(r.json())
