"""Tasks: long-running work with status, progress, result and error."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from otherix.store.schema import tasks
from otherix.store.tx import Tx, sql


def insert_task(tx: Tx, row: dict[str, Any]) -> None:
    sql(tx).execute(tasks.insert().values(**row))


def get_task(tx: Tx, task_id: str) -> dict[str, Any] | None:
    row = sql(tx).execute(sa.select(tasks).where(tasks.c.id == task_id)).mappings().first()
    return dict(row) if row else None


def list_tasks(
    tx: Tx,
    *,
    after: tuple[datetime, str] | None,
    limit: int,
    filters: dict[str, str],
) -> list[dict[str, Any]]:
    stmt = sa.select(tasks)
    if after is not None:
        stmt = stmt.where(sa.tuple_(tasks.c.created_at, tasks.c.id) > sa.tuple_(*after))
    for key, value in filters.items():
        stmt = stmt.where(tasks.c[key] == value)
    rows = sql(tx).execute(stmt.order_by(tasks.c.created_at, tasks.c.id).limit(limit)).mappings()
    return [dict(r) for r in rows]


def pending_for_node(tx: Tx, node_id: str) -> list[dict[str, Any]]:
    stmt = (
        sa.select(tasks)
        .where(tasks.c.node_id == node_id, tasks.c.status.in_(["pending", "running"]))
        .order_by(tasks.c.created_at, tasks.c.id)
    )
    return [dict(r) for r in sql(tx).execute(stmt).mappings()]


def update_task(
    tx: Tx,
    task_id: str,
    values: dict[str, Any],
    *,
    only_if_status: list[str] | None = None,
) -> int:
    stmt = tasks.update().where(tasks.c.id == task_id)
    if only_if_status is not None:
        stmt = stmt.where(tasks.c.status.in_(only_if_status))
    return sql(tx).execute(stmt.values(**values)).rowcount
