"""Base model configs and the list envelope shared by every wire model.

``Input`` models (request bodies) forbid unknown fields; ``Output`` models are
what the API returns and the client parses (they ignore unknown fields, so an
older client keeps working against a newer server).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Output(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PageMeta(Output):
    next_cursor: str | None = None


class Page(Output, Generic[T]):
    data: list[T]
    meta: PageMeta


class TaskLinks(Output):
    self: str


class AsyncTaskAccepted(Output):
    task_id: str
    status: str
    links: TaskLinks
