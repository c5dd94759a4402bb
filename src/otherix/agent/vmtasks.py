"""VM tasks in worker threads: dedupe, cancellation, progress, retries, outcome.

Owns :class:`VmTasks`. The task runner (``otherix.agent.tasks``) hands it
every ``vm.create`` and ``vm.delete`` task of the desired state with
``submit`` and returns at once, so a download never holds up a heartbeat or a
watch. The work itself is ``otherix.agent.vmwork``; reports go through the
``TaskOutbox`` (``otherix.agent.outbox``), which sends progress at most twice
a second and retries a failed outcome report without redoing the work.

- **Lanes.** ``vm.create`` runs on ``vm_create_workers`` threads (4), so at
  most that many downloads or clones run at once; more wait in the
  :class:`~otherix.agent.vmline.CreateLine`, which starts the oldest job
  whose image source has fewer than ``per_source`` (2) jobs running. A job
  waiting for its source's slot holds no worker, so one slow source never
  holds every worker. ``vm.delete`` has its own thread: removing a directory
  never waits behind a download.
- **Dedupe** by task id: a task already queued, running or done is not
  started again while it is in the desired state. The table forgets a task
  when the control plane drops it (``forget``). After an agent restart an
  unfinished task simply runs again: the cache hits (or a partial download,
  never an entry, is fetched again from scratch) and the complete disk is
  found, not rebuilt.
- **Progress**: one ``running`` report when a try starts, then
  ``{bytes_done, bytes_total, phase}`` (and ``bytes_per_second`` once a
  second of it is seen) with ``progress`` 0-90 while downloading (by bytes,
  when the size is known) and 90-99 while cloning. Every report carries
  ``attempt`` and ``max_attempts``, which the control plane shows on the task.
- **Retries**: a ``vm.create`` whose failure is ``retryable`` (decided once,
  by the image library's table in ``images.errors``: ``download_failed``,
  ``clone_failed``, an I/O ``image_unavailable``) is tried
  ``vm_create_attempts`` times, ``retry_delay`` apart, doubling. Between
  tries the job waits in the line (no worker, no source slot held). Every
  other failure (``image_url_forbidden``, ``download_too_slow``,
  ``pool_full``, ...) is reported at once.
- **Cancellation** is cooperative: the progress callbacks raise once a job is
  cancelled, and the image library cleans up (no scratch file, no partial
  disk). A ``vm.delete`` cancels the same VM's unfinished ``vm.create`` (it
  reports ``failed`` with code ``cancelled``). If a worker is on that create
  right now, the delete is queued only once the try has wound down (no thread
  waits for it), so it never removes the directory before a late clone lands
  there; a create waiting in line (or between tries) just reports. A task the
  control plane dropped, and every job at shutdown, is cancelled without a
  report (a restart runs it again).
- **Moves** (``vm.move``, ``vm.disk_remove``; ``otherix.agent.vmmove``) run on
  one thread of their own, in the order the control plane made them, so the
  removal of a copy an earlier move left behind never overlaps a later move of
  the same VM; tried once (a killed agent runs an unfinished one again, which
  finds and verifies what it had copied). Progress ``{bytes_done,
  bytes_total, phase}`` (``source``, ``copy``, ``verify``). The VM's restart
  policy is held while its disk moves, and a VM whose QEMU runs is refused
  (``vm_running``).
- **Power** (``vm.start``, ``vm.stop``, ``vm.restart``, ``vm.poweroff``;
  ``otherix.agent.vmpower``) run on ``power_workers`` threads (2) of their
  own, so a stop that waits for a guest never holds up a download, and are
  tried once. A ``vm.create`` whose args say ``start`` starts the VM once its
  disk is made; a start that fails does not fail the create (the disk is
  there; the VM reports ``failed`` with QEMU's message). A ``vm.delete`` of a
  VM whose QEMU runs fails with ``vm_running`` unless its args say ``force``,
  which powers it off first; then the run directory record goes too. Without
  a VM host (``host=None``: QEMU not installed) power tasks fail with
  ``vm_unavailable``.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Final

from otherix.agent import vmmove, vmpower, vmwork
from otherix.agent.images import ImageCache, Progress
from otherix.agent.images.progress import Speed
from otherix.agent.outbox import TaskOutbox
from otherix.agent.vmline import CreateLine, source_of
from otherix.agent.vmwork import VM_CREATE, VM_DELETE, CreateArgs, DeleteArgs, TaskFailure
from otherix.models.heartbeat import AgentTask, TaskUpdate
from otherix.retry import RetryPolicy

__all__ = ["VM_TASK_TYPES", "VmTasks"]

_log = logging.getLogger(__name__)

VM_TASK_TYPES: Final = frozenset(
    {VM_CREATE, VM_DELETE, vmmove.VM_MOVE, vmmove.VM_DISK_REMOVE, *vmpower.POWER_TYPES}
)
_MOVE_TYPES: Final = frozenset({vmmove.VM_MOVE, vmmove.VM_DISK_REMOVE})
#: progress (percent) ranges of the two phases of a create
_DOWNLOAD: Final = (0, 90)
_CLONE: Final = (90, 99)
_DELETING: Final = "the VM is being deleted"
#: seconds of progress the reported ``bytes_per_second`` is averaged over (at most)
_RATE_SPAN: Final = 5.0


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
    running: bool = False  # a worker is on it right now (under VmTasks._lock)
    attempt: int = 1  # the try that runs (or runs next)
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
        create_workers: int = 4,
        per_source: int = 2,
        attempts: int = 3,
        retry_delay: float = 5.0,
        host: vmpower.VmHost | None = None,
        power_workers: int = 2,
        no_vms: str = vmpower.NO_VMS,
        ownership: vmmove.PoolOwnership | None = None,
        move_max_bytes_per_second: int | None = None,
    ) -> None:
        self._host = host
        #: which pools declare a VM's disk (``PoolState.declares_vm``), for ``vm.disk_remove``
        self._ownership = ownership
        self._move_rate = move_max_bytes_per_second
        #: what power tasks say when this node has no VM host (``node get`` says it too)
        self._no_vms = no_vms
        self._cache = cache
        self._pools = pools
        self._outbox = outbox
        self._attempts = attempts
        #: ``vm.create`` retries: ``retry_delay`` doubling, no jitter, ``attempts`` tries.
        self._retry = RetryPolicy(initial=retry_delay, factor=2.0, attempts=attempts)
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._images_changed = threading.Event()
        self._line: CreateLine[_Job] = CreateLine(per_source)
        self._deletes: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._power: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._moves: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._create_worker, name=f"{VM_CREATE}-{i}", daemon=True)
            for i in range(create_workers)
        ]
        self._threads.append(
            threading.Thread(target=self._delete_worker, name=f"{VM_DELETE}-0", daemon=True)
        )
        self._threads.append(
            threading.Thread(target=self._move_worker, name=f"{vmmove.VM_MOVE}-0", daemon=True)
        )
        self._power_threads = power_workers
        self._threads.extend(
            threading.Thread(target=self._power_worker, name=f"vm.power-{i}", daemon=True)
            for i in range(power_workers)
        )
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
                        self._cancel(other, _DELETING)
                        if other.running:
                            after = other
            elif any(o.task.type == VM_DELETE for o in same_vm):
                job.cancel(_DELETING)
            if after is not None:
                after.then.append(job)
        _log.info("task queued", extra={"task": task.id, "type": task.type, "vm": job.vm_id})
        if after is None:
            self._enqueue(job)
        return True

    def forget(self, keep: set[str]) -> None:
        """Drop tasks no longer desired, cancelling (without a report) any still running."""
        with self._lock:
            for task_id in [t for t in self._jobs if t not in keep]:
                job = self._jobs.pop(task_id)
                if not job.done.is_set():
                    _log.info("task withdrawn by the control plane", extra={"task": task_id})
                    self._cancel(job, None)
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
        self._line.close()
        self._deletes.put(None)
        self._moves.put(None)
        for _ in range(self._power_threads):
            self._power.put(None)
        for thread in self._threads:
            thread.join(timeout / max(1, len(self._threads)))

    # -- workers ---------------------------------------------------------------------

    def _cancel(self, job: _Job, message: str | None) -> None:
        job.cancel(message)
        self._line.release(job)  # waiting in line: report it at once, no slot needed

    def _enqueue(self, job: _Job) -> None:
        if job.task.type == VM_CREATE:
            url = job.task.args.get("image_url")
            self._line.put(job, source_of(url) if isinstance(url, str) else None)
        elif job.task.type in vmpower.POWER_TYPES:
            self._power.put(job)
        elif job.task.type in _MOVE_TYPES:
            self._moves.put(job)
        else:
            self._deletes.put(job)

    def _create_worker(self) -> None:
        while (entry := self._line.take()) is not None:
            job, delay = entry.item, None
            try:
                delay = self._try(job)
            finally:
                self._line.done(entry)
            if delay is None:
                self._finish(job)
                continue
            with self._lock:  # wait out the backoff in line, holding no worker and no slot
                if job.cancelled.is_set():  # cancelled as the try ended: only report it
                    self._line.put(job, None)
                else:
                    self._line.put(job, entry.source, delay=delay)

    def _delete_worker(self) -> None:
        while (job := self._deletes.get()) is not None:
            self._try(job)
            self._images_changed.set()  # a removed disk changes the pool's usage (issue 16)
            self._finish(job)

    def _move_worker(self) -> None:
        while (job := self._moves.get()) is not None:
            self._try(job)
            self._images_changed.set()  # a moved or removed disk changes two pools' usage
            self._finish(job)

    def _power_worker(self) -> None:
        while (job := self._power.get()) is not None:
            self._try(job)
            self._finish(job)

    def _finish(self, job: _Job) -> None:
        with self._lock:
            job.done.set()
            follow, job.then = job.then, []
        for nxt in follow:
            self._enqueue(nxt)

    def _try(self, job: _Job) -> float | None:
        """One try of ``job``; None when it is over (and reported), else the delay before
        the next try. Never raises."""
        try:
            return self._run(job)
        except Exception:  # pragma: no cover - _run reports its own failures
            _log.exception("vm task worker failed", extra={"task": job.task.id})
            return None
        finally:
            with self._lock:
                job.running = False

    def _update(self, job: _Job, status: Any, **fields: Any) -> TaskUpdate:
        tries = self._attempts if job.task.type == VM_CREATE else 1
        return TaskUpdate(status=status, attempt=job.attempt, max_attempts=tries, **fields)

    def _run(self, job: _Job) -> float | None:
        task = job.task
        with self._lock:  # a delete of this VM from now on waits for this try to end
            job.running = True
            cancelled = job.cancelled.is_set()
        if not cancelled:
            self._outbox.progress(task.id, self._update(job, "running", progress=0))
            try:
                if task.type == VM_CREATE:
                    result = self._create(job)
                elif task.type == vmmove.VM_MOVE:
                    result = self._move(job)
                elif task.type == vmmove.VM_DISK_REMOVE:
                    result = self._remove_copy(task.args)
                elif task.type in vmpower.POWER_TYPES:
                    args = vmpower.PowerArgs.parse(task.args)
                    result = vmpower.run(
                        self._pools, self._host, task.type, args, unavailable=self._no_vms
                    )
                else:
                    result = self._delete(task.args)
            except Exception as exc:
                if not job.cancelled.is_set():
                    return self._failed_try(job, vmwork.failure_of(exc))
            else:
                _log.info("task succeeded", extra={"task": task.id, "type": task.type})
                update = self._update(job, "success", progress=100, result=result)
                self._outbox.finish(task.id, update)
                return None
        if job.cancel_message is not None:
            self._failed(job, TaskFailure("cancelled", job.cancel_message))
        else:
            _log.info("task abandoned", extra={"task": task.id, "type": task.type})
        return None

    def _failed_try(self, job: _Job, failure: TaskFailure) -> float | None:
        if (
            job.task.type == VM_CREATE
            and failure.retryable
            and not self._retry.exhausted(job.attempt)
        ):
            delay = self._retry.delay(job.attempt - 1)
            _log.warning(
                "vm create failed; retrying in %.0fs",
                delay,
                extra={"task": job.task.id, "attempt": job.attempt, "error": str(failure)},
            )
            job.attempt += 1
            return delay
        self._failed(job, failure)
        return None

    def _failed(self, job: _Job, failure: TaskFailure) -> None:
        _log.warning(
            "task failed",
            extra={"task": job.task.id, "type": job.task.type, "error": str(failure)},
        )
        self._outbox.finish(job.task.id, self._update(job, "failed", error=failure.to_error()))

    def _progress(self, job: _Job, phase: str, span: tuple[int, int]) -> Progress:
        low, high = span
        speed = Speed(_RATE_SPAN)

        def report(done: int, total: int | None) -> None:
            if job.cancelled.is_set():
                raise _Cancelled
            percent = low + (high - low) * min(done, total) // total if total else low
            result: dict[str, Any] = {"bytes_done": done, "bytes_total": total, "phase": phase}
            if (rate := speed.update(done)) is not None:
                result["bytes_per_second"] = rate
            update = self._update(job, "running", progress=percent, result=result)
            self._outbox.progress(job.task.id, update)

        return report

    def _create(self, job: _Job) -> dict[str, Any]:
        """One try of a ``vm.create``; raises what the work raises."""
        args = CreateArgs.parse(job.task.args)
        try:
            result = vmwork.create(
                self._cache,
                self._pools,
                args,
                download=self._progress(job, "download", _DOWNLOAD),
                clone=self._progress(job, "clone", _CLONE),
            )
        finally:
            self._images_changed.set()
        if job.task.args.get("start") is True:
            update = self._update(job, "running", progress=99, result={"phase": "start"})
            self._outbox.progress(job.task.id, update)
            result["power"] = vmpower.start_after_create(
                self._pools, self._host, job.task.args, unavailable=self._no_vms
            )
        return result

    def _move(self, job: _Job) -> dict[str, Any]:
        """A ``vm.move``: never the disk of a running QEMU; its restart policy held meanwhile."""
        args = vmmove.MoveArgs.parse(job.task.args)

        def report(phase: str, done: int, total: int) -> None:
            if job.cancelled.is_set():
                raise _Cancelled
            low, high = vmmove.PHASES.get(phase, (0, 99))
            percent = low + (high - low) * min(done, total) // total if total else low
            result = {"bytes_done": done, "bytes_total": total, "phase": phase}
            update = self._update(job, "running", progress=percent, result=result)
            self._outbox.progress(job.task.id, update)

        def run() -> dict[str, Any]:
            return vmmove.move(
                self._cache,
                self._pools,
                args,
                progress=report,
                max_bytes_per_second=self._move_rate,
            )

        host = self._host
        if host is None:
            return run()
        sup, runtime = host.supervisor, host.supervisor.runtime
        sup.hold(args.vm_id)  # no restart by its policy while the disk moves
        try:
            if runtime.alive(args.vm_id):
                raise TaskFailure(
                    "vm_running", "the VM is running: stop it first, then move its disk"
                )
            return run()
        finally:
            sup.release(args.vm_id)

    def _remove_copy(self, raw: dict[str, Any]) -> dict[str, Any]:
        args = vmmove.RemoveArgs.parse(raw)
        if self._ownership is None:
            raise TaskFailure("unsupported_task", "this agent cannot tell which disks it owns")
        return vmmove.remove_copy(self._cache, self._pools, self._ownership, args)

    def _delete(self, raw: dict[str, Any]) -> dict[str, Any]:
        """A ``vm.delete``: never the disk of a running QEMU, unless ``force`` powers it off."""
        args = DeleteArgs.parse(raw)
        host = self._host
        if host is None:
            return vmwork.delete(self._cache, self._pools, args)
        sup, runtime = host.supervisor, host.supervisor.runtime
        sup.hold(args.vm_id)  # no restart by its policy from now on
        try:
            if runtime.alive(args.vm_id):
                if raw.get("force") is not True:
                    raise TaskFailure(
                        "vm_running",
                        "the VM is running: stop it first, or delete it with --force "
                        "(which powers it off)",
                    )
                runtime.poweroff(args.vm_id)
                if runtime.alive(args.vm_id):
                    raise TaskFailure("vm_running", "the VM's QEMU did not power off")
            result = vmwork.delete(self._cache, self._pools, args)
        except BaseException:
            sup.release(args.vm_id)
            raise
        sup.forget(args.vm_id)
        runtime.forget(args.vm_id)
        return result
