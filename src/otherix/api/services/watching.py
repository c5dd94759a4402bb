"""The agents' long-poll watch: wait until a node's desired revision passes the
one the agent holds, or until the timeout.

Called by ``routes/nodes.py`` (``GET /v1/nodes/{name}/watch``). The wake-ups
come from ``deps.hub`` (``api/watch.py``): a waiter subscribes *before* it
reads the revision, so no publish between the read and the wait is missed.
Store reads run in worker threads; the wait itself parks on the event loop.
"""

from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool

from otherix.api.deps import Deps
from otherix.api.services import heartbeat as hb
from otherix.api.services import nodes
from otherix.models.heartbeat import WatchReply


async def watch(deps: Deps, token: str, name: str, revision: int, timeout: float) -> WatchReply:  # noqa: ASYNC109
    """``changed: true`` with the desired state as soon as its revision passes
    ``revision``; ``changed: false`` with the current one after ``timeout`` seconds
    (or at once when the server is shutting down)."""
    ident = await run_in_threadpool(nodes.authenticate_agent, deps, token)
    nodes.bind_agent(ident, name)
    deadline = time.monotonic() + timeout
    while True:
        fut = deps.hub.subscribe(ident.node_id)
        try:
            current = await run_in_threadpool(hb.current_revision, deps, ident.node_id)
            if current is None:  # deleted while the watch was parked
                raise nodes.removed_error(ident.name)
            desired = await run_in_threadpool(hb.desired_state, deps, ident.node_id, current)
            if desired.revision > revision:
                return WatchReply(changed=True, desired=desired)
            remaining = deadline - time.monotonic()
            if remaining <= 0 or deps.hub.closed:
                return WatchReply(changed=False, desired=desired)
            # With PostgreSQL, re-check the store now and then in case a NOTIFY
            # from another replica was lost. SQLite has one process and its
            # wake-ups cannot be lost: re-checking 10,000 parked watches every
            # few seconds would only load the server (bench/footprint.py).
            if deps.db.backend == "postgresql":
                remaining = min(remaining, deps.settings.agents.watch_recheck)
            await deps.hub.wait_for(fut, remaining)
        finally:
            deps.hub.unsubscribe(ident.node_id, fut)
