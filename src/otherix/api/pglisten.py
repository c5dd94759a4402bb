"""LISTEN/NOTIFY bridge so a desired-state change on one API replica wakes
watchers held by another (PostgreSQL only). The driver side is
``otherix.store.notify``; this module wires it to the watch hub."""

from __future__ import annotations

from collections.abc import Iterable

from otherix.api.watch import CHANNEL, WatchHub
from otherix.store.notify import NotifyChannel


class PgListener:
    def __init__(self, url: str, hub: WatchHub) -> None:
        self._hub = hub
        self._channel = NotifyChannel(url, CHANNEL, hub.wake_local)

    def start(self) -> None:
        self._hub.set_remote_publisher(self.notify)
        self._channel.start()

    def stop(self) -> None:
        self._hub.set_remote_publisher(None)
        self._channel.stop()

    def notify(self, node_ids: Iterable[str]) -> None:
        self._channel.notify(node_ids)
