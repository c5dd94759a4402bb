"""Tasks: long-running work with status, progress, result and error.

``SqlTasks`` implements ``ports.tasks.TaskStore`` and speaks its frozen rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from otherix.store.ports.tasks import NewTask, TaskChange, TaskRow, TaskStore
from otherix.store.schema import tasks
from otherix.store.tx import Tx, sql


def _tasks(tx: Tx, stmt: sa.Select[Any]) -> list[TaskRow]:
    return [TaskRow(**r) for r in sql(tx).execute(stmt).mappings()]


class SqlTasks:
    """:class:`TaskStore` in SQLAlchemy Core, for both backends."""

    def insert_task(self, tx: Tx, task: NewTask) -> None:
        sql(tx).execute(
            tasks.insert().values(
                id=task.id,
                type=task.type,
                status="pending",
                progress=0,
                resource_type=task.resource_type,
                resource_id=task.resource_id,
                node_id=task.node_id,
                args=task.args,
                attempts=0,
                max_attempts=task.max_attempts,
                created_by=task.created_by,
                created_at=task.created_at,
            )
        )

    def get_task(self, tx: Tx, task_id: str) -> TaskRow | None:
        rows = _tasks(tx, sa.select(tasks).where(tasks.c.id == task_id))
        return rows[0] if rows else None

    def list_tasks(
        self,
        tx: Tx,
        *,
        after: tuple[datetime, str] | None,
        limit: int,
        filters: Mapping[str, str],
    ) -> list[TaskRow]:
        stmt = sa.select(tasks)
        if after is not None:
            stmt = stmt.where(sa.tuple_(tasks.c.created_at, tasks.c.id) > sa.tuple_(*after))
        for key, value in filters.items():
            stmt = stmt.where(tasks.c[key] == value)
        return _tasks(tx, stmt.order_by(tasks.c.created_at, tasks.c.id).limit(limit))

    def pending_for_node(self, tx: Tx, node_id: str) -> list[TaskRow]:
        stmt = (
            sa.select(tasks)
            .where(tasks.c.node_id == node_id, tasks.c.status.in_(["pending", "running"]))
            .order_by(tasks.c.created_at, tasks.c.id)
        )
        return _tasks(tx, stmt)

    def update_task(
        self,
        tx: Tx,
        task_id: str,
        change: TaskChange,
        *,
        only_if_status: list[str] | None = None,
    ) -> int:
        stmt = tasks.update().where(tasks.c.id == task_id)
        if only_if_status is not None:
            stmt = stmt.where(tasks.c.status.in_(only_if_status))
        return sql(tx).execute(stmt.values(**change)).rowcount


#: The one instance (stateless); ``Database.tasks`` is this.
store: TaskStore = SqlTasks()
