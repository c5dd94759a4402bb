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

    async def wait(self, node_id: str, timeout: float) -> bool:
        """Wait until ``node_id`` is published or ``timeout`` passes; True if woken."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._waiters[node_id].add(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return False
        finally:
            with self._lock:
                waiters = self._waiters.get(node_id)
                if waiters is not None:
                    waiters.discard(fut)
                    if not waiters:
                        self._waiters.pop(node_id, None)
        return True

    def waiting(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._waiters.values())


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
