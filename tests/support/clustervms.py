"""Pools and VMs on a harness ``Cluster``, made and read through its admin API.

For the tests that run real ``otherix-agent`` processes and download real
images (``tests/agent/test_agent_vms.py``, ``tests/security/test_security_slow_source.py``
and the fault tests through ``tests/faults/agenthelpers.py``): ``one_node`` (a
control plane and one ready agent), :class:`Pool` (created on one node, waited
``ready``, its directories seen from the host), ``create_vm``, ``get_vm`` /
``find_vm``, ``wait_phase`` and ``delete_vm``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from support.harness import FAST, AgentProc, Cluster, ControlPlane, wait_until


@contextlib.contextmanager
def one_node(
    tmp_path: Path,
    name: str = "node-a",
    *,
    overrides: Mapping[str, Any] = FAST,
    agent_config: Mapping[str, Any] | None = None,
    mount_ns: bool = True,
) -> Iterator[tuple[Cluster, AgentProc]]:
    """A control plane (``overrides``: FAST liveness) and one ready agent, both under
    ``tmp_path``; everything stopped on exit."""
    cp = ControlPlane(tmp_path / "api", overrides=overrides).start()
    try:
        with Cluster(cp, tmp_path, agent_config=agent_config) as cluster:
            node = cluster.add_node(name, mount_ns=mount_ns)
            cluster.wait_node_status(name, "ready", timeout=20)
            yield cluster, node
    finally:
        cp.stop()


class Pool:
    """A pool created through the API on one node, seen from the host."""

    def __init__(self, cluster: Cluster, node: AgentProc, name: str) -> None:
        self.name = name
        self.path = f"/var/lib/otherix/pools/{name}"
        r = cluster.admin.post(
            "/v1/storage-pools", json={"name": name, "node": node.name, "path": self.path}
        )
        assert r.status_code == 201, r.text
        self.id = r.json()["id"]
        self.cluster = cluster
        cluster.wait_pool_status(node.name, name, "ready", timeout=20)
        self.root = node.host_path(self.path)

    def view(self) -> dict[str, Any]:
        r = self.cluster.admin.get(f"/v1/storage-pools/{self.id}")
        r.raise_for_status()
        return dict(r.json())

    def images(self) -> list[dict[str, Any]]:
        """The images the pool view lists."""
        return list(self.view()["images"])

    def listed_images(self) -> dict[str, str]:
        """name -> sha256 of the images the pool view lists."""
        return {i["name"]: i["sha256"] for i in self.images()}

    def scratch(self) -> list[str]:
        return sorted(p.name for p in (self.root / "scratch").iterdir())

    def scratch_sizes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in (self.root / "scratch").iterdir():
            with contextlib.suppress(FileNotFoundError):
                out[p.name] = p.stat().st_size
        return out

    def images_dir(self) -> list[str]:
        return sorted(p.name for p in (self.root / "images").iterdir())

    def vm_dir(self, vm_id: str) -> Path:
        return self.root / "vms" / vm_id

    def delete(self) -> httpx.Response:
        return self.cluster.admin.delete(f"/v1/storage-pools/{self.id}")


def create_vm(cluster: Cluster, name: str, pool: Pool, url: str, **fields: Any) -> dict[str, Any]:
    body = {"name": name, "image_url": url, "arch": "amd64", "vcpus": 1, "memory_mb": 512}
    r = cluster.admin.post("/v1/vms", json={**body, "pool": pool.id, **fields})
    assert r.status_code == 201, r.text
    return dict(r.json())


def find_vm(cluster: Cluster, name: str) -> dict[str, Any] | None:
    """VM ``name``, or None once it is gone (404)."""
    r = cluster.admin.get(f"/v1/vms/{name}")
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return dict(r.json())


def get_vm(cluster: Cluster, name: str) -> dict[str, Any]:
    r = cluster.admin.get(f"/v1/vms/{name}")
    r.raise_for_status()
    return dict(r.json())


def wait_phase(cluster: Cluster, name: str, phase: str, timeout: float = 30) -> dict[str, Any]:
    """Wait until VM ``name`` is in ``phase``; a VM in ``error`` (unless awaited) fails at once."""

    def check() -> dict[str, Any] | None:
        vm = find_vm(cluster, name)
        assert vm is not None, f"vm {name} vanished"
        if vm["status"]["phase"] == "error" and phase != "error":
            raise AssertionError(f"vm {name} failed: {vm['status']}")
        return vm if vm["status"]["phase"] == phase else None

    return wait_until(check, timeout, f"vm {name} {phase}")


def delete_vm(cluster: Cluster, name: str) -> None:
    """Delete VM ``name`` and wait (at most 30 s) until it is gone."""
    r = cluster.admin.delete(f"/v1/vms/{name}")
    assert r.status_code in (202, 204), r.text
    wait_until(lambda: find_vm(cluster, name) is None, 30, f"vm {name} gone")
