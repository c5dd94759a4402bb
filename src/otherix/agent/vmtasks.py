"""VM tasks in worker threads: dedupe, cancellation, progress, retries, outcome.

Owns :class:`VmTasks`. The task runner (``otherix.agent.tasks``) hands it
every ``vm.create`` and ``vm.delete`` task of the desired state with
``submit`` and returns at once, so a download never holds up a heartbeat or a
watch. The work itself is ``otherix.agent.vmwork``; reports go through the
``TaskOutbox`` (``otherix.agent.outbox``), which sends progress at most twice
a second and retries a failed outcome report without redoing the work.

- **Lanes.** ``vm.create`` runs on ``vm_create_workers`` threads (2), so at
  most that many downloads or clones run at once; more wait in line.
  ``vm.delete`` has its own thread: removing a directory never waits behind
  a download.
- **Dedupe** by task id: a task already queued, running or done is not
  started again while it is in the desired state. The table forgets a task
  when the control plane drops it (``forget``). After an agent restart an
  unfinished task simply runs again: the cache hits (or a partial download,
  never an entry, is fetched again from scratch) and the complete disk is
  found, not rebuilt.
- **Progress**: one ``running`` report when the work starts, then
  ``{bytes_done, bytes_total, phase}`` with ``progress`` 0-90 while
  downloading (by bytes, when the size is known) and 90-99 while cloning.
- **Retries**: a ``vm.create`` whose failure may pass (``download_failed``,
  ``clone_failed``, a retryable ``image_unavailable``; not ``pool_full``,
  which waiting seconds does not cure) is tried ``vm_create_attempts`` times,
  ``retry_delay`` apart, doubling.
- **Cancellation** is cooperative: the progress callbacks raise once a job is
  cancelled, and the image library cleans up (no scratch file, no partial
  disk). A ``vm.delete`` cancels the same VM's unfinished ``vm.create`` (it
  reports ``failed`` with code ``cancelled``). If that create has started, the
  delete is queued only once it has wound down (no thread waits for it), so
  it never removes the directory before a late clone lands there. A task the
  control plane dropped, and every job at shutdown, is cancelled without a
  report (a restart runs it again).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Final

from otherix.agent import vmwork
from otherix.agent.images import ImageCache, Progress
from otherix.agent.outbox import TaskOutbox
from otherix.agent.vmwork import VM_CREATE, VM_DELETE, CreateArgs, DeleteArgs, TaskFailure
from otherix.models.heartbeat import AgentTask, TaskUpdate

__all__ = ["VM_TASK_TYPES", "VmTasks"]

_log = logging.getLogger(__name__)

VM_TASK_TYPES: Final = frozenset({VM_CREATE, VM_DELETE})
#: progress (percent) ranges of the two phases of a create
_DOWNLOAD: Final = (0, 90)
_CLONE: Final = (90, 99)
_DELETING: Final = "the VM is being deleted"


class _Cancelled(Exception):
    """Raised by a progress callback of a cancelled job; unwinds the image library."""


@dataclass(eq=False)
class _Job:
    task: AgentTask
    vm_id: str | None
    cancelled: threading.Event = field(default_factory=threading.Event)
    #: the message to report when cancelled (None: cancel without a report)
    cancel_message: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    started: bool = False  # picked up by a worker (under VmTasks._lock)
    #: jobs to queue once this one is done (a delete after its VM's running create)
    then: list[_Job] = field(default_factory=list)

    def cancel(self, message: str | None) -> None:
        if not self.cancelled.is_set():
            self.cancel_message = message
            self.cancelled.set()


class VmTasks:
    """Runs ``vm.create``/``vm.delete`` tasks in worker threads (module docstring)."""

    def __init__(
        self,
        *,
        cache: ImageCache,
        pools: vmwork.PoolResolver,
        outbox: TaskOutbox,
        create_workers: int = 2,
        attempts: int = 3,
        retry_delay: float = 5.0,
    ) -> None:
        self._cache = cache
        self._pools = pools
        self._outbox = outbox
        self._attempts = attempts
        self._retry_delay = retry_delay
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._images_changed = threading.Event()
        self._lanes: dict[str, queue.SimpleQueue[_Job | None]] = {
            VM_CREATE: queue.SimpleQueue(),
            VM_DELETE: queue.SimpleQueue(),
        }
        self._threads = [
            threading.Thread(
                target=self._work, args=(self._lanes[kind],), name=f"{kind}-{i}", daemon=True
            )
            for kind, count in ((VM_CREATE, create_workers), (VM_DELETE, 1))
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    # -- the task runner's side (main thread) ---------------------------------------

    @staticmethod
    def handles(task_type: str) -> bool:
        return task_type in VM_TASK_TYPES

    def submit(self, task: AgentTask) -> bool:
        """Queue ``task`` unless it is already known; True if it was queued."""
        with self._lock:
            if task.id in self._jobs:
                return False
            job = _Job(task, vmwork.vm_id_of(task.args))
            self._jobs[task.id] = job
            same_vm = [
                j
                for j in self._jobs.values()
                if j is not job and j.vm_id == job.vm_id and job.vm_id
            ]
            after: _Job | None = None
            if task.type == VM_DELETE:
                for other in same_vm:
                    if other.task.type == VM_CREATE and not other.done.is_set():
                        other.cancel(_DELETING)
                        if other.started:
                            after = other
            elif any(o.task.type == VM_DELETE for o in same_vm):
                job.cancel(_DELETING)
            if after is not None:
                after.then.append(job)
        _log.info("task queued", extra={"task": task.id, "type": task.type, "vm": job.vm_id})
        if after is None:
            self._lanes[task.type].put(job)
        return True

    def forget(self, keep: set[str]) -> None:
        """Drop tasks no longer desired, cancelling (without a report) any still running."""
        with self._lock:
            for task_id in [t for t in self._jobs if t not in keep]:
                job = self._jobs.pop(task_id)
                if not job.done.is_set():
                    _log.info("task withdrawn by the control plane", extra={"task": task_id})
                    job.cancel(None)
        self._outbox.forget(keep)

    def take_images_changed(self) -> bool:
        """True (once) when a create may have changed some pool's image cache."""
        if self._images_changed.is_set():
            self._images_changed.clear()
            return True
        return False

    def idle(self) -> bool:
        """No job queued or running."""
        with self._lock:
            return all(j.done.is_set() for j in self._jobs.values())

    def busy(self) -> bool:
        """A job is queued or running, or its effect on the caches is not taken yet."""
        return self._images_changed.is_set() or not self.idle()

    def close(self, timeout: float = 5.0) -> None:
        """Cancel every job without a report and stop the workers (bounded wait)."""
        with self._lock:
            for job in self._jobs.values():
                job.cancel(None)
        for kind, lane in self._lanes.items():
            for thread in self._threads:
                if thread.name.startswith(kind):
                    lane.put(None)
        for thread in self._threads:
            thread.join(timeout / max(1, len(self._threads)))

    # -- workers ---------------------------------------------------------------------

    def _work(self, lane: queue.SimpleQueue[_Job | None]) -> None:
        while (job := lane.get()) is not None:
            with self._lock:
                job.started = True
            try:
                self._run(job)
            except Exception:  # pragma: no cover - _run reports its own failures
                _log.exception("vm task worker failed", extra={"task": job.task.id})
            finally:
                with self._lock:
                    job.done.set()
                    follow, job.then = job.then, []
                for nxt in follow:
                    self._lanes[nxt.task.type].put(nxt)

    def _run(self, job: _Job) -> None:
        task = job.task
        if not job.cancelled.is_set():
            self._outbox.progress(task.id, TaskUpdate(status="running", progress=0))
            try:
                result = self._create(job) if task.type == VM_CREATE else self._delete(job)
            except Exception as exc:
                if not job.cancelled.is_set():
                    self._failed(job, vmwork.failure_of(exc))
                    return
            else:
                _log.info("task succeeded", extra={"task": task.id, "type": task.type})
                self._outbox.finish(
                    task.id, TaskUpdate(status="success", progress=100, result=result)
                )
                return
        if job.cancel_message is not None:
            self._failed(job, TaskFailure("cancelled", job.cancel_message))
        else:
            _log.info("task abandoned", extra={"task": task.id, "type": task.type})

    def _failed(self, job: _Job, failure: TaskFailure) -> None:
        _log.warning(
            "task failed",
            extra={"task": job.task.id, "type": job.task.type, "error": str(failure)},
        )
        self._outbox.finish(job.task.id, TaskUpdate(status="failed", error=failure.to_error()))

    def _progress(self, job: _Job, phase: str, span: tuple[int, int]) -> Progress:
        low, high = span

        def report(done: int, total: int | None) -> None:
            if job.cancelled.is_set():
                raise _Cancelled
            percent = low + (high - low) * min(done, total) // total if total else low
            result: dict[str, Any] = {"bytes_done": done, "bytes_total": total, "phase": phase}
            update = TaskUpdate(status="running", progress=percent, result=result)
            self._outbox.progress(job.task.id, update)

        return report

    def _create(self, job: _Job) -> dict[str, Any]:
        args = CreateArgs.parse(job.task.args)
        delay = self._retry_delay
        attempt = 1
        while True:
            try:
                return vmwork.create(
                    self._cache,
                    self._pools,
                    args,
                    download=self._progress(job, "download", _DOWNLOAD),
                    clone=self._progress(job, "clone", _CLONE),
                )
            except Exception as exc:
                if job.cancelled.is_set():
                    raise
                failure = vmwork.failure_of(exc)
                if (
                    not failure.retryable
                    or failure.code == "pool_full"
                    or attempt >= self._attempts
                ):
                    raise failure from exc
                _log.warning(
                    "vm create failed; retrying in %.0fs",
                    delay,
                    extra={"task": job.task.id, "attempt": attempt, "error": str(failure)},
                )
                if job.cancelled.wait(delay):
                    raise _Cancelled from exc
                delay, attempt = delay * 2, attempt + 1
            finally:
                self._images_changed.set()

    def _delete(self, job: _Job) -> dict[str, Any]:
        return vmwork.delete(self._pools, DeleteArgs.parse(job.task.args))
