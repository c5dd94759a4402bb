"""The one spy for the agent's task-report seam (``update_task``), used by the
outbox, VM-task and fair-download tests."""

from __future__ import annotations

import threading

from otherix.models.heartbeat import TaskUpdate

__all__ = ["SpyReporter"]


class SpyReporter:
    """Records accepted reports, thread-safe; ``errors`` are raised first, one per call.

    With ``node``, every report must come from that node.
    """

    def __init__(self, node: str | None = None) -> None:
        self.node = node
        self.sent: list[tuple[str, TaskUpdate]] = []
        self.errors: list[Exception] = []
        self.calls = 0
        self.event = threading.Event()
        self.lock = threading.Lock()

    def update_task(self, node: str, task_id: str, update: TaskUpdate) -> None:
        if self.node is not None:
            assert node == self.node
        with self.lock:
            self.calls += 1
            if self.errors:
                raise self.errors.pop(0)
            self.sent.append((task_id, update))
        self.event.set()

    def of(self, task_id: str) -> list[TaskUpdate]:
        """The reports accepted for ``task_id``, in order."""
        with self.lock:
            return [u for t, u in self.sent if t == task_id]
