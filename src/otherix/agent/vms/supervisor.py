"""The VM supervisor: observes every VM the runtime knows, applies its restart policy,
and keeps the observations the agent's heartbeat carries.

``VmSupervisor(runtime)`` runs one thread (``start``) that calls ``tick`` every
``interval`` seconds (1 s). A tick observes each VM (``VmRuntime.state``, which also
rotates its console log) and, by the VM's restart policy (``VmLaunch.restart_policy``):

- ``never``: a QEMU that ended stays as it ended;
- ``on-failure`` (the default): a ``crashed`` VM (QEMU ended unasked: killed, a
  non-zero exit, or any end after an agent restart, see docs/vm-runtime.md) is started
  again after a backoff;
- ``always``: also a VM whose guest powered itself off (``stopped`` without a stop
  having been asked for).

A stop or power-off that was asked for is never undone, and a VM that ``failed`` to
start is not retried (QEMU's message says why; starting it again would fail the same
way). The backoff is ``backoff_initial`` (1 s) doubling up to ``backoff_max`` (60 s);
it starts again from the beginning once the VM has run ``stable_after`` (60 s), or
when someone starts it (``asked``). Each restart is counted and logged.

``observations()`` is every VM as the heartbeat reports it
(``models.heartbeat.VmObservation``); ``version`` grows whenever that list changes, so
the daemon knows when to send it. Thread-safe: ticks, the task workers (start, stop,
delete) and the daemon share one supervisor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from otherix.agent.vms.observed import ObservedVm, UnknownVm
from otherix.agent.vms.runtime import VmRuntime
from otherix.models.heartbeat import VmObservation

__all__ = ["VmSupervisor", "observation_of"]

_log = logging.getLogger(__name__)

#: console lines an observation carries (the wire allows 100)
CONSOLE_LINES = 50
_LINE_CAP = 1024


@dataclass
class _Policy:
    restarts: int = 0  # restarts by the policy since this agent process began
    attempt: int = 0  # consecutive restarts the backoff counts
    due_at: float | None = None  # monotonic time of the next restart
    due_wall: datetime | None = None  # the same, as reported


def _wall(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).replace(microsecond=0)


def observation_of(
    obs: ObservedVm, *, restarts: int = 0, next_restart_at: datetime | None = None
) -> VmObservation:
    """``obs`` as the heartbeat reports it (console lines cut to the wire's limits)."""
    lines = [line[:_LINE_CAP] for line in obs.console[-CONSOLE_LINES:]]
    return VmObservation(
        id=obs.vm_id,
        state=obs.state,
        pid=obs.pid,
        accelerator=obs.accel,
        started_at=_wall(obs.started_at),
        exit_status=max(-255, min(255, obs.exit_status)) if obs.exit_status is not None else None,
        detail=obs.detail[:4096] if obs.detail else None,
        restarts=restarts,
        next_restart_at=next_restart_at,
        limits=obs.limits[:512] if obs.limits else None,
        console=lines,
    )


class VmSupervisor:
    def __init__(
        self,
        runtime: VmRuntime,
        *,
        interval: float = 1.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
        stable_after: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.runtime = runtime
        self.interval = interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self._monotonic = monotonic
        self._wall = wall
        self._policies: dict[str, _Policy] = {}
        self._reports: dict[str, VmObservation] = {}
        #: VMs being deleted: never restarted, never reported again (until started)
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._tick_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.version = 0

    # -- lifecycle ----------------------------------------------------------------------

    def attach(self) -> list[ObservedVm]:
        """Re-attach to the VMs recorded in the run directory (agent start) and observe
        them once; a VM whose QEMU died meanwhile is then up to its policy."""
        found = self.runtime.attach_all()
        for obs in found:
            _log.info(
                "vm found at start",
                extra={"vm": obs.vm_id, "state": obs.state, "pid": obs.pid},
            )
        self.tick()
        return found

    def start(self) -> VmSupervisor:
        self._thread = threading.Thread(target=self._loop, name="vm-supervisor", daemon=True)
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop ticking (the VMs keep running)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # pragma: no cover - a bug; keep supervising the others
                _log.exception("vm supervisor tick failed")

    # -- what tasks tell it -------------------------------------------------------------

    def asked(self, vm_id: str) -> None:
        """Someone started the VM: its backoff starts from the beginning."""
        with self._lock:
            self._held.discard(vm_id)
            self._policies[vm_id] = _Policy(restarts=self._policies.get(vm_id, _Policy()).restarts)

    def hold(self, vm_id: str) -> None:
        """A delete is at the VM: it is not restarted, and its report stays as it was
        (a delete that is refused must not make a running VM look gone). Returns once a
        tick in flight (which may be restarting it) is over."""
        with self._lock:
            self._held.add(vm_id)
        with self._tick_lock:
            pass

    def forget(self, vm_id: str) -> None:
        """The VM is gone (or going): held, and not reported any more."""
        self.hold(vm_id)
        with self._lock:
            self._policies.pop(vm_id, None)
            if self._reports.pop(vm_id, None) is not None:
                self.version += 1

    def release(self, vm_id: str) -> None:
        """Undo ``hold``/``forget`` (the delete did not happen): supervised and reported
        again."""
        with self._lock:
            self._held.discard(vm_id)

    def observe(self, vm_id: str) -> VmObservation:
        """Observe one VM now (after a task changed it) and update its report."""
        obs = self.runtime.state(vm_id)
        return self._store(obs)

    # -- the tick -----------------------------------------------------------------------

    def _due(self, obs: ObservedVm, policy: str) -> bool:
        if obs.stop_asked or policy == "never":
            return False
        if obs.state == "crashed":
            return True
        return obs.state == "stopped" and policy == "always"

    def _delay(self, attempt: int) -> float:
        return float(min(self.backoff_max, self.backoff_initial * (2**attempt)))

    def tick(self) -> None:
        """Observe every VM once and restart the ones their policy says to."""
        with self._tick_lock:
            for vm_id in self.runtime.vm_ids():
                if vm_id in self._held:
                    continue
                try:
                    obs = self.runtime.state(vm_id)
                except UnknownVm:  # forgotten meanwhile (deleted)
                    continue
                obs = self._apply_policy(vm_id, obs)
                self._store(obs)

    def _apply_policy(self, vm_id: str, obs: ObservedVm) -> ObservedVm:
        launch = self.runtime.launch_of(vm_id)
        now = self._monotonic()
        with self._lock:
            p = self._policies.setdefault(vm_id, _Policy())
            if obs.state == "running" and p.attempt and (obs.uptime_s or 0) >= self.stable_after:
                p.attempt = 0
            if not self._due(obs, launch.restart_policy):
                p.due_at = None
                return obs
            if p.due_at is None:
                p.due_at = now + self._delay(p.attempt)
                p.due_wall = _wall(self._wall() + self._delay(p.attempt))
                _log.warning(
                    "vm %s is %s; restarting it in %.0f s (restart policy %s)",
                    launch.name,
                    obs.state,
                    p.due_at - now,
                    launch.restart_policy,
                    extra={"vm": vm_id, "detail": obs.detail},
                )
            if now < p.due_at:
                return obs
            p.due_at = None
            p.attempt += 1
            p.restarts += 1
        _log.info("vm %s restarted by its restart policy", launch.name, extra={"vm": vm_id})
        return self.runtime.start(launch)

    def _store(self, obs: ObservedVm) -> VmObservation:
        with self._lock:
            if obs.vm_id in self._held:
                return observation_of(obs)
            p = self._policies.setdefault(obs.vm_id, _Policy())
            if obs.stop_asked:  # a stop asked for cancels a restart that was due
                p.due_at = None
            due = p.due_wall if p.due_at is not None else None
            report = observation_of(obs, restarts=p.restarts, next_restart_at=due)
            if self._reports.get(obs.vm_id) != report:
                self._reports[obs.vm_id] = report
                self.version += 1
            return report

    def observations(self) -> list[VmObservation]:
        """Every VM's latest report, by id."""
        with self._lock:
            return [self._reports[k] for k in sorted(self._reports)]
