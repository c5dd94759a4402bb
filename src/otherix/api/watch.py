"""Wake-ups for the agents' long-poll watch.

``WatchHub.publish(node_ids)`` is called by services after a commit that moved
a node's desired revision. Waiters are asyncio futures on the server's event
loop; publishers run in worker threads, so wake-ups cross over with
``call_soon_threadsafe``. With PostgreSQL, ``publish`` also sends
``NOTIFY otherix_desired`` and a listener thread (``PgListener``) forwards
notifications from other replicas into the local hub.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)
CHANNEL = "otherix_desired"


class WatchHub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self._remote: Callable[[Iterable[str]], None] | None = None
        self.closed = False

    def close(self) -> None:
        """Shutting down: wake every watcher now and answer future ones at once."""
        self.closed = True
        with self._lock:
            ids = list(self._waiters)
        self.wake_local(ids)

    def set_remote_publisher(self, fn: Callable[[Iterable[str]], None] | None) -> None:
        self._remote = fn

    def publish(self, node_ids: Iterable[str]) -> None:
        ids = list(dict.fromkeys(node_ids))
        if not ids:
            return
        self.wake_local(ids)
        if self._remote is not None:
            try:
                self._remote(ids)
            except Exception:  # a lost NOTIFY is healed by the watch's periodic re-check
                log.warning("NOTIFY for desired-state change failed", exc_info=True)

    def wake_local(self, node_ids: Iterable[str]) -> None:
        with self._lock:
            futures = [f for nid in node_ids for f in self._waiters.pop(nid, ())]
        for fut in futures:
            loop = fut.get_loop()
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, fut)

    def waiting(self) -> int:
        """Watches parked right now (the ``otherix_watch_waiters`` gauge)."""
        with self._lock:
            return sum(len(w) for w in self._waiters.values())

    def subscribe(self, node_id: str) -> asyncio.Future[None]:
        """Register interest *before* reading state, so no publish is missed."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiters[node_id].add(fut)
        return fut

    def unsubscribe(self, node_id: str, fut: asyncio.Future[None]) -> None:
        with self._lock:
            waiters = self._waiters.get(node_id)
            if waiters is not None:
                waiters.discard(fut)
                if not waiters:
                    self._waiters.pop(node_id, None)

    async def wait_for(self, fut: asyncio.Future[None], timeout: float) -> bool:  # noqa: ASYNC109
        """True if ``fut`` was woken within ``timeout`` seconds."""
        if self.closed:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return False
        return True


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
