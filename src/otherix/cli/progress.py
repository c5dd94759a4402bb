"""Live progress for ``--wait``: the in-place status line, transfer rates, task following.

Owns what the CLI shows while it waits on a task (``vm create --wait``, ``vm
delete --wait``, ``task wait``) and the loop that follows a task to its end:

- :func:`live_output` decides whether progress is shown at all: only when
  stdout and stderr are both terminals. Piped or redirected, the commands
  stay quiet and print only the final result (an explicitly set
  ``CliContext.is_tty``, as tests and embedders do, decides instead).
- :class:`StatusLine` writes one line on stderr and rewrites it in place
  with ``\\r`` (padded over the previous text, cut to the terminal width);
  :meth:`StatusLine.note` prints a lasting line above it, shown in both modes.
- :class:`RateMeter` turns the ``bytes_done`` samples of a running task into
  a rate over the last few seconds; :func:`task_line` renders
  ``downloading ubuntu.img  312.0MiB / 612.0MiB  48.2MiB/s`` from a task's
  ``progress`` and ``result {bytes_done, bytes_total, phase}``.
- :func:`follow_task` polls ``GET /v1/tasks/{id}`` (the backoff of
  ``otherix.cli.wait``) until the task is ``success``, ``failed`` or
  ``cancelled``, or the deadline passes; :func:`follow_pool_task` follows a
  pool command's task (``pool scrub``, ``pool cache prune``, ``pool cache
  quarantine clear``, ``pool doctor --purge``) and turns a task still running
  or not successful into a ``CliError``.
- :func:`wait_vm_ready` follows a new VM (``vm create --wait``): it polls
  the VM until it is placed, printing each new pending ``status.reason``
  once (in both modes: it says why nothing moves); finds its ``vm.create``
  task on ``status.task_id`` (else ``GET /v1/tasks?resource_id=<vm
  id>&type=vm.create``); follows the task; reads the VM's final phase.

Clock and sleep come from the :class:`~otherix.cli.context.CliContext`, so
tests drive it with a fake clock. Called by ``commands.vms``,
``commands.tasks`` and the pool commands (``follow_pool_task``).
"""

from __future__ import annotations

import shutil
import sys
from collections import deque
from collections.abc import Mapping
from typing import Any

from otherix.cli.context import CliContext, CliError
from otherix.cli.errors import usage_error
from otherix.cli.output import human_bytes, wire
from otherix.cli.views.vms import failure_reason, phase_text
from otherix.cli.wait import Outcome, poll
from otherix.client.api import ApiClient
from otherix.client.errors import NotFoundError
from otherix.domain.vms import image_basename
from otherix.durations import format_duration, parse_duration

__all__ = [
    "FINAL",
    "RateMeter",
    "StatusLine",
    "follow_pool_task",
    "follow_task",
    "live_output",
    "parse_timeout",
    "task_error",
    "task_line",
    "wait_vm_ready",
]

CREATE_TASK = "vm.create"
VmBody = dict[str, Any]

#: Task statuses that never change again.
FINAL = ("success", "failed", "cancelled")
#: How far back the transfer rate looks (seconds).
RATE_WINDOW = 5.0
#: The agent's phase names (``otherix.agent.vmtasks``) as the line reads them.
PHASE_WORDS = {"download": "downloading", "clone": "cloning"}


def live_output(ctx: CliContext) -> bool:
    """Whether to draw progress: ``ctx.is_tty`` when set, else both streams are terminals."""
    if ctx.is_tty is not None:
        return ctx.is_tty
    streams = (sys.stdout, sys.stderr)
    return all(s is not None and s.isatty() for s in streams)


