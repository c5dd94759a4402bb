"""``Workers``: the API's background threads (liveness, heartbeat flush, VM scheduler,
the store watch: is the SQLite file still there, and Idempotency-Key claims
that could not be released while the store was down; and the capacity sampler,
issue 16.6: one sample per pool instance per ``capacity.sample_interval``, run
twice an interval so no bucket is skipped, ``CapacityService.sample_pass``).

Each loop runs on an interval and can be woken early; an exception in one
pass is logged and the loop goes on. A store outage is logged once per loop
when it starts and once when it ends, not with a traceback every pass.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from otherix.api import idempotency
from otherix.api.deps import Deps
from otherix.api.services.capacity import CapacityService
from otherix.api.services.placement import PlacementService
from otherix.api.workers.liveness import flush_heartbeats, liveness_pass
from otherix.api.workers.scheduler import PERIOD, SchedulerWake, paced_pass
from otherix.store import StoreError, StoreUnavailable

log = logging.getLogger(__name__)


class Loop:
    def __init__(
        self,
        name: str,
        interval: float,
        step: Callable[[], object],
        wake: threading.Event | None = None,
    ) -> None:
        self.name = name
        self.interval = interval
        self.step = step
        self.wake = wake or threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.store_down = False

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.step()
            except StoreUnavailable as exc:
                if not self.store_down:
                    log.warning("worker %s: the store is unavailable (%s)", self.name, exc)
                self.store_down = True
            except Exception:
                log.exception("worker %s pass failed", self.name)
            else:
                if self.store_down:
                    log.info("worker %s: the store answers again", self.name)
                self.store_down = False
            self.wake.wait(self.interval)
            self.wake.clear()


def store_watch(deps: Deps) -> None:
    """One ``stat`` of the SQLite file (a lost file is logged once, by the store),
    then a retry of claim releases that failed while the store was down."""
    if deps.db.lost is not None:
        return
    try:
        deps.db.check()
    except StoreError:
        return
    idempotency.retry_releases(deps)


class Workers:
    def __init__(
        self,
        deps: Deps,
        placement: PlacementService,
        scheduler_wake: SchedulerWake | None = None,
        *,
        capacity: CapacityService | None = None,
    ) -> None:
        hb = deps.settings.workers.heartbeat
        self.deps = deps
        wake = scheduler_wake or SchedulerWake()
        self.loops = [
            Loop("heartbeat-flush", hb.flush_interval, lambda: flush_heartbeats(deps)),
            Loop("liveness", min(hb.interval, hb.stale_threshold / 3), lambda: liveness_pass(deps)),
            Loop("scheduler", PERIOD, paced_pass(placement), wake=wake.event),
            Loop("store-watch", idempotency.STORE_WATCH_INTERVAL, lambda: store_watch(deps)),
        ]
        if capacity is not None:
            interval = deps.settings.capacity.sample_interval / 2
            self.loops.append(Loop("capacity", interval, capacity.sample_pass))

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
