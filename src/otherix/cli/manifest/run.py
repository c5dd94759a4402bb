"""Run manifest plans against the API: create, apply, delete (docs/pool-contract.md §12).

Owns the I/O half of ``create|apply|delete -f``: observing what exists
(one ``GET /v1/storage-pools/{name}`` concept view per pool name, one
``GET /v1/vms/{name}`` per VM), sending the requests item by item, waiting
(``--wait``) and reporting one line per item. Execution is best-effort:
every item is tried, and the returned failure count makes the command exit
1. Result lines go to stdout (``created …``, ``unchanged …``, ``drift …``,
``deleted …``); per-item failures go to stderr as ``<label>: <problem>``.

A dry run (:meth:`Runner.rehearse`) sends each create with ``?dry_run=true``:
the server runs every check of a real create and writes nothing, so
``would create …`` (stdout) or ``<label>: refused: <why>`` (stderr) is the
server's verdict, not a guess. Each object is judged against what the server
holds now, not against the other objects of the same run.

Called by ``otherix.cli.commands.manifests`` with items from ``.plan``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from otherix.cli.context import CliContext
from otherix.cli.errors import describe
from otherix.cli.manifest.plan import (
    Action,
    Item,
    PoolItem,
    VmItem,
    find_instance,
    pool_action,
    vm_action,
)
from otherix.cli.output import wire
from otherix.cli.progress import StatusLine, follow_task, live_output, task_error, wait_vm_ready
from otherix.cli.wait import poll
from otherix.client.api import ApiClient
from otherix.client.errors import (
    ApiError,
    ClientError,
    ConflictError,
    DeleteBlockedError,
    NotFoundError,
)
from otherix.durations import format_duration
from otherix.models.pools import PoolConceptView, StoragePool

__all__ = ["Runner"]


@dataclass
class Runner:
    """One command's run: the context, the client, the deadline and the failures."""

    ctx: CliContext
    api: ApiClient
    wait: bool = False
    timeout: float = 300.0
    failures: int = 0
    _deadline: float = 0.0
    _concepts: dict[str, PoolConceptView | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._deadline = self.ctx.monotonic() + self.timeout

    def fail(self, item: Item, problem: str) -> None:
        self.failures += 1
        self.ctx.warn(f"{item.label}: {problem}")

    def _left(self) -> float:
        return max(0.0, self._deadline - self.ctx.monotonic())

    # observing ------------------------------------------------------------------------
    def concept(self, name: str) -> PoolConceptView | None:
        """The concept view of pool ``name`` (None when absent), fetched once.
        A name the server takes for a UUID answers one instance: no concept."""
        if name not in self._concepts:
            try:
                found = self.api.get_pool(name)
            except NotFoundError:
                found = None
            self._concepts[name] = found if isinstance(found, PoolConceptView) else None
        return self._concepts[name]

    def vm(self, name: str) -> dict[str, Any] | None:
        try:
            return wire(self.api.get_vm(name))
        except NotFoundError:
            return None

    def plan(self, items: Sequence[Item]) -> list[Action]:
        """The apply plan: one action per item, from the server's current state."""
        return [
            pool_action(item, self.concept(item.name))
            if isinstance(item, PoolItem)
            else vm_action(item, self.vm(item.name))
            for item in items
        ]

    # creating -------------------------------------------------------------------------
    def create(self, items: Sequence[Item]) -> None:
        """POST every item (a 409 on the name is ``already exists``), then wait if asked."""
        made: list[tuple[Item, StoragePool | dict[str, Any]]] = []
        for item in items:
            body: StoragePool | dict[str, Any]
            try:
                if isinstance(item, PoolItem):
                    body = self.api.create_pool(item.body())
                else:
                    body = wire(self.api.create_vm(item.spec.body(item.name)))
            except ConflictError as exc:
                self.fail(item, "already exists" if exc.name_taken else describe(exc))
                continue
            except ClientError as exc:
                self.fail(item, describe(exc))
                continue
            self.ctx.line(f"created {item.label}")
            made.append((item, body))
        if self.wait:
            for item, body in made:
                self._wait_created(item, body)

    def _send(self, item: Item, *, dry_run: bool) -> StoragePool | dict[str, Any]:
        if isinstance(item, PoolItem):
            return self.api.create_pool(item.body(), dry_run=dry_run)
        return wire(self.api.create_vm(item.spec.body(item.name), dry_run=dry_run))

    def rehearse(self, items: Sequence[Item], verb: str = "would create") -> None:
        """Ask the server to dry-run every create; print its verdict per item.

        Accepted: ``<verb> <label>`` on stdout, with where a VM would land (or
        why it would stay pending). Refused: ``<label>: refused: <why>`` on
        stderr, counted as a failure. Nothing is written on the server.
        """
        for item in items:
            try:
                body = self._send(item, dry_run=True)
            except ApiError as exc:
                taken = isinstance(exc, ConflictError) and exc.name_taken
                problem = "already exists" if taken else describe(exc)
                self.fail(item, f"refused: {problem}")
                continue
            except ClientError as exc:
                self.fail(item, describe(exc))
                continue
            verdict = "" if isinstance(body, StoragePool) else _verdict(body)
            self.ctx.line(f"{verb} {item.label}{verdict}")

    def _wait_created(self, item: Item, body: StoragePool | dict[str, Any]) -> None:
        try:
            if isinstance(body, StoragePool):
                problem = self._wait_pool(body)
            else:
                _, problem = wait_vm_ready(self.ctx, self.api, body, self._left())
        except ClientError as exc:
            problem = describe(exc)
        if problem:
            self.fail(item, problem)
        else:
            self.ctx.line(f"ready {item.label}")

    def _wait_pool(self, pool: StoragePool) -> str:
        outcome = poll(
            lambda: self.api.get_pool_instance(pool.id),
            lambda p: p.reconciliation_status in ("ready", "failed"),
            timeout=self._left(),
            sleep=self.ctx.sleep,
            monotonic=self.ctx.monotonic,
        )
        last = outcome.value
        if last.reconciliation_status == "failed":
            return f"reconciliation failed: {last.reconciliation_error or 'unknown'}"
        if not outcome.done:
            return (
                f"not ready within {format_duration(self.timeout)} "
                f'(last status "{last.reconciliation_status}")'
            )
        return ""

    def apply(self, actions: Sequence[Action]) -> None:
        """Create what is missing; report unchanged and drifted items (never touched)."""
        missing: list[Item] = []
        for action in actions:
            if action.verb == "create":
                missing.append(action.item)
            elif action.verb == "unchanged":
                self.ctx.line(action.text())
            else:
                self.failures += 1
                self.ctx.line(action.text())
        self.create(missing)

    # deleting -------------------------------------------------------------------------
    def delete(self, items: Sequence[Item]) -> None:
        """Delete every item in the given (reversed) order; blocked ones are skipped."""
        for item in items:
            try:
                if isinstance(item, PoolItem):
                    self._delete_pool(item)
                else:
                    self._delete_vm(item)
            except ClientError as exc:
                self.fail(item, describe(exc))

    def _delete_pool(self, item: PoolItem) -> None:
        inst = find_instance(self.concept(item.name), item.node)
        if inst is None:
            self.fail(item, "not found")
            return
        try:
            self.api.delete_pool(inst.id)
        except DeleteBlockedError as exc:
            blocking = exc.details.get("blocking_resources") or {}
            what = ", ".join(f"{k}: {v}" for k, v in sorted(blocking.items()))
            self.fail(item, f"blocked by {what or exc.code} (skipped, not forced)")
            return
        self._concepts.pop(item.name, None)
        self.ctx.line(f"deleted {item.label}")

    def _delete_vm(self, item: VmItem) -> None:
        try:
            accepted = self.api.delete_vm(item.name)
        except NotFoundError:
            self.fail(item, "not found")
            return
        except ConflictError as exc:
            if exc.code != "vm_running":
                raise
            # like a blocked pool: never forced from a manifest
            state = exc.details.get("state") or "running"
            self.fail(
                item,
                f"{state}: stop it first ('otherix vm stop {item.name}') (skipped, not forced)",
            )
            return
        if accepted is None:
            self.ctx.line(f"deleted {item.label}")
            return
        task_id = accepted.task_id
        if not self.wait:
            self.ctx.line(f"deleting {item.label} (task {task_id})")
            return
        line = StatusLine(self.ctx, live_output(self.ctx))
        try:
            outcome = follow_task(
                self.ctx, self.api, task_id, timeout=self._left(), line=line, label=item.label
            )
        finally:
            line.clear()
        task = outcome.value
        if not outcome.done:
            self.fail(item, f"still deleting (task {task_id} {task.get('status')})")
        elif task.get("status") != "success":
            self.fail(item, f"delete failed: {task_error(task)}")
        else:
            self.ctx.line(f"deleted {item.label}")


def _verdict(vm: dict[str, Any]) -> str:
    """Where a dry-run VM would land, or why it would stay pending."""
    status = vm.get("status") or {}
    if status.get("reason"):
        return f" (it would stay pending: {status['reason']}: {status.get('message') or ''})"
    if vm.get("node"):
        return f" (on pool {vm.get('pool') or ''}, node {vm['node']})"
    return ""
