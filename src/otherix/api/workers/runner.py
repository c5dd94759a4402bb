"""``Workers``: the API's background threads (liveness, heartbeat flush).

Each loop runs on an interval and can be woken early; an exception in one
pass is logged and the loop goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from otherix.api.deps import Deps
from otherix.api.workers.liveness import flush_heartbeats, liveness_pass

log = logging.getLogger(__name__)


class Loop:
    def __init__(self, name: str, interval: float, step: Callable[[], object]) -> None:
        self.name = name
        self.interval = interval
        self.step = step
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.step()
            except Exception:
                log.exception("worker %s pass failed", self.name)
            self.wake.wait(self.interval)
            self.wake.clear()


class Workers:
    def __init__(self, deps: Deps) -> None:
        hb = deps.settings.workers.heartbeat
        self.deps = deps
        self.loops = [
            Loop("heartbeat-flush", hb.flush_interval, lambda: flush_heartbeats(deps)),
            Loop("liveness", min(hb.interval, hb.stale_threshold / 3), lambda: liveness_pass(deps)),
        ]

    def start(self) -> None:
        for loop in self.loops:
            loop.thread.start()

    def stop(self) -> None:
        for loop in self.loops:
            loop.stop.set()
            loop.wake.set()
        for loop in self.loops:
            loop.thread.join(timeout=10)
        try:
            flush_heartbeats(self.deps)
        except Exception:
            log.exception("final heartbeat flush failed")