def parse_timeout(flag: str, text: str) -> float:
    """Seconds in a ``--wait-timeout``/``--timeout`` value; a usage error (exit 2) if not
    a positive duration."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise usage_error(f"{flag}: {exc}") from exc
    if seconds <= 0:
        raise usage_error(f"{flag}: must be more than 0s")
    return seconds


class StatusLine:
    """One progress line on stderr, rewritten in place; silent unless ``live``."""

    def __init__(self, ctx: CliContext, live: bool) -> None:
        self._ctx = ctx
        self.live = live
        self._shown = ""

    def _width(self) -> int:
        return max(20, shutil.get_terminal_size((80, 24)).columns - 1)

    def show(self, text: str) -> None:
        """Replace the line with ``text`` (no-op when not live or unchanged)."""
        if not self.live:
            return
        text = text[: self._width()]
        if text == self._shown:
            return
        pad = " " * max(0, len(self._shown) - len(text))
        self._ctx.err(f"\r{text}{pad}")
        self._shown = text

    def clear(self) -> None:
        """Erase the line, leaving the cursor at the start of an empty line."""
        if self.live and self._shown:
            self._ctx.err("\r" + " " * len(self._shown) + "\r")
        self._shown = ""

    def note(self, text: str) -> None:
        """Print ``text`` as a lasting stderr line (in both modes), above the live line."""
        shown = self._shown
        self.clear()
        self._ctx.warn(text)
        if shown:
            self.show(shown)


class RateMeter:
    """Bytes per second over the last :data:`RATE_WINDOW` seconds of samples.

    A new ``key`` (the task's phase) or a count that went backwards starts
    over, so a download followed by a copy does not mix the two.
    """

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self._key = ""
        self._samples: deque[tuple[float, int]] = deque()

    def feed(self, now: float, done: int, key: str = "") -> float | None:
        """Record ``done`` bytes at ``now``; the rate, or None with one sample."""
        if key != self._key or (self._samples and done < self._samples[-1][1]):
            self._samples.clear()
            self._key = key
        self._samples.append((now, done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        if t1 <= t0:
            return None
        return (b1 - b0) / (t1 - t0)


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def task_line(task: Mapping[str, Any], label: str = "", rate: float | None = None) -> str:
    """The status line for a task that is not finished yet.

    Pending: ``queued <label>: waiting for the node's agent``. Running with
    byte counts: ``<phase> <label>  <done> / <total>  <rate>/s`` (total and
    rate left out while unknown); otherwise ``<phase> <label>  <progress>%``.
    The phase defaults to ``running``; the agent's ``download`` and ``clone``
    read ``downloading`` and ``cloning``.
    """
    head_label = f" {label}" if label else ""
    if task.get("status") == "pending":
        return f"queued{head_label}: waiting for the node's agent"
    result = task.get("result") or {}
    phase = str(result.get("phase") or "running")
    phase = PHASE_WORDS.get(phase, phase)
    done = _count(result.get("bytes_done"))
    if done is None:
        return f"{phase}{head_label}  {task.get('progress') or 0}%"
    text = f"{phase}{head_label}  {human_bytes(done)}"
    total = _count(result.get("bytes_total"))
    if total is not None:
        text += f" / {human_bytes(total)}"
    if rate is not None:
        text += f"  {human_bytes(int(max(rate, 0)))}/s"
    return text


def task_error(task: Mapping[str, Any]) -> str:
    """``<code>: <message>`` from a failed or cancelled task's ``error``."""
    error = task.get("error") or {}
    code = error.get("code") or ("cancelled" if task.get("status") == "cancelled" else "unknown")
    return f"{code}: {error.get('message') or 'no message'}"


def follow_task(
    ctx: CliContext,
    api: ApiClient,
    task_id: str,
    *,
    timeout: float,
    line: StatusLine,
    label: str = "",
) -> Outcome[dict[str, Any]]:
    """Poll the task until it is final or ``timeout`` passes, drawing ``line``.

    The line is left showing the last state; the caller clears it before
    printing the result. API errors (the task vanished, access lost)
    propagate.
    """
    meter = RateMeter()

    def fetch() -> dict[str, Any]:
        task = wire(api.get_task(task_id))
        if task.get("status") in FINAL:
            return task
        result = task.get("result") or {}
        done = _count(result.get("bytes_done"))
        rate = None
        if task.get("status") == "running" and done is not None:
            rate = meter.feed(ctx.monotonic(), done, str(result.get("phase") or ""))
        line.show(task_line(task, label, rate))
        return task

    return poll(
        fetch,
        lambda t: t.get("status") in FINAL,
        timeout=timeout,
        sleep=ctx.sleep,
        monotonic=ctx.monotonic,
    )


def follow_pool_task(
    ctx: CliContext, api: ApiClient, task_id: str, *, timeout: float, task: str, command: str
) -> dict[str, Any]:
    """Follow a pool command's task with the status line (shown on a terminal); the
    finished task. Still running after ``timeout``: ``CliError`` "``{task}`` task ID is
    still STATUS; follow it with 'otherix task wait ID'"; not a success: ``CliError``
    "``{command}`` failed: CODE: MESSAGE"."""
    line = StatusLine(ctx, live_output(ctx))
    try:
        outcome = follow_task(ctx, api, task_id, timeout=timeout, line=line)
    finally:
        line.clear()
    last = outcome.value
    if not outcome.done:
        raise CliError(
            f"{task} task {task_id} is still {last.get('status')}; follow it with "
            f"'otherix task wait {task_id}'"
        )
    if last.get("status") != "success":
        raise CliError(f"{command} failed: {task_error(last)}")
    return last


# following a new VM: placement, then its vm.create task ----------------------------------


def _phase(vm: VmBody) -> str:
    return str((vm.get("status") or {}).get("phase") or "")


def _task_of(api: ApiClient, vm: VmBody) -> str | None:
    """The VM's vm.create task: ``status.task_id``, else looked up once placed."""
    task_id = (vm.get("status") or {}).get("task_id")
    if task_id:
        return str(task_id)
    if not vm.get("node"):
        return None
    body = wire(api.list_tasks(resource_id=vm["id"], type=CREATE_TASK, limit=200))
    found = body.get("data") or []
    return str(found[-1]["id"]) if found else None


def _wait_placed(
    ctx: CliContext, api: ApiClient, name: str, timeout: float, line: StatusLine
) -> tuple[VmBody, str | None, bool]:
    """Poll until the VM has a task or left ``pending``: (vm, task id, in time)."""
    said = {"why": ""}

    def fetch() -> tuple[VmBody, str | None]:
        current = wire(api.get_vm(name))
        task_id = _task_of(api, current)
        if _phase(current) == "pending" and task_id is None:
            why = failure_reason(current)
            if why and why != said["why"]:
                line.note(f"vm {name} pending: {why}")
            said["why"] = why
            line.show(f"waiting for vm {name} to be placed")
        return current, task_id

    outcome = poll(
        fetch,
        lambda state: _phase(state[0]) != "pending" or state[1] is not None,
        timeout=timeout,
        sleep=ctx.sleep,
        monotonic=ctx.monotonic,
    )
    vm, task_id = outcome.value
    return vm, task_id, outcome.done


def wait_vm_ready(
    ctx: CliContext, api: ApiClient, vm: VmBody, timeout: float
) -> tuple[VmBody, str]:
    """Follow a new VM until its disk is ready: the last VM and an error (``""`` if stopped).

    Placement first (each new pending reason is noted once), then its
    ``vm.create`` task with the progress line, then the VM's final phase;
    ``timeout`` covers all three. A VM deleted meanwhile is a :class:`CliError`.
    """
    name = str(vm["name"])
    limit = format_duration(timeout)
    label = image_basename(str(vm.get("image_url") or "")) or ""
    line = StatusLine(ctx, live_output(ctx))
    deadline = ctx.monotonic() + timeout
    try:
        vm, task_id, placed = _wait_placed(ctx, api, name, timeout, line)
        if not placed:
            why = failure_reason(vm) or "no reason recorded yet"
            return vm, (
                f"vm {name} was not placed within {limit} (pending: {why}); the scheduler "
                f"keeps trying: check it with 'otherix vm get {name}'"
            )
        if task_id is not None and _phase(vm) in ("pending", "creating"):
            left = max(0.0, deadline - ctx.monotonic())
            outcome = follow_task(ctx, api, task_id, timeout=left, line=line, label=label)
            vm = wire(api.get_vm(name))
            if not outcome.done:
                task = outcome.value
                return vm, (
                    f"vm {name} is not ready after {limit}: task {task_id} is "
                    f"{task.get('status')} ({task.get('progress') or 0}%); it goes on in the "
                    f"background: follow it with 'otherix task wait {task_id}'"
                )
    except NotFoundError as exc:
        raise CliError(f"vm {name} was deleted while waiting") from exc
    finally:
        line.clear()
    if _phase(vm) == "stopped":
        return vm, ""
    if _phase(vm) == "error":
        return vm, f"vm {name} failed: {failure_reason(vm) or 'unknown'}"
    return vm, f"vm {name} did not become ready: phase {phase_text(vm)}"
