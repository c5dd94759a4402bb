"""LISTEN/NOTIFY bridge so a desired-state change on one API replica wakes
watchers held by another (PostgreSQL only)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import psycopg

from otherix.api.watch import CHANNEL, WatchHub

log = logging.getLogger(__name__)


def _dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


class PgListener:
    def __init__(self, url: str, hub: WatchHub) -> None:
        self._dsn = _dsn(url)
        self._hub = hub
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)
        self._notify_conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._notify_lock = threading.Lock()

    def start(self) -> None:
        self._hub.set_remote_publisher(self.notify)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._hub.set_remote_publisher(None)
        self._thread.join(timeout=5)
        with self._notify_lock:
            if self._notify_conn is not None:
                self._notify_conn.close()

    def notify(self, node_ids: Iterable[str]) -> None:
        with self._notify_lock:
            if self._notify_conn is None or self._notify_conn.closed:
                self._notify_conn = psycopg.connect(self._dsn, autocommit=True)
            for nid in node_ids:
                self._notify_conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, nid))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=1.0):
                            self._hub.wake_local([n.payload])
            except psycopg.Error:
                log.warning("LISTEN connection lost; reconnecting", exc_info=True)
                self._stop.wait(1.0)
