"""PostgreSQL LISTEN/NOTIFY on one channel: the driver side of the watch bridge.

``NotifyChannel`` sends ``pg_notify(channel, payload)`` on an autocommit
connection of its own and runs a daemon thread that LISTENs and hands each
payload to a callback. ``otherix.api.pglisten`` wires it to the watch hub;
only the store talks to the driver.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

import psycopg

log = logging.getLogger(__name__)


def _dsn(sqlalchemy_url: str) -> str:
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


class NotifyChannel:
    """Send and receive notifications on ``channel`` of the database at ``url``."""

    def __init__(self, url: str, channel: str, on_notify: Callable[[list[str]], None]) -> None:
        self._dsn = _dsn(url)
        self._channel = channel
        self._on_notify = on_notify
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-listen", daemon=True)
        self._notify_conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._notify_lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._notify_lock:
            if self._notify_conn is not None:
                self._notify_conn.close()

    def notify(self, payloads: Iterable[str]) -> None:
        with self._notify_lock:
            if self._notify_conn is None or self._notify_conn.closed:
                self._notify_conn = psycopg.connect(self._dsn, autocommit=True)
            for payload in payloads:
                self._notify_conn.execute("SELECT pg_notify(%s, %s)", (self._channel, payload))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {self._channel}")
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=1.0):
                            self._on_notify([n.payload])
            except psycopg.Error:
                log.warning("LISTEN connection lost; reconnecting", exc_info=True)
                self._stop.wait(1.0)
