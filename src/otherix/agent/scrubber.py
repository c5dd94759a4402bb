"""The agent's cache scrubber: one background thread, one pool at a time.

Owns :class:`Scrubber`. The composition root (``otherix.agent.main``) builds one per
process over the image cache's lock table, the pool state (``report.PoolState``, which
says which pools are ready, where, and with what ``config.scrub``) and the task outbox.
The scrub itself is ``images.scrub``; the schedule and the rate ``domain.scrub``.

- **Schedule**: every ``tick`` seconds (60) the thread looks for a ready pool whose
  ``scrub.interval`` has passed since its last completed scrub and scrubs it at its
  ``scrub.max_bytes_per_second``. A ``storage_pool.scrub`` task (``submit``) runs next,
  ahead of the schedule, and reports ``{bytes_done, bytes_total}`` as it goes through
  the outbox; its result is ``{entries, bytes, quarantined: [...]}``. A task cancelled
  on the control plane leaves the node's desired state (``forget``): if it has not
  started it never runs, if it runs it stops at its next chunk (its pacing sleep is
  woken at once), leaving the schedule as it was, and reports nothing more.
- **State**: the last completion and the rate it ran at are kept in memory and in
  ``{pool}/.otherix-scrub.json`` (written atomically when a scrub completes), so a
  restarted agent keeps the schedule. A scrub cut short (kill -9) leaves the previous
  completion in place and simply runs again when due. What sits in ``quarantine/`` is
  read from disk on every report (``images.quarantine.list_quarantine``), so nothing a
  killed scrub moved goes unreported, and a move it cut short is finished the first
  time the thread sees the pool after a start (``images.quarantine.settle``).
- **Report** (``report``): ``{last_completed_at, bytes_per_second, quarantined,
  running}``, carried by the pool's heartbeat report as ``scrub``.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from otherix.agent import fs
from otherix.agent.faultpoints import NO_FAULTS, FaultPoints
from otherix.agent.images import quarantine
from otherix.agent.images import scrub as scrubbing
from otherix.agent.images.locks import KeyedLocks
from otherix.agent.outbox import TaskOutbox
from otherix.agent.pools import PoolUnknownError
from otherix.domain.scrub import ScrubConfigError, ScrubPolicy, parse_scrub_config, scrub_due
from otherix.models.heartbeat import AgentTask, TaskUpdate

__all__ = ["SCRUB", "STATE_NAME", "ScrubPools", "Scrubber"]

_log = logging.getLogger(__name__)

SCRUB: Final = "storage_pool.scrub"
STATE_NAME: Final = ".otherix-scrub.json"


class ScrubPools(Protocol):
    """What the scrubber needs of the pool state (``report.PoolState`` has it)."""

    def resolve(self, name: str, declared_path: str | None) -> Path: ...

    def scrub_targets(self) -> Sequence[tuple[str, Path, Mapping[str, Any]]]: ...


@dataclass
class _Status:
    last_completed_at: float | None = None
    bytes_per_second: float | None = None
    running: tuple[int, int] | None = None
    last_progress: tuple[int, int] = (0, 0)


def _policy(name: str, config: Mapping[str, Any]) -> ScrubPolicy | None:
    try:
        return parse_scrub_config(config)
    except ScrubConfigError as exc:
        _log.warning("scrub config ignored", extra={"pool": name, "error": str(exc)})
        return None


def _stamp(ts: float | None) -> str | None:
    return None if ts is None else quarantine.rfc3339(ts)


class Scrubber:
    """Scrubs pools' image caches in a thread of its own (module docstring)."""

    def __init__(
        self,
        *,
        locks: KeyedLocks,
        pools: ScrubPools,
        outbox: TaskOutbox | None = None,
        tick: float = 60.0,
        now: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
        faults: FaultPoints = NO_FAULTS,
    ) -> None:
        self._locks = locks
        self._faults = faults
        self._pools = pools
        self._outbox = outbox
        self._tick = tick
        self._now = now
        self._monotonic = monotonic
        self._stop = threading.Event()
        #: set: the scrub running now stops (its task was cancelled, or the agent stops)
        self._cancel = threading.Event()
        self._current: str | None = None  # the task id of the scrub running now
        self._sleep = sleep or self._cancel.wait
        self._lock = threading.Lock()
        self._status: dict[str, _Status] = {}  # by host root
        self._queue: queue.SimpleQueue[AgentTask | None] = queue.SimpleQueue()
        self._seen: set[str] = set()
        self._settled: set[str] = set()  # host roots whose quarantine/ was settled
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the daemon's side -------------------------------------------------------------

    @staticmethod
    def handles(task_type: str) -> bool:
        return task_type == SCRUB

    def submit(self, task: AgentTask) -> None:
        """Run a ``storage_pool.scrub`` task next (once per task id)."""
        with self._lock:
            if task.id in self._seen:
                return
            self._seen.add(task.id)
        self._queue.put(task)

    def forget(self, keep: set[str]) -> None:
        """``keep``: the task ids in the desired state. A task that left it was cancelled
        (or is final): not run if it has not started, stopped at its next chunk if it
        runs."""
        with self._lock:
            self._seen &= keep
            if self._current is not None and self._current not in keep:
                _log.info("scrub task cancelled; stopping", extra={"task": self._current})
                self._cancel.set()

    def take_changed(self) -> bool:
        """True (once) when a scrub started, progressed past a report, or ended."""
        changed = self._changed.is_set()
        self._changed.clear()
        return changed

    def report(self, root: Path | str) -> dict[str, object]:
        """The pool's ``scrub`` report (module docstring)."""
        status = self._state(Path(root))
        with self._lock:
            running = status.running
            last, rate = status.last_completed_at, status.bytes_per_second
        return {
            "last_completed_at": _stamp(last),
            "bytes_per_second": rate,
            "quarantined": [q.to_wire() for q in scrubbing.list_quarantine(Path(root))],
            "running": None
            if running is None
            else {"bytes_done": running[0], "bytes_total": running[1]},
        }

    # -- the work ----------------------------------------------------------------------

    def _state(self, root: Path) -> _Status:
        key = str(root)
        with self._lock:
            status = self._status.get(key)
        if status is not None:
            return status
        status = _Status()
        try:
            raw: Any = json.loads((root / STATE_NAME).read_bytes())
            last, rate = raw.get("last_completed_at"), raw.get("bytes_per_second")
            if isinstance(last, int | float) and not isinstance(last, bool):
                status.last_completed_at = float(last)
            if isinstance(rate, int | float) and not isinstance(rate, bool):
                status.bytes_per_second = float(rate)
        except (OSError, ValueError, AttributeError):
            pass
        with self._lock:
            return self._status.setdefault(key, status)

    def run(
        self,
        root: Path,
        policy: ScrubPolicy,
        progress: Callable[[int, int], None] | None = None,
    ) -> scrubbing.ScrubResult:
        """Scrub the pool at ``root`` now, in this thread; record its completion."""
        status = self._state(root)
        started = self._monotonic()

        def seen(done: int, total: int) -> None:
            with self._lock:
                first = status.running is None
                status.running = status.last_progress = (done, total)
            if first:
                self._changed.set()
            if progress is not None:
                progress(done, total)

        try:
            result = scrubbing.scrub(
                root,
                locks=self._locks,
                max_bytes_per_second=policy.max_bytes_per_second,
                progress=seen,
                stop=lambda: self._stop.is_set() or self._cancel.is_set(),
                clock=self._monotonic,
                sleep=self._sleep,
                now=self._now,
                faults=self._faults,
            )
        finally:
            with self._lock:
                status.running = None
            self._changed.set()
        if not result.completed:
            with self._lock:
                done = status.last_progress
            _log.info(
                "scrub stopped before the end",
                extra={"pool": str(root), "bytes_done": done[0], "bytes_total": done[1]},
            )
        if result.completed:
            elapsed = self._monotonic() - started
            with self._lock:
                status.last_completed_at = self._now()
                status.bytes_per_second = round(result.bytes / elapsed, 1) if elapsed > 0 else None
                state = {
                    "last_completed_at": status.last_completed_at,
                    "bytes_per_second": status.bytes_per_second,
                }
            try:
                fs.atomic_write(root / STATE_NAME, json.dumps(state).encode(), 0o644)
            except OSError as exc:
                _log.warning("scrub state not saved", extra={"pool": str(root), "error": str(exc)})
        return result

    def run_task(self, task: AgentTask) -> TaskUpdate:
        """Run one ``storage_pool.scrub`` task; its outcome (progress goes to the outbox)."""
        name = task.args.get("pool")
        if not isinstance(name, str) or not name:
            return _failed("validation_failed", "scrub task has no pool name")
        try:
            root = self._pools.resolve(name, None)
        except PoolUnknownError as exc:
            return _failed("not_found", str(exc), pool=name)
        config = {n.lower(): c for n, _, c in self._pools.scrub_targets()}.get(name.lower(), {})
        policy = _policy(name, config) or ScrubPolicy()

        def progress(done: int, total: int) -> None:
            if self._outbox is not None:
                percent = min(99, done * 100 // total) if total else 0
                result = {"bytes_done": done, "bytes_total": total}
                self._outbox.progress(
                    task.id, TaskUpdate(status="running", progress=percent, result=result)
                )

        result = self.run(root, policy, progress)
        if not result.completed:
            return _failed("cancelled", "the agent stopped before the scrub ended", pool=name)
        return TaskUpdate(status="success", progress=100, result=result.to_wire())

    def _due(self) -> tuple[Path, ScrubPolicy] | None:
        for name, root, config in self._pools.scrub_targets():
            if str(root) not in self._settled:  # a move cut short by a kill, finished now
                quarantine.settle(root, locks=self._locks)
                self._settled.add(str(root))
            policy = _policy(name, config)
            if policy is None:
                continue
            status = self._state(root)
            with self._lock:
                last = status.last_completed_at
            if scrub_due(policy, last, self._now()):
                return root, policy
        return None

    def step(self, timeout: float) -> None:
        """Run the next task, or (none within ``timeout``) the next due scheduled scrub."""
        try:
            task = self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            task = None
        if self._stop.is_set():
            return
        if task is not None:
            with self._lock:
                if task.id not in self._seen:
                    return  # cancelled before it ran
                self._current = task.id
                self._cancel.clear()
            try:
                update = self.run_task(task)
            finally:
                with self._lock:
                    self._current = None
                    cancelled = task.id not in self._seen
            if self._outbox is not None and not self._stop.is_set() and not cancelled:
                self._outbox.finish(task.id, update)
            return
        due = self._due()
        if due is not None:
            with self._lock:
                self._cancel.clear()
            self.run(*due)

    # -- the thread --------------------------------------------------------------------

    def start(self) -> Scrubber:
        self._thread = threading.Thread(target=self._loop, name="cache-scrub", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step(self._tick)
            except Exception:  # a bug must not end scrubbing for good
                _log.exception("scrub failed; continuing")
                self._stop.wait(self._tick)

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._cancel.set()
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)


def _failed(code: str, message: str, **details: object) -> TaskUpdate:
    return TaskUpdate(status="failed", error={"code": code, "message": message, "details": details})
