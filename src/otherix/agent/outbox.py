"""Task reports on their way to the control plane: progress coalesced, outcomes retried.

Owns :class:`TaskOutbox`. The VM task workers (``otherix.agent.vmtasks``)
hand it reports and never wait for the network; one sender thread posts them
with ``update_task`` (``POST /v1/nodes/{name}/tasks/{id}``), so a slow or
unreachable control plane never stalls a download, and the agent's main loop
(heartbeat, watch) never waits for either.

Rules, per task:

- ``progress(id, update)``: a ``running`` report. The newest replaces any
  unsent one, and running reports go out at most once per ``interval``
  (0.5 s: two a second), whatever rate the worker produces them at. One that
  fails is dropped: the next carries newer numbers.
- ``finish(id, update)``: the outcome (``success`` or ``failed``). It
  replaces unsent progress, and progress handed in after it is ignored. It
  is sent as soon as the sender is free. A failure that may pass (an
  ``otherix.retry.Retryable`` one: transport error, 408, 429, 5xx but 500; and
  401) is retried with exponential backoff and full jitter until accepted,
  without redoing the work. A 500 ``internal`` is permanent (a bug on the
  server: asking again at once gets the same answer), but an outcome is the
  only record of work done on this node, so it is kept and offered again at
  the backoff cap (``control_plane.backoff_max``) until a fixed server takes
  it or the task leaves the desired state. A refusal (404: the task was
  cancelled or is gone; other 4xx) drops it with a warning.
- ``forget(keep)``: tasks no longer in the desired state are dropped, unsent
  reports included (the control plane finalised them some other way).

``pump()`` sends whatever is due and says how long until the next report is;
the sender thread loops on it, unit tests call it with a stub client and a
fake clock.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from otherix.client.errors import ClientError, InternalServerError, UnauthenticatedError
from otherix.models.heartbeat import TaskUpdate
from otherix.retry import Backoff, agent_backoff, is_retryable

__all__ = ["TaskOutbox", "TaskReporter"]

_log = logging.getLogger(__name__)
_MIN_RETRY = 0.1


class TaskReporter(Protocol):
    def update_task(self, node: str, task_id: str, update: TaskUpdate) -> object: ...


@dataclass
class _Slot:
    backoff: Backoff
    progress: TaskUpdate | None = None
    final: TaskUpdate | None = None
    next_progress_at: float = 0.0
    retry_at: float = 0.0
    settled: bool = False  # the outcome was accepted or refused for good


def _retry_report(exc: ClientError) -> bool:
    return is_retryable(exc) or isinstance(exc, UnauthenticatedError)


class TaskOutbox:
    """Reports waiting to be posted, and the thread that posts them (module docstring)."""

    def __init__(
        self,
        reporter: TaskReporter,
        node: str,
        *,
        interval: float = 0.5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._reporter = reporter
        self._node = node
        self.interval = interval
        self._policy = agent_backoff(backoff_initial, backoff_max)
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self._slots: dict[str, _Slot] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- producers (worker threads) --------------------------------------------------

    def _slot(self, task_id: str) -> _Slot:
        slot = self._slots.get(task_id)
        if slot is None:
            slot = _Slot(self._policy.backoff(self._rng))
            self._slots[task_id] = slot
        return slot

    def progress(self, task_id: str, update: TaskUpdate) -> None:
        with self._cond:
            slot = self._slot(task_id)
            if slot.final is not None or slot.settled:
                return
            slot.progress = update
            self._cond.notify()

    def finish(self, task_id: str, update: TaskUpdate) -> None:
        with self._cond:
            slot = self._slot(task_id)
            if slot.settled:
                return
            slot.progress = None
            slot.final = update
            slot.retry_at = 0.0
            self._cond.notify()

    def forget(self, keep: Iterable[str]) -> None:
        keep = set(keep)
        with self._cond:
            for task_id in [t for t in self._slots if t not in keep]:
                del self._slots[task_id]

    # -- queries ---------------------------------------------------------------------

    def settled(self, task_id: str) -> bool:
        with self._cond:
            slot = self._slots.get(task_id)
            return slot is not None and slot.settled

    def idle(self) -> bool:
        """True when no report waits to be sent (tests, shutdown)."""
        with self._cond:
            return all(s.final is None and s.progress is None for s in self._slots.values())

    # -- sending ---------------------------------------------------------------------

    def _take(self, now: float, skip: set[str]) -> tuple[str, TaskUpdate] | None:
        for task_id, slot in self._slots.items():
            if task_id in skip:
                continue
            if slot.final is not None and slot.retry_at <= now:
                return task_id, slot.final
            if slot.progress is not None and slot.next_progress_at <= now:
                update, slot.progress = slot.progress, None
                slot.next_progress_at = now + self.interval
                return task_id, update
        return None

    def _wait(self, now: float) -> float | None:
        due = [
            s.retry_at if s.final is not None else s.next_progress_at
            for s in self._slots.values()
            if s.final is not None or s.progress is not None
        ]
        return max(0.0, min(due) - now) if due else None

    def pump(self) -> float | None:
        """Send every report due now, each task at most once; seconds until the next is due."""
        tried: set[str] = set()
        while True:
            with self._cond:
                now = self._clock()
                item = self._take(now, tried)
                if item is None:
                    return self._wait(now)
            task_id, update = item
            tried.add(task_id)
            try:
                self._reporter.update_task(self._node, task_id, update)
            except ClientError as exc:
                self._failed(task_id, update, exc)
            else:
                self._accepted(task_id, update)

    def _accepted(self, task_id: str, update: TaskUpdate) -> None:
        with self._cond:
            slot = self._slots.get(task_id)
            if slot is None:
                return
            if update.status != "running" and slot.final is update:
                slot.final, slot.settled = None, True
                _log.info("task reported", extra={"task": task_id, "status": update.status})

    def _failed(self, task_id: str, update: TaskUpdate, exc: ClientError) -> None:
        with self._cond:
            slot = self._slots.get(task_id)
            if slot is None or update.status == "running" or slot.final is not update:
                _log.debug("progress report failed", extra={"task": task_id, "error": str(exc)})
                return
            if _retry_report(exc):
                delay = max(slot.backoff.next(), _MIN_RETRY)
                slot.retry_at = self._clock() + delay
                _log.warning(
                    "task report failed; retrying in %.1fs",
                    delay,
                    extra={"task": task_id, "error": str(exc)},
                )
            elif isinstance(exc, InternalServerError):
                delay = max(slot.backoff.cap, _MIN_RETRY)
                slot.retry_at = self._clock() + delay
                _log.warning(
                    "task report hit a server error; keeping the outcome, offering it again"
                    " in %.1fs",
                    delay,
                    extra={"task": task_id, "error": str(exc)},
                )
            else:
                slot.final, slot.settled = None, True
                _log.warning(
                    "task report refused; dropping it", extra={"task": task_id, "error": str(exc)}
                )

    # -- the sender thread -----------------------------------------------------------

    def start(self) -> TaskOutbox:
        self._thread = threading.Thread(target=self._run, name="task-reports", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            try:
                self.pump()
            except Exception:  # a bug must not end the reports for good
                _log.exception("task report sender failed; continuing")
                self._cond_wait(1.0)
            with self._cond:
                if self._closed:
                    return
                # Re-read under the lock: a report handed in since pump() is not missed.
                wait = self._wait(self._clock())
                if wait is None or wait > 0:
                    self._cond.wait(wait)

    def _cond_wait(self, seconds: float) -> None:
        with self._cond:
            if not self._closed:
                self._cond.wait(seconds)

    def close(self, timeout: float = 2.0) -> None:
        """Try once more to send what is due (bounded by ``timeout``), then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
