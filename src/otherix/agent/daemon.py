"""The node agent's main loop: heartbeat, apply desired state, watch, repeat.

Built and run by ``otherix-agent serve`` (``otherix.agent.main``); unit tests
drive it with a stub control plane and a fake clock (``otherix.agent.runtime``).

One step of the loop does exactly one of these, in this order of priority:

1. **Periodic reconcile**: every heartbeat interval the declared pools are
   applied again even if nothing changed (reconcile is idempotent; it is how a
   failed pool recovers and how capacity is re-read). Then any desired task
   not yet reported is run and reported (``otherix.agent.tasks``); a report
   that fails is retried a heartbeat interval later and never holds up a
   heartbeat. VM tasks are only handed to their worker threads here. When a
   VM task may have changed an image cache, the pools' image inventories are
   re-listed, so the next heartbeat carries them.
2. **Heartbeat**, when one is due or the report set is not yet acknowledged.
   The report carries the full ``pools`` list on the first send, after the
   control plane answered ``resync``, and whenever the pool reports or the
   applied desired revision changed since the last acknowledged full report;
   otherwise ``pools`` is None and only the ``digest`` says "unchanged". A new
   desired revision therefore always produces one full report, so a pool
   re-created under the same name still gets its status stored. The reply's
   desired state is reconciled at once when it changed, and if that changed
   the report set, the next step heartbeats again at once.
3. **Watch**: a long-poll for a desired revision newer than the one applied,
   held for ``min(watch_timeout, time until the next heartbeat)``, and at
   most ``busy_watch`` (1 s) while VM tasks run in their worker threads or
   their effect on the image caches is not reported yet: a worker cannot
   end a watch early, and the inventory must follow a finished create
   within a second. When it returns changed, the new desired state is
   reconciled and reported at once.

VMs (``otherix.agent.vms.supervisor``): the report carries ``vms``, every VM
the runtime knows as observed, whenever that list changed since the last
acknowledged heartbeat (the supervisor's ``version``), and a change makes the
next step heartbeat at once. While the runtime knows a VM, a watch is held at
most ``vm_watch`` (2 s), so a crash or a finished boot reaches the control
plane within about that.

Failures (``otherix.client`` errors) end the loop only when the node was
removed:

- a retryable error (``otherix.retry.Retryable``: transport errors,
  408/429, a 5xx other than 500): exponential backoff with full jitter
  (``backoff_initial`` doubling up to ``backoff_max``), forever;
- 401 reason ``node_deleted`` (an operator ran ``otherix node delete``): the
  one failure that ends the loop. It logs once that the node was removed and
  how to re-join, and raises :class:`NodeRemoved`; ``otherix-agent serve``
  then exits with :data:`EXIT_NODE_REMOVED` (78), which a service manager can
  be told not to restart (systemd: ``RestartPreventExitStatus=78``);
- any other 401 (credential unknown or revoked) and 409 ``node_gone``
  (waiting for an operator's readmit): retried slowly, once per heartbeat
  interval (±10%);
- any other 4xx is a mismatch an operator must fix (e.g.
  ``architecture_mismatch``), and a 500 ``internal`` is a bug on the server:
  both are permanent, retried only once per heartbeat interval.

Each is logged once when the connection state changes, not per retry.
Shutdown (``StopToken``) is checked between steps, so the current step
finishes; an open watch is abandoned.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from otherix.agent.backoff import Link
from otherix.agent.report import PoolState
from otherix.agent.runtime import Clock, Interrupted, StopToken
from otherix.agent.settings import DEFAULT_HEARTBEAT_INTERVAL
from otherix.agent.state import NodeState
from otherix.agent.tasks import TaskRunner
from otherix.client.errors import ApiError, ClientError, UnauthenticatedError
from otherix.models.heartbeat import (
    DesiredState,
    HeartbeatReply,
    HeartbeatReport,
    TaskUpdate,
    VmObservation,
    WatchReply,
)
from otherix.retry import agent_backoff, is_retryable, steady

__all__ = ["EXIT_NODE_REMOVED", "ControlPlane", "Daemon", "LoopConfig", "NodeRemoved"]

_log = logging.getLogger(__name__)

#: ``otherix-agent serve``'s exit status when the node was removed from the
#: cluster (sysexits' EX_CONFIG: restarting cannot help, re-joining can).
EXIT_NODE_REMOVED = 78


class NodeRemoved(Exception):
    """The control plane says this node was deleted; the agent must stop."""


class VmReports(Protocol):
    """What the loop needs of the VM supervisor (``VmSupervisor`` has it)."""

    version: int

    def observations(self) -> list[VmObservation]: ...


class ControlPlane(Protocol):
    """The calls the loop makes (``otherix.client.agent.AgentClient`` has them)."""

    def heartbeat(self, node: str, report: HeartbeatReport) -> HeartbeatReply: ...

    def watch(self, node: str, revision: int, timeout: float) -> WatchReply: ...

    def update_task(self, node: str, task_id: str, update: TaskUpdate) -> object: ...


@dataclass(frozen=True)
class LoopConfig:
    heartbeat_interval: float | None = None  # None: the control plane's value
    watch_timeout: float = 25.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    #: A wait shorter than this sleeps instead of opening a watch.
    min_watch: float = 0.5
    #: Longest watch while VM tasks run (their outcome must be reported promptly).
    busy_watch: float = 1.0
    #: Longest watch while VMs exist (their state changes must be reported promptly).
    vm_watch: float = 2.0


class Daemon:
    def __init__(
        self,
        *,
        client: ControlPlane,
        pools: PoolState,
        tasks: TaskRunner,
        state: NodeState,
        clock: Clock,
        stop: StopToken,
        config: LoopConfig,
        agent_version: str,
        rng: random.Random | None = None,
        persist: Callable[[NodeState], None] | None = None,
        capabilities: Mapping[str, Any] | None = None,
        vms: VmReports | None = None,
    ) -> None:
        self._vms = vms
        #: the supervisor's version the control plane last acknowledged
        self._vms_acked: int | None = None
        self._client = client
        self._pools = pools
        self._tasks = tasks
        self.state = state
        self._clock = clock
        self._stop = stop
        self._config = config
        self._agent_version = agent_version
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self._persist = persist
        self._capabilities = dict(capabilities) if capabilities else None
        self.interval = config.heartbeat_interval or DEFAULT_HEARTBEAT_INTERVAL
        self.backoff = agent_backoff(config.backoff_initial, config.backoff_max).backoff(self._rng)
        self.link = Link(_log)
        self.desired: DesiredState | None = None
        #: (digest, revision) of the last full report the control plane acknowledged.
        self._acked: tuple[str, int] | None = None
        self._resync = False
        self._next_heartbeat = clock.monotonic()
        self._next_reconcile = float("inf")
        self._tasks_retry_at = 0.0

    # --- the loop ------------------------------------------------------------------

    def run(self) -> None:
        """Loop until the stop token is set."""
        try:
            while not self._stop.is_set():
                self.step()
        except Interrupted:
            pass
        _log.info("agent stopped")

    def step(self) -> None:
        """One step (see the module docstring); never raises but ``Interrupted``."""
        try:
            now = self._clock.monotonic()
            if self.desired is not None and now >= self._next_reconcile:
                self._reconcile(self.desired)
            if self.desired is not None and now >= self._tasks_retry_at:
                self._run_tasks(self.desired)
            if self._tasks.take_images_changed() and self._pools.refresh_images():
                _log.debug("image inventory changed")
            if self.report_pending() or now >= self._next_heartbeat:
                self._heartbeat()
            else:
                self._wait()
        except ClientError as exc:
            self._failed(exc)
        except Exception:
            if self.link.state != "error":  # the traceback once, not per retry
                _log.exception("unexpected error in the agent loop; retrying with backoff")
            self.link.state = "error"
            self._clock.sleep(self.backoff.next())

    def report_pending(self) -> bool:
        """True when the next heartbeat must carry the full pool list, or VM states the
        control plane has not acknowledged."""
        return (
            self._resync
            or self._acked != (self._pools.digest, self.state.revision)
            or (self._vms is not None and self._vms_acked != self._vms.version)
        )

    # --- steps -----------------------------------------------------------------------

    def _heartbeat(self) -> None:
        full = self._resync or self._acked != (self._pools.digest, self.state.revision)
        vms_version = self._vms.version if self._vms is not None else None
        vms = None
        if self._vms is not None and (full or self._vms_acked != vms_version):
            vms = self._vms.observations()
        report = HeartbeatReport(
            agent_version=self._agent_version,
            architecture=self.state.architecture,
            revision=self.state.revision,
            capabilities=self._capabilities if full else None,
            pools=self._pools.reports if full else None,
            digest=self._pools.digest,
            vms=vms,
        )
        reply = self._client.heartbeat(self.state.node_name, report)
        self._connected()
        if full:
            self._acked = (report.digest, report.revision)
        if vms is not None:
            self._vms_acked = vms_version
        self._resync = reply.resync
        if reply.resync:
            _log.info("control plane asked for a full report (digest mismatch)")
        if self._config.heartbeat_interval is None and reply.heartbeat_interval_seconds > 0:
            self.interval = reply.heartbeat_interval_seconds
        self._next_heartbeat = self._clock.monotonic() + self.interval
        self._apply(reply.desired)

    def _wait(self) -> None:
        started = self._clock.monotonic()
        remaining = self._next_heartbeat - started
        timeout = min(self._config.watch_timeout, remaining)
        if self._tasks.busy():
            timeout = min(timeout, self._config.busy_watch)
        if self._vms is not None and self._vms_acked is not None and self._vms.observations():
            timeout = min(timeout, self._config.vm_watch)
        if self.desired is None or timeout < self._config.min_watch:
            self._clock.sleep(remaining)
            return
        with self._stop.interruptible():
            reply = self._client.watch(self.state.node_name, self.desired.revision, timeout)
        if reply.changed or reply.desired.revision != self.desired.revision:
            self._connected()
            _log.debug("desired state changed: revision %d", reply.desired.revision)
            self._apply(reply.desired)
        elif self._clock.monotonic() - started < timeout / 2:
            # Answered early with nothing new: the control plane is shutting down.
            _log.debug("watch returned early without a change; backing off")
            self._clock.sleep(self.backoff.next())
        else:
            self._connected()

    def _run_tasks(self, desired: DesiredState) -> None:
        if not self._tasks.pending(desired.tasks):
            return
        try:
            self._tasks.run(self._client, self.state.node_name, desired.tasks)
        except ClientError as exc:  # never let a task report hold up the heartbeat
            self._tasks_retry_at = self._clock.monotonic() + self.interval
            _log.warning("task report failed (%s); retrying in %.0fs", exc, self.interval)

    def _apply(self, desired: DesiredState) -> None:
        previous = self.desired
        self.desired = desired
        if (
            previous is None
            or desired.revision != previous.revision
            or desired.declared_pools != previous.declared_pools
        ):
            self._reconcile(desired)

    def _reconcile(self, desired: DesiredState) -> None:
        if self._pools.reconcile(desired.declared_pools, desired.tasks):
            _log.debug("pool reports changed", extra={"revision": desired.revision})
        self._next_reconcile = self._clock.monotonic() + self.interval
        if desired.revision != self.state.revision:
            self.state = self.state.with_revision(desired.revision)
            if self._persist is not None:
                try:
                    self._persist(self.state)
                except OSError as exc:
                    _log.warning("cannot save the applied revision: %s", exc)

    # --- connection state ----------------------------------------------------------

    def _connected(self) -> None:
        self.backoff.reset()
        self.link.set(
            "connected",
            logging.INFO,
            "connected to the control plane as node %s",
            self.state.node_name,
        )

    def _slow(self) -> float:
        return steady(self.interval).delay(0, self._rng)

    def _failed(self, exc: ClientError) -> None:
        node = self.state.node_name
        if isinstance(exc, UnauthenticatedError) and exc.details.get("reason") == "node_deleted":
            _log.error(
                "node %s was removed from the cluster (otherix node delete); this agent stops "
                "and will not retry. To join again: on an admin's machine run 'otherix node "
                "join-token create', then here 'otherix-agent bootstrap --force --server URL "
                "--join-token TOKEN --node-name %s' and start 'otherix-agent serve' again",
                node,
                node,
            )
            raise NodeRemoved(node) from exc
        if isinstance(exc, UnauthenticatedError):
            self.link.set(
                "unauthorized",
                logging.ERROR,
                "the control plane rejects this node's credential (%s): node %s may have "
                "been deleted; to enrol again run 'otherix-agent bootstrap --force'. "
                "Retrying every ~%.0fs",
                exc.message,
                node,
                self.interval,
            )
            self._clock.sleep(self._slow())
        elif isinstance(exc, ApiError) and exc.details.get("reason") == "node_gone":
            self.link.set(
                "gone",
                logging.WARNING,
                "node %s is gone; waiting for an operator to run 'otherix node readmit %s'. "
                "Retrying every ~%.0fs",
                node,
                node,
                self.interval,
            )
            self._clock.sleep(self._slow())
        elif is_retryable(exc):
            self.link.set(
                "unreachable",
                logging.WARNING,
                "control plane unreachable (%s); retrying with backoff (at most %.0fs apart)",
                exc,
                self.backoff.cap,
            )
            self._clock.sleep(self.backoff.next())
        else:
            code = exc.code if isinstance(exc, ApiError) else None
            self.link.set(
                f"rejected:{code}",
                logging.ERROR,
                "the control plane rejected the request (%s); retrying every ~%.0fs",
                exc,
                self.interval,
            )
            self._clock.sleep(self._slow())
