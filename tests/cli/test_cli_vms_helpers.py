"""Helpers for the ``otherix vm`` / ``otherix task`` suites (no tests here).

Server state is made through the public API, as an operator or a node's agent
would (``clihelpers`` joins nodes and heartbeats). :class:`PacedAgent` plays
a node's agent in a background thread for the ``--wait`` tests: it makes one
report each time the CLI sleeps between polls, and its clock advances by the
time the CLI slept, so every state is seen exactly once and rates are exact
(no real sleeping).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from clihelpers import Node, create_pool, get_json, heartbeat, join_node, pool_report

from otherix.cli.context import CliContext
from support.clock import FakeClock

MIB = 1 << 20
GIB = 1 << 30
IMAGE = "https://images.example.test/ubuntu.img"
ROOM = {"capacity": 100 * GIB, "available": 80 * GIB}


def ready_node(api: Any, name: str) -> Node:
    """A ready node whose ``default`` pool is reconciled ready."""
    node = join_node(api, name)
    heartbeat(api, node)
    heartbeat(api, node, [pool_report("default", **ROOM)])
    return node


def ready_pool(api: Any, node: Node, name: str) -> dict[str, Any]:
    """A pool instance ``name`` on ``node``, reported ready with room."""
    pool = create_pool(api, name, node.name, f"/var/lib/otherix/pools/{node.name}-{name}")
    reports = [pool_report("default", **ROOM), pool_report(name, **ROOM)]
    heartbeat(api, node, reports)
    return pool


def make_vm(api: Any, name: str, role: str = "admin", **fields: Any) -> dict[str, Any]:
    body = {"name": name, "image_url": IMAGE, "arch": "amd64", "vcpus": 2, "memory_mb": 2048}
    body.update(fields)
    with api.client(role) as c:
        r = c.post("/v1/vms", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())


def vm_of(api: Any, name: str) -> dict[str, Any] | None:
    status, body = get_json(api, f"/v1/vms/{name}")
    return body if status == 200 else None


def desired_tasks(api: Any, node: Node) -> list[dict[str, Any]]:
    """The node's pending tasks, read the way the agent does (watch)."""
    with api.client(None) as c:
        r = c.get(
            f"/v1/nodes/{node.name}/watch",
            params={"revision": 0, "timeout": 0},
            headers={"Authorization": f"Bearer {node.credential}"},
        )
        assert r.status_code == 200, r.text
        return list(r.json()["desired"]["tasks"])


def agent_report(api: Any, node: Node, task_id: str, status: str, **fields: Any) -> None:
    with api.client(None) as c:
        r = c.post(
            f"/v1/nodes/{node.name}/tasks/{task_id}",
            json={"status": status, **fields},
            headers={"Authorization": f"Bearer {node.credential}"},
        )
        assert r.status_code == 200, r.text


def running(done: int, total: int | None = 612 * MIB, phase: str = "download") -> dict:
    """A ``running`` report with byte counts, as the agent sends it (``download``/``clone``)."""
    progress = done * 100 // total if total else 0
    result = {"bytes_done": done, "bytes_total": total, "phase": phase}
    return {"status": "running", "progress": progress, "result": result}


def success(vm_id: str | None = None, pool_path: str = "/p") -> dict:
    """What the agent reports when a ``vm.create`` (or ``vm.delete``) succeeds."""
    if vm_id is None:
        return {"status": "success", "result": {}}
    result = {
        "vm_id": vm_id,
        "image_sha256": "ab" * 32,
        "virtual_size_bytes": 10 * GIB,
        "disk_size_bytes": 3 * GIB,
        "file_path": f"{pool_path}/vms/{vm_id}/disk.qcow2",
    }
    return {"status": "success", "result": result}


def created(task: dict[str, Any]) -> dict:
    """A step: the ``vm.create`` of ``task`` succeeded (and, when its args say ``start``,
    the VM started: the agent puts the VM as observed in ``result.power``)."""
    report = success(task["args"]["vm_id"], task["args"]["pool_path"])
    if task["args"].get("start"):
        report["result"]["power"] = {
            "id": task["args"]["vm_id"],
            "state": "running",
            "pid": 4242,
            "accelerator": "tcg",
            "started_at": "2026-12-03T10:00:00Z",
        }
    return report


def failure(code: str, message: str) -> dict:
    return {"status": "failed", "error": {"code": code, "message": message}}


@dataclass
class PacedAgent:
    """A node's agent in a background thread, one report per CLI poll.

    ``steps`` are task reports (``running(...)``, ``success(...)``,
    ``failure(...)``) for the first task of ``task_type`` in the node's
    desired state; a callable step is called with the task and returns the
    report. Pass :meth:`context` to the CLI. ``join()`` re-raises any error
    the thread hit.
    """

    api: Any
    node: Node
    steps: list[Any]
    task_type: str = "vm.create"
    clock: float = 1000.0
    slept: list[float] = field(default_factory=list)
    _turn: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    _done: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    _error: BaseException | None = None

    def __post_init__(self) -> None:
        self._left = len(self.steps)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def context(self) -> CliContext:
        return CliContext(sleep=self.sleep, monotonic=lambda: self.clock)

    def sleep(self, seconds: float) -> None:
        """The CLI's sleep: advance the clock; let the agent make its next report."""
        self.slept.append(seconds)
        self.clock += seconds
        if self._left and self._error is None:
            self._left -= 1
            self._turn.release()
            assert self._done.acquire(timeout=20), "the agent thread did not report"

    def _task(self) -> dict[str, Any]:
        tasks = [t for t in desired_tasks(self.api, self.node) if t["type"] == self.task_type]
        assert tasks, f"no {self.task_type} task for node {self.node.name}"
        return tasks[0]

    def _run(self) -> None:
        try:
            task: dict[str, Any] | None = None
            for step in self.steps:
                assert self._turn.acquire(timeout=60)
                task = task or self._task()
                report = step(task) if callable(step) else step
                agent_report(self.api, self.node, task["id"], **report)
                self._done.release()
        except BaseException as exc:  # surfaced by join()
            self._error = exc
            self._done.release()

    def join(self) -> None:
        self._thread.join(timeout=20)
        if self._error is not None:
            raise self._error
        assert self._left == 0, f"{self._left} agent steps were never played"


def clock_context(clock: FakeClock) -> CliContext:
    """A CLI context whose clock advances only when the CLI sleeps (for timeouts)."""
    return CliContext(sleep=clock.sleep, monotonic=clock.monotonic)


def frames(stderr: str) -> list[str]:
    """The successive contents of the in-place progress line (``\\r``-separated)."""
    return [part.rstrip() for part in stderr.split("\r") if part.strip()]
