"""Tasks: creation, views with ownership, cancel, and agent progress reports.

Tasks a node must run are part of its desired state (``DesiredState.tasks``),
so they reach the agent through the watch as fast as pool changes do. The
agent reports progress and the outcome on ``POST /v1/nodes/{name}/tasks/{id}``;
the handler for the task type applies the result (for ``storage_pool.scan``:
capacity, available bytes, disk pressure) and finalises the task.

Per-type hooks (:class:`TaskHooks`), registered for the service that owns the
type by the composition root, run in the same transaction as the task update
and only when that update won (a report racing a cancel applies exactly one
of them): ``running`` on each ``running`` report (whose ``result``, if any, is
stored as progress detail), ``success`` on success, ``failure`` on failure and
on cancel. A hook may return the ids of other nodes whose desired state it
changed (a move across nodes ends the source's export): their watches are
woken with the task's node once the transaction has committed (a wake-up
before the commit would read the old state and park again until its
timeout). A type can be cancelled in the states it registered
(``cancellable_in``: ``vm.create`` only while pending, before the agent starts
it); any other type cannot be cancelled.

Attempts: a task's ``attempts``/``max_attempts`` are what the agent reports
(``TaskUpdate.attempt``/``max_attempts``: the agent retries a ``vm.create``
itself, ``tasks.vm_create_attempts`` times); the control plane never re-sends
a task. Until the first report a task shows the ``max_attempts`` it was made
with (``vm.create``: ``placement.VM_CREATE_ATTEMPTS``, 3, the agent's default;
``vm.delete``: 1; a scan: docs/pool-contract.md §6: 25), and a report without the counts
(an older agent) counts one attempt at its first ``running``.

What a user sees of a task (``get``, ``list_tasks``, ``cancel``) goes through
``services.redaction``: a task's ``result`` and ``error`` are agent-reported
and show a role exactly what the VM view shows it (no host ``file_path`` or
host paths in messages for developers and viewers).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from otherix.api.clock import Clock
from otherix.api.deps import AgentIdentity, Principal
from otherix.api.services.redaction import redact
from otherix.api.watch import WatchHub
from otherix.errors import Conflict, NotFound, not_found_message
from otherix.models.common import AsyncTaskAccepted, TaskLinks
from otherix.models.heartbeat import TaskUpdate
from otherix.models.pagination import decode_cursor, split_page
from otherix.models.tasks import Task
from otherix.rbac import Permission, Scope
from otherix.store import Database, Tx
from otherix.store.ports.nodes import NodeStore
from otherix.store.ports.tasks import NewTask, TaskChange, TaskRow, TaskStore

FINAL = ("success", "failed", "cancelled")
#: handler(conn, task row, update, now): on each ``running`` report, or on success;
#: returns the other nodes to wake after the commit, if any
ResultHandler = Callable[[Tx, TaskRow, TaskUpdate, datetime], Iterable[str] | None]
#: handler(conn, task row, error, now): when the task fails or is cancelled (``error``
#: is the task's ``{code, message, ...}``; ``cancelled`` on cancel); returns as above
FailureHandler = Callable[[Tx, TaskRow, dict[str, Any], datetime], Iterable[str] | None]


@dataclass
class TaskHooks:
    """What runs, per task type, when a report on a task of that type wins.

    The service that owns a type registers its hooks once, in the composition
    root (``api/compose.py``); a type nobody registered has none and cannot be
    cancelled."""

    running: dict[str, ResultHandler] = field(default_factory=dict)
    success: dict[str, ResultHandler] = field(default_factory=dict)
    failure: dict[str, FailureHandler] = field(default_factory=dict)
    #: the states in which a task of the type may be cancelled
    cancellable_in: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def register(
        self,
        type_: str,
        *,
        running: ResultHandler | None = None,
        success: ResultHandler | None = None,
        failure: FailureHandler | None = None,
        cancellable_in: tuple[str, ...] = (),
    ) -> None:
        if running is not None:
            self.running[type_] = running
        if success is not None:
            self.success[type_] = success
        if failure is not None:
            self.failure[type_] = failure
        if cancellable_in:
            self.cancellable_in[type_] = cancellable_in


@dataclass(kw_only=True, eq=False)
class TaskService:
    """The tasks service, built once by ``api/compose.py`` with the collaborators below."""

    db: Database
    clock: Clock
    hub: WatchHub
    node_store: NodeStore
    task_store: TaskStore
    #: filled by the composition root: each task type's owner registers its hooks
    hooks: TaskHooks = field(default_factory=TaskHooks)

    def new_task(
        self,
        conn: Tx,
        *,
        now: datetime,
        type: str,
        resource_type: str,
        resource_id: str,
        node_id: str | None,
        args: dict[str, Any],
        created_by: str | None,
        max_attempts: int = 25,
    ) -> str:
        """Insert a pending task. ``max_attempts`` is what the task's runner will try
        (docs/pool-contract.md §6: 25 for a scan; see ``placement.VM_CREATE_ATTEMPTS``)."""
        task_id = str(uuid.uuid4())
        self.task_store.insert_task(
            conn,
            NewTask(
                id=task_id,
                type=type,
                resource_type=resource_type,
                resource_id=resource_id,
                node_id=node_id,
                args=args,
                max_attempts=max_attempts,
                created_by=created_by,
                created_at=now,
            ),
        )
        return task_id

    def get(self, principal: Principal, task_id: str) -> Task:
        with self.db.read() as conn:
            row = self.task_store.get_task(conn, task_id)
        if row is None or not _visible(principal, row, Permission.TASK_READ):
            raise NotFound(task_not_found(task_id))
        return task_view(principal, row)

    def list_tasks(
        self, principal: Principal, *, limit: int, cursor: str | None, filters: dict[str, str]
    ) -> tuple[list[Task], str | None]:
        if principal.scope(Permission.TASK_READ) is Scope.OWN:
            filters = {**filters, "created_by": principal.user_id}
        after = decode_cursor(cursor) if cursor else None
        with self.db.read() as conn:
            rows = self.task_store.list_tasks(conn, after=after, limit=limit + 1, filters=filters)
        page, nxt = split_page(rows, limit)
        return [task_view(principal, r) for r in page], nxt

    def cancel(self, principal: Principal, task_id: str) -> Task:
        with self.db.write() as conn:
            row = self.task_store.get_task(conn, task_id)
            if row is None or not _visible(principal, row, Permission.TASK_CANCEL):
                raise NotFound(task_not_found(task_id))
            if row.status in FINAL:
                raise Conflict("task is already finished", {"current_status": row.status})
            states = list(self.hooks.cancellable_in.get(row.type, ()))
            if not states:
                raise Conflict(f"tasks of type {row.type} cannot be cancelled", {"type": row.type})
            now = self.clock.now()
            if not self.task_store.update_task(
                conn, task_id, {"status": "cancelled", "finished_at": now}, only_if_status=states
            ):
                current = self.task_store.get_task(conn, task_id) or row
                message = (
                    f"tasks of type {row.type} can only be cancelled while pending"
                    if states == ["pending"]
                    else "task is already finished"
                )
                raise Conflict(message, {"current_status": current.status, "type": row.type})
            on_failure = self.hooks.failure.get(row.type)
            woken: list[str] = []
            if on_failure is not None:
                error = {"code": "cancelled", "message": "task cancelled"}
                woken = list(on_failure(conn, row, error, now) or ())
            if row.node_id:
                self.node_store.bump_revision(conn, row.node_id)
            row = self.task_store.get_task(conn, task_id) or row
        self.hub.publish([*([row.node_id] if row.node_id else []), *woken])
        return task_view(principal, row)

    def _run_hooks(
        self,
        conn: Tx,
        row: TaskRow,
        update: TaskUpdate,
        values: TaskChange,
        now: datetime,
    ) -> list[str]:
        """Run the type's hook for ``update``; the other nodes it asks to wake."""
        woken: Iterable[str] | None = None
        if update.status == "running":
            if (on_running := self.hooks.running.get(row.type)) is not None:
                woken = on_running(conn, row, update, now)
        elif update.status == "success":
            if (on_success := self.hooks.success.get(row.type)) is not None:
                woken = on_success(conn, row, update, now)
        elif (on_failure := self.hooks.failure.get(row.type)) is not None:
            woken = on_failure(conn, row, values.get("error") or {}, now)
        return list(woken or ())

    def agent_update(self, ident: AgentIdentity, task_id: str, update: TaskUpdate) -> Task:
        now = self.clock.now()
        with self.db.write() as conn:
            row = self.task_store.get_task(conn, task_id)
            if row is None or row.node_id != ident.node_id:
                raise NotFound("task not found")
            if row.status in FINAL:
                return task_row_view(row)  # a retried report after completion: no-op
            values: TaskChange = {"progress": update.progress}
            if update.status == "running":
                values["status"] = "running"
                if update.result is not None:  # progress detail, e.g. bytes_done/bytes_total
                    values["result"] = update.result
                if row.started_at is None:
                    values["started_at"] = now
                    values["attempts"] = row.attempts + 1
            elif update.status == "success":
                values["status"] = "success"
                values["progress"] = 100
                values["result"] = update.result
                values["finished_at"] = now
            else:
                values["status"] = "failed"
                values["error"] = update.error or {"code": "internal", "message": "task failed"}
                values["finished_at"] = now
            values.setdefault("started_at", row.started_at or now)
            if update.attempt is not None:  # the agent counts its own tries (vm.create retries)
                values["attempts"] = update.attempt
            if update.max_attempts is not None:
                values["max_attempts"] = max(update.max_attempts, update.attempt or 1)
            # The conditional update decides a race with a cancel; hooks run only for the winner.
            if not self.task_store.update_task(
                conn, task_id, values, only_if_status=["pending", "running"]
            ):
                return task_row_view(self.task_store.get_task(conn, task_id) or row)
            woken = self._run_hooks(conn, row, update, values, now)
            finished = values.get("status") in FINAL
            if finished:
                self.node_store.bump_revision(
                    conn, ident.node_id
                )  # drop it from the node's desired tasks
            row = self.task_store.get_task(conn, task_id) or row
        # the node's watch sees the new desired state now (and so do those the hook changed)
        self.hub.publish([*([ident.node_id] if finished else []), *woken])
        return task_row_view(row)


