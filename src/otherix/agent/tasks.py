"""Tasks the control plane hands this node in its desired state, run and reported.

The daemon (``otherix.agent.daemon``) calls ``TaskRunner.run`` with
``DesiredState.tasks`` after each reconcile. Each task is run once and its
outcome posted to ``POST /v1/nodes/{name}/tasks/{id}``; the control plane then
finalises it and drops it from the node's desired state. A report that fails
with a retryable error is tried again on the next step (the task id is not
marked done); one the control plane refuses for good (404: cancelled or gone;
other 4xx; 500 ``internal``) is logged and dropped.

Task types:

- ``storage_pool.scan`` (args ``{pool, path}``): statfs of the registered
  pool's root (``PoolState.scan``, which also makes the next heartbeat carry
  the same numbers, so the report does not overwrite the scan's result).
  Success carries ``{capacity_bytes, available_bytes, reported_at}``; an
  unregistered pool fails with ``not_found`` "pool does not match a
  configured pool" (docs/pool-contract.md §10.1), a pool whose last reconcile failed or
  whose statfs fails with ``scan_failed``.
- ``storage_pool.cache_prune`` (args ``{pool, dry_run}``): every cache entry of
  the pool that may go (not pinned, no running VM's image, no disk's backing
  file, older than ``cache.min_age``) is evicted (``PoolState.prune``); with
  ``dry_run`` nothing is removed. Success carries ``{evicted: [...], dry_run,
  bytes}``; an unregistered or not-ready pool fails with ``not_found``.
- ``storage_pool.scrub`` (args ``{pool}``): handed to the ``Scrubber``
  (``otherix.agent.scrubber``), whose thread re-hashes the pool's cache and reports
  progress ``{bytes_done, bytes_total}`` and the outcome ``{entries, bytes,
  quarantined}`` through the task outbox.
- ``storage_pool.quarantine_clear`` (args ``{pool, images}``): the pool's quarantined
  cache entries (``images.quarantine``) of those image names, or all of them when
  ``images`` is null, are deleted (``PoolState.clear_quarantine``). Success carries
  ``{cleared: [...]}`` (what was removed, as the scrub report lists it); an
  unregistered or not-ready pool fails with ``not_found``.
- ``vm.create`` and ``vm.delete``: handed to ``VmTasks``
  (``otherix.agent.vmtasks``) and run in worker threads; they report
  themselves (progress, outcome, retries) through the task outbox. Here they
  only count as handed off, so this step returns at once.
- ``storage_pool.drift_purge`` (args ``{pool, path, paths}``, issue 16): the pool's
  drift items among ``paths`` that are still orphans or strays under the declared
  state of now are removed (``PoolState.drift_purge``, ``otherix.agent.drift``).
  Success carries ``{removed: [{path, size_bytes}], kept: [{path, reason}], bytes}``
  (``reason``: ``owned``, ``not_drift`` or ``failed``); an unregistered or not-ready
  pool fails with ``not_found``.
- ``vm.import`` (args ``{vm_id, pool, path, source}``, issue 16): the orphan disk
  ``source`` (relative to the pool root) becomes ``vms/{vm_id}/disk.{fmt}``
  (``PoolState.vm_import``). Success carries ``{vm_id, format, virtual_size_bytes,
  disk_size_bytes, file_path}``; failures: ``disk_not_orphan``,
  ``disk_backing_outside_pool``, ``unsupported_format``, ``disk_unreadable``,
  ``disk_exists``, ``import_failed``, ``pool_not_found``, ``validation_failed``.
- ``vm.export`` (a move across nodes; ``otherix.agent.transfer``): its ticket is held
  by the transfer endpoint while the task is in the desired state, with no
  report; the control plane ends it when the move ends. An agent whose
  endpoint is off (``transfer.listen`` empty) fails it with ``unsupported_task``.
- anything else fails with ``unsupported_task``, so an older agent never
  leaves a newer control plane's task pending forever.

A task that leaves the desired state is forgotten here and, for VM tasks,
withdrawn from the workers (``VmTasks.forget``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from otherix.agent.drift import AdoptError
from otherix.agent.images.disks import canonical_vm_id
from otherix.agent.outbox import TaskReporter
from otherix.agent.pools import PoolReport, PoolUnknownError
from otherix.agent.scrubber import Scrubber
from otherix.agent.transfer import VM_EXPORT, TransferServer
from otherix.agent.vmtasks import VmTasks
from otherix.client.errors import ApiError, UnauthenticatedError
from otherix.models.heartbeat import AgentTask, TaskUpdate
from otherix.retry import is_retryable

__all__ = ["SCAN", "Scanner", "TaskReporter", "TaskRunner", "execute"]

_log = logging.getLogger(__name__)

SCAN = "storage_pool.scan"
PRUNE = "storage_pool.cache_prune"
QUARANTINE_CLEAR = "storage_pool.quarantine_clear"
DRIFT_PURGE = "storage_pool.drift_purge"
VM_IMPORT = "vm.import"


class Scanner(Protocol):
    def scan(self, name: str) -> PoolReport: ...

    def prune(self, name: str, *, dry_run: bool) -> list[dict[str, object]]: ...

    def clear_quarantine(self, name: str, images: list[str] | None) -> list[dict[str, object]]: ...


class DriftTasks(Protocol):
    """What the drift tasks need (``PoolState`` has it)."""

    def drift_purge(self, name: str, paths: list[str]) -> dict[str, object]: ...

    def vm_import(
        self, name: str, declared_path: str | None, vm_id: str, source: str
    ) -> dict[str, object]: ...


def _failed(code: str, message: str, **details: object) -> TaskUpdate:
    return TaskUpdate(status="failed", error={"code": code, "message": message, "details": details})


def _scan(scanner: Scanner, task: AgentTask, now: datetime) -> TaskUpdate:
    name = task.args.get("pool")
    if not isinstance(name, str) or not name:
        return _failed("validation_failed", "scan task has no pool name")
    try:
        report = scanner.scan(name)
    except PoolUnknownError:
        return _failed("not_found", "pool does not match a configured pool", pool=name)
    if (
        report.reconciliation_status != "ready"
        or report.capacity_bytes is None
        or report.available_bytes is None
    ):
        return _failed("scan_failed", report.reconciliation_error or "scan failed", pool=name)
    return TaskUpdate(
        status="success",
        progress=100,
        result={
            "capacity_bytes": report.capacity_bytes,
            "available_bytes": report.available_bytes,
            "reported_at": now.isoformat(),
        },
    )


def _prune(scanner: Scanner, task: AgentTask) -> TaskUpdate:
    name = task.args.get("pool")
    dry_run = task.args.get("dry_run") is True
    if not isinstance(name, str) or not name:
        return _failed("validation_failed", "prune task has no pool name")
    try:
        evicted = scanner.prune(name, dry_run=dry_run)
    except PoolUnknownError as exc:
        return _failed("not_found", str(exc), pool=name)
    total = sum(int(str(e.get("size_bytes") or 0)) for e in evicted)
    return TaskUpdate(
        status="success",
        progress=100,
        result={"evicted": evicted, "dry_run": dry_run, "bytes": total},
    )


def _clear_quarantine(scanner: Scanner, task: AgentTask) -> TaskUpdate:
    name = task.args.get("pool")
    images = task.args.get("images")
    if not isinstance(name, str) or not name:
        return _failed("validation_failed", "quarantine clear task has no pool name")
    if images is not None and (
        not isinstance(images, list) or not all(isinstance(i, str) and i for i in images)
    ):
        return _failed("validation_failed", "images must be a list of image names")
    try:
        cleared = scanner.clear_quarantine(name, images)
    except PoolUnknownError as exc:
        return _failed("not_found", str(exc), pool=name)
    return TaskUpdate(status="success", progress=100, result={"cleared": cleared})


def _drift_purge(drift: DriftTasks, task: AgentTask) -> TaskUpdate:
    name, paths = task.args.get("pool"), task.args.get("paths")
    if not isinstance(name, str) or not name:
        return _failed("validation_failed", "drift purge task has no pool name")
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        return _failed("validation_failed", "drift purge task: paths must be a list of paths")
    try:
        result = drift.drift_purge(name, list(paths))
    except PoolUnknownError as exc:
        return _failed("not_found", str(exc), pool=name)
    return TaskUpdate(status="success", progress=100, result=result)


def _vm_import(
    drift: DriftTasks, task: AgentTask, node_path: Callable[[str, str], str]
) -> TaskUpdate:
    args = task.args
    name, source, path = args.get("pool"), args.get("source"), args.get("path")
    try:
        vm_id = canonical_vm_id(str(args.get("vm_id") or ""))
    except ValueError as exc:
        return _failed("validation_failed", str(exc))
    if not isinstance(name, str) or not name or not isinstance(source, str) or not source:
        return _failed("validation_failed", "import task needs pool and source")
    declared = path if isinstance(path, str) and path else None
    try:
        result = drift.vm_import(name, declared, vm_id, source)
    except PoolUnknownError as exc:
        return _failed("pool_not_found", str(exc), pool=name)
    except AdoptError as exc:
        return _failed(exc.code, exc.message, pool=name, source=source)
    rel = str(result.pop("path"))
    result["file_path"] = node_path(declared or "", rel) if declared else rel
    return TaskUpdate(status="success", progress=100, result=result)


def _join(root: str, rel: str) -> str:
    return root.rstrip("/") + "/" + rel


def execute(
    scanner: Scanner, task: AgentTask, now: datetime, drift: DriftTasks | None = None
) -> TaskUpdate:
    """Run one task and return the report to post (never raises for a task's own failure)."""
    if drift is not None and task.type == DRIFT_PURGE:
        return _drift_purge(drift, task)
    if drift is not None and task.type == VM_IMPORT:
        return _vm_import(drift, task, _join)
    if task.type == SCAN:
        return _scan(scanner, task, now)
    if task.type == PRUNE:
        return _prune(scanner, task)
    if task.type == QUARANTINE_CLEAR:
        return _clear_quarantine(scanner, task)
    return _failed(
        "unsupported_task", f"this agent cannot run tasks of type {task.type!r}", type=task.type
    )


class TaskRunner:
    def __init__(
        self,
        scanner: Scanner,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        *,
        vms: VmTasks | None = None,
        scrubber: Scrubber | None = None,
        drift: DriftTasks | None = None,
        transfer: TransferServer | None = None,
    ) -> None:
        self._scanner = scanner
        self._drift = drift
        self._now = now
        self._vms = vms
        self._scrubber = scrubber
        self._transfer = transfer
        self._done: set[str] = set()

    def pending(self, tasks: Sequence[AgentTask]) -> bool:
        """True when a task is new, or one was dropped from the desired state."""
        ids = {t.id for t in tasks}
        return bool(ids - self._done) or bool(self._done - ids)

    def busy(self) -> bool:
        """True while VM tasks run or their effect on the image caches is unreported."""
        return self._vms is not None and self._vms.busy()

    def take_images_changed(self) -> bool:
        """True (once) when a VM task may have changed an image cache."""
        vms = self._vms is not None and self._vms.take_images_changed()
        scrubbed = self._scrubber is not None and self._scrubber.take_changed()
        return vms or scrubbed

    def run(self, reporter: TaskReporter, node: str, tasks: Sequence[AgentTask]) -> None:
        """Run and report every task not yet reported; retryable report errors propagate."""
        ids = {t.id for t in tasks}
        self._done &= ids  # forget what the control plane has dropped
        vms = self._vms
        if vms is not None:
            vms.forget(ids)
        scrubber = self._scrubber
        if scrubber is not None:
            scrubber.forget(ids)
        if self._transfer is not None:  # the tickets of the vm.export tasks, exactly
            self._transfer.sync(tasks)

        def handed_off(task: AgentTask) -> bool:
            return (vms is not None and vms.handles(task.type)) or (
                scrubber is not None and scrubber.handles(task.type)
            )

        # VM tasks first: handing them off never fails, a scan report may.
        for task in sorted(tasks, key=lambda t: not handed_off(t)):
            if task.id in self._done:
                continue
            if scrubber is not None and scrubber.handles(task.type):
                scrubber.submit(task)
                self._done.add(task.id)
                continue
            if task.type == VM_EXPORT and self._transfer is not None:
                self._done.add(task.id)  # held by sync() until the control plane ends it
                continue
            if vms is not None and handed_off(task):
                vms.submit(task)
                self._done.add(task.id)
                continue
            update = execute(self._scanner, task, self._now(), self._drift)
            try:
                reporter.update_task(node, task.id, update)
            except ApiError as exc:
                if is_retryable(exc) or isinstance(exc, UnauthenticatedError):
                    raise
                _log.warning(
                    "task report refused; dropping the task",
                    extra={"task": task.id, "type": task.type, "error": str(exc)},
                )
            else:
                _log.info(
                    "task done", extra={"task": task.id, "type": task.type, "status": update.status}
                )
            self._done.add(task.id)
