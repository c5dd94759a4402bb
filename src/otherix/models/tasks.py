"""Wire model for tasks (docs/pool-contract.md §6)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from otherix.models.common import Output

TaskStatus = Literal["pending", "running", "success", "failed", "cancelled"]


class Task(Output):
    id: str
    type: str
    status: TaskStatus
    progress: int
    resource_type: str | None
    resource_id: str | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    attempts: int
    max_attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