def accepted(task_id: str) -> AsyncTaskAccepted:
    return AsyncTaskAccepted(
        task_id=task_id, status="pending", links=TaskLinks(self=f"/v1/tasks/{task_id}")
    )


def _task(row: TaskRow, result: object, error: object) -> Task:
    return Task.model_validate(
        {
            "id": row.id,
            "type": row.type,
            "status": row.status,
            "progress": row.progress,
            "resource_type": row.resource_type,
            "resource_id": row.resource_id,
            "result": result,
            "error": error,
            "attempts": row.attempts,
            "max_attempts": row.max_attempts,
            "created_at": row.created_at,
            "started_at": row.started_at,
            "finished_at": row.finished_at,
        }
    )


def task_row_view(row: TaskRow) -> Task:
    """The task as stored (what its agent sees)."""
    return _task(row, row.result, row.error)


def task_view(principal: Principal, row: TaskRow) -> Task:
    """The task as ``principal`` may see it: agent-reported fields redacted."""
    return _task(row, redact(principal, row.result), redact(principal, row.error))


def task_not_found(task_id: str) -> str:
    return not_found_message("task", task_id, "otherix task list")


def _visible(principal: Principal, row: TaskRow, permission: Permission) -> bool:
    scope = principal.scope(permission)
    return scope is Scope.ANY or (scope is Scope.OWN and row.created_by == principal.user_id)
