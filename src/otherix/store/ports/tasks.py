"""The tasks aggregate: long-running work with status, progress, result and error."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypedDict

from otherix.store.ports import JSONObject
from otherix.store.tx import Tx


@dataclass(frozen=True, slots=True)
class TaskRow:
    id: str
    type: str
    status: str
    progress: int
    resource_type: str | None
    resource_id: str | None
    node_id: str | None
    args: JSONObject
    result: JSONObject | None
    error: JSONObject | None
    attempts: int
    max_attempts: int
    created_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewTask:
    """A task to insert: it starts ``pending``, progress 0, no attempt yet."""

    id: str
    type: str
    resource_type: str
    resource_id: str
    node_id: str | None
    args: JSONObject
    max_attempts: int
    created_by: str | None
    created_at: datetime


class TaskChange(TypedDict, total=False):
    """The columns an update may set."""

    status: str
    progress: int
    args: JSONObject
    result: JSONObject | None
    error: JSONObject | None
    attempts: int
    max_attempts: int
    started_at: datetime | None
    finished_at: datetime | None


class TaskStore(Protocol):
    def insert_task(self, tx: Tx, task: NewTask) -> None: ...
    def get_task(self, tx: Tx, task_id: str) -> TaskRow | None: ...
    def list_tasks(
        self,
        tx: Tx,
        *,
        after: tuple[datetime, str] | None,
        limit: int,
        filters: Mapping[str, str],
    ) -> list[TaskRow]: ...
    def pending_for_node(self, tx: Tx, node_id: str) -> list[TaskRow]: ...
    def update_task(
        self,
        tx: Tx,
        task_id: str,
        change: TaskChange,
        *,
        only_if_status: list[str] | None = None,
    ) -> int: ...
