"""The events aggregate: each node's bounded log of what the control plane did
to it (``node_events``; the newest ``EVENTS_KEPT`` are kept)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from otherix.store.ports import JSONObject
from otherix.store.tx import Tx

EVENTS_KEPT = 50


@dataclass(frozen=True, slots=True)
class EventRow:
    seq: int
    node_id: str
    #: ``normal`` or ``warning``
    type: str
    reason: str
    message: str
    details: JSONObject
    created_at: datetime


class EventStore(Protocol):
    def add_event(
        self,
        tx: Tx,
        node_id: str,
        *,
        type_: str,
        reason: str,
        message: str,
        details: JSONObject,
        now: datetime,
        keep: int = EVENTS_KEPT,
    ) -> None: ...
    def list_events(self, tx: Tx, node_id: str, limit: int = EVENTS_KEPT) -> list[EventRow]: ...
