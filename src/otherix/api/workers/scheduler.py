"""The VM scheduler loop: retry placing pending VMs when nodes or pools change.

``schedule_pass`` is the step tests call directly: it takes up to ``limit``
pending, unplaced VMs (oldest first) and makes one placement attempt for each
(``PlacementService.schedule_vm``), reading a pool's instances once per pass
until a binding changes them. A VM that still cannot be placed keeps
``pending`` with its reason; nothing ever fails it and there is no deadline.

When it runs (``Workers`` registers the loop):

- at once after a request that can change placement: ``KickScheduler``, an
  ASGI middleware, wakes the loop after any successful non-GET call under
  ``/v1/nodes`` (heartbeats with pool reports, promotions, cordon, uncordon,
  readmit, agent task reports), ``/v1/storage-pools`` and ``/v1/vms``; wake-ups
  that arrive during a pass are folded into the next one;
- every ``PERIOD`` seconds otherwise, which also covers node liveness changes
  and changes made through another API replica.

VM admission makes the first attempt itself, so a VM that can be placed is
placed before ``POST /v1/vms`` answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otherix.api.services.placement import PlacementService
from otherix.domain.placement import Candidate
from otherix.store import StoreError

log = logging.getLogger(__name__)

PERIOD = 15.0
#: at most one pass per MIN_GAP seconds, however often heartbeats wake the loop
MIN_GAP = 0.2
BATCH = 100
#: set in ``request.state`` by a write route that changed nothing (an unchanged heartbeat)
NO_CHANGE = "placement_unchanged"
#: requests under these paths can make a pending VM placeable
KICK_PREFIXES = ("/v1/nodes", "/v1/storage-pools", "/v1/vms")


def schedule_pass(placement: PlacementService, limit: int = BATCH) -> dict[str, int]:
    """One pass; returns how many VMs were ``bound``, ``unplaceable`` or ``skipped``."""
    pending = placement.unscheduled(limit)
    counts = {"bound": 0, "unplaceable": 0, "skipped": 0}
    cache: dict[str, list[Candidate]] = {}
    for vm in pending:
        try:
            counts[placement.schedule_vm(vm, cache)] += 1
        except StoreError:  # one VM's trouble must not starve the others
            log.warning("placing vm %s failed; retrying later", vm.name, exc_info=True)
            counts["skipped"] += 1
    if counts["bound"]:
        log.info("scheduler pass: %s", counts)
    return counts


def paced_pass(placement: PlacementService) -> Callable[[], dict[str, int]]:
    """The loop's step: ``schedule_pass``, at most once per ``MIN_GAP`` seconds."""
    last = [0.0]

    def step() -> dict[str, int]:
        wait = MIN_GAP - (time.monotonic() - last[0])
        if wait > 0:
            time.sleep(wait)
        last[0] = time.monotonic()
        return schedule_pass(placement)

    return step


class SchedulerWake:
    """The wake-up the middleware pulls and the scheduler loop waits on."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def kick(self) -> None:
        self.event.set()


class KickScheduler:
    """Pure ASGI middleware: wake the scheduler after a successful write that
    may change placement (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, wake: SchedulerWake) -> None:
        self.app = app
        self.wake = wake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if scope.get("method") == "GET" or not path.startswith(KICK_PREFIXES):
            await self.app(scope, receive, send)
            return
        status: dict[str, Any] = {}

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, receive, watch)
        if status.get("code", 500) < 400 and not scope.get("state", {}).get(NO_CHANGE):
            self.wake.kick()
