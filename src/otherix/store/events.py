"""Node events: each node's bounded log (``node_events``), newest ``EVENTS_KEPT`` kept.

``SqlEvents`` implements ``ports.events.EventStore``. Written by the services
that act on a node (the default-pool step); read by the node detail view.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from otherix.store.ports import JSONObject
from otherix.store.ports.events import EVENTS_KEPT, EventRow, EventStore
from otherix.store.schema import node_events
from otherix.store.tx import Tx, sql

__all__ = ["EVENTS_KEPT", "SqlEvents", "store"]


class SqlEvents:
    """:class:`EventStore` in SQLAlchemy Core, for both backends."""

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
    ) -> None:
        """Append an event and prune the node's log to its newest ``keep`` entries."""
        sql(tx).execute(
            node_events.insert().values(
                node_id=node_id,
                type=type_,
                reason=reason,
                message=message,
                details=details,
                created_at=now,
            )
        )
        newest = (
            sa.select(node_events.c.seq)
            .where(node_events.c.node_id == node_id)
            .order_by(node_events.c.seq.desc())
            .limit(keep)
            .scalar_subquery()
        )
        sql(tx).execute(
            node_events.delete().where(
                node_events.c.node_id == node_id, node_events.c.seq.not_in(newest)
            )
        )

    def list_events(self, tx: Tx, node_id: str, limit: int = EVENTS_KEPT) -> list[EventRow]:
        """The node's newest ``limit`` events, oldest first."""
        newest = (
            sa.select(node_events)
            .where(node_events.c.node_id == node_id)
            .order_by(node_events.c.seq.desc())
            .limit(limit)
            .subquery()
        )
        rows = sql(tx).execute(sa.select(newest).order_by(newest.c.seq)).mappings()
        return [EventRow(**r) for r in rows]


#: The one instance (stateless); ``Database.events`` is this.
store: EventStore = SqlEvents()
