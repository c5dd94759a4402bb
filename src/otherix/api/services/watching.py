"""The agents' long-poll watch: wait until a node's desired revision passes the
one the agent holds, or until the timeout.

Called by ``routes/nodes.py`` (``GET /v1/nodes/{name}/watch``). The wake-ups
come from the ``WatchHub`` (``api/watch.py``): a waiter subscribes *before* it
reads the revision, so no publish between the read and the wait is missed.
Store reads run in worker threads; the wait itself parks on the event loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from otherix.api.services import nodes
from otherix.api.services.heartbeat import HeartbeatService
from otherix.api.services.nodes import NodeService
from otherix.api.settings import ApiSettings
from otherix.api.watch import WatchHub
from otherix.models.heartbeat import WatchReply
from otherix.store import Database


@dataclass(kw_only=True, eq=False)
class WatchService:
    """The watching service, built once by ``api/compose.py`` with the collaborators below."""

    settings: ApiSettings
    db: Database
    hub: WatchHub
    heartbeat_service: HeartbeatService
    node_service: NodeService

    async def watch(self, token: str, name: str, revision: int, timeout: float) -> WatchReply:  # noqa: ASYNC109
        """``changed: true`` with the desired state as soon as its revision passes
        ``revision``; ``changed: false`` with the current one after ``timeout`` seconds
        (or at once when the server is shutting down)."""
        ident = await run_in_threadpool(self.node_service.authenticate_agent, token)
        nodes.bind_agent(ident, name)
        deadline = time.monotonic() + timeout
        while True:
            fut = self.hub.subscribe(ident.node_id)
            try:
                current = await run_in_threadpool(
                    self.heartbeat_service.current_revision, ident.node_id
                )
                if current is None:  # deleted while the watch was parked
                    raise nodes.removed_error(ident.name)
                desired = await run_in_threadpool(
                    self.heartbeat_service.desired_state, ident.node_id, current
                )
                if desired.revision > revision:
                    return WatchReply(changed=True, desired=desired)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.hub.closed:
                    return WatchReply(changed=False, desired=desired)
                # With PostgreSQL, re-check the store now and then in case a NOTIFY
                # from another replica was lost. SQLite has one process and its
                # wake-ups cannot be lost: re-checking 10,000 parked watches every
                # few seconds would only load the server (bench/footprint.py).
                if self.db.backend == "postgresql":
                    remaining = min(remaining, self.settings.agents.watch_recheck)
                await self.hub.wait_for(fut, remaining)
            finally:
                self.hub.unsubscribe(ident.node_id, fut)
