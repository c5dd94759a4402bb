"""Logins that cannot starve the server: failed-login windows and the bounded
password-hash queue.

Owned here, used by ``AuthService.login`` (one :class:`LoginGuard` per
process, on ``Deps.logins``):

- **Windows** (one minute, sliding): failed logins per username and client
  (``auth.login_rate_per_minute``), per client address
  (``auth.login_rate_per_client_per_minute``, every username together) and per
  username (``auth.login_rate_per_user_per_minute``, every client together).
  An attempt counts as failed from the moment it is admitted, and the check
  and the count are one step under a lock, so parallel guesses cannot all pass
  the check first; an attempt the hash queue refused counts too (a flood that
  overfills the queue fills its own window and is then refused before any
  work). A success clears its username+client window (as before) and takes
  back its own entry from the other two.
- **Hash queue**: argon2 verification runs in a thread of its own (never on
  the event loop, never in the shared worker pool), at most
  ``auth.password_hash_concurrency`` at a time (default: the cores this
  process may use, less one, at least one) with at most
  ``auth.password_hash_queue`` waiting on the event loop; one more is refused
  at once with ``429 rate_limited`` and a ``Retry-After`` estimated from the
  measured hash time. One client address holds at most
  ``auth.login_in_flight_per_client`` places in it (running or waiting), so
  one client cannot fill the queue for everyone. The hash thread runs ``HASH_NICE`` nicer than the
  server (Linux), and argon2's lanes inherit that, so request handling wins
  the CPU whenever both want it. A flood costs a bounded share of the CPU and
  at most ``concurrency`` hash threads, whatever its size.

The windows live in this process's memory: with several replicas each counts
its own share (documented in ``docs/configuration.md``). Keys whose window is
empty are swept every few thousand attempts, so memory follows the admitted
rate, never the number of names tried.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from otherix.errors import RateLimited

T = TypeVar("T")

WINDOW = 60.0
#: how much nicer (lower CPU priority) a password-hash thread runs than the server
HASH_NICE = 10
_SWEEP_EVERY = 4096
WINDOW_MESSAGES = {
    "user_client": "too many failed login attempts; retry in a minute",
    "client": "too many failed login attempts from this address; retry in a minute",
    "user": "too many failed login attempts for this user; retry in a minute",
}


def default_concurrency() -> int:
    """The cores this process may run on, less one for everything else (at least one)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


@dataclass(frozen=True)
class Attempt:
    """One admitted login: the window keys it was counted under, and when."""

    keys: tuple[tuple[str, str], ...]  # (window kind, key)
    at: float


class LoginGuard:
    def __init__(
        self,
        *,
        per_user_client: int,
        per_client: int,
        per_user: int,
        concurrency: int,
        queue: int,
        in_flight_per_client: int = 2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = {"user_client": per_user_client, "client": per_client, "user": per_user}
        self.concurrency = concurrency or default_concurrency()
        self.queue = queue
        self.in_flight_per_client = in_flight_per_client
        self._client_in_flight: dict[str, int] = {}
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], deque[float]] = {}
        self._takes = 0
        self._inflight = 0
        self._hash_seconds = 0.25  # running estimate of one verification (for Retry-After)
        self._slots = asyncio.Semaphore(self.concurrency)  # binds to the loop at first use

    # windows ------------------------------------------------------------------------

    def admit(self, username: str, client: str) -> Attempt:
        """Count one attempt, or raise ``RateLimited`` naming the window that is full."""
        name = username.lower()
        keys = (("user_client", f"{name}|{client}"), ("client", client), ("user", name))
        now = self._clock()
        with self._lock:
            self._takes += 1
            if self._takes % _SWEEP_EVERY == 0:
                self._sweep(now)
            for key in keys:
                window = self._window(key, now)
                if len(window) >= self.limits[key[0]]:
                    raise RateLimited(WINDOW_MESSAGES[key[0]], {"retry_after_seconds": 60})
            for key in keys:
                self._windows[key].append(now)
        return Attempt(keys, now)

    def succeeded(self, attempt: Attempt) -> None:
        """A right password: its username+client window is cleared, its own
        entry leaves the other two."""
        with self._lock:
            for key in attempt.keys:
                if key[0] == "user_client":
                    self._windows.pop(key, None)
                else:
                    self._take_back(key, attempt.at)

    def refund(self, attempt: Attempt) -> None:
        """The attempt taught its sender nothing (the store failed, or the
        request went away before the answer)."""
        with self._lock:
            for key in attempt.keys:
                self._take_back(key, attempt.at)

    def _window(self, key: tuple[str, str], now: float) -> deque[float]:
        window = self._windows.setdefault(key, deque())
        while window and window[0] <= now - WINDOW:
            window.popleft()
        return window

    def _take_back(self, key: tuple[str, str], at: float) -> None:
        window = self._windows.get(key)
        if window is not None:
            with contextlib.suppress(ValueError):  # already out of the window
                window.remove(at)

    def _sweep(self, now: float) -> None:
        stale = [k for k, w in self._windows.items() if not w or w[-1] <= now - WINDOW]
        for key in stale:
            del self._windows[key]

    def client_blocked(self, client: str) -> bool:
        """True when the client's window is full: every login from it is refused now."""
        with self._lock:
            window = self._windows.get(("client", client))
            if window is None:
                return False
            return len(self._window(("client", client), self._clock())) >= self.limits["client"]

    def tracked_keys(self) -> int:
        with self._lock:
            return len(self._windows)

    # hash queue ---------------------------------------------------------------------

    async def run_hash(self, work: Callable[[], T], client: str = "-") -> T:
        """Run ``work`` (a password verification) in a thread of its own at a
        lower CPU priority, at most ``concurrency`` at once, or raise
        ``RateLimited`` when the queue is full. A slot is held until the thread
        finishes, even when the request goes away first (a flood of dropped
        connections cannot start more hashes than ``concurrency``)."""
        with self._lock:
            mine = self._client_in_flight.get(client, 0)
            if mine >= self.in_flight_per_client:
                raise RateLimited(
                    "too many logins in progress from this address; retry shortly",
                    {"retry_after_seconds": 1, "reason": "login_client_busy"},
                )
            if self._inflight >= self.concurrency + self.queue:
                waiting = self._inflight - self.concurrency + 1
                retry = max(1, math.ceil(waiting * self._hash_seconds / self.concurrency))
                raise RateLimited(
                    "the server is busy checking passwords; retry shortly",
                    {"retry_after_seconds": retry, "reason": "login_queue_full"},
                )
            self._inflight += 1
            self._client_in_flight[client] = mine + 1
        try:
            await self._slots.acquire()
        except BaseException:
            self._leave(client)
            raise
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[T] = loop.create_future()

        def finish(result: T | None, exc: BaseException | None) -> None:  # in the loop
            self._slots.release()
            self._leave(client)
            if outcome.done():
                return  # the request went away meanwhile
            if exc is not None:
                outcome.set_exception(exc)
            else:
                outcome.set_result(result)  # type: ignore[arg-type]

        def run() -> None:  # in the hash thread
            _lower_priority()
            try:
                result, exc = self._timed(work), None
            except BaseException as err:
                result, exc = None, err
            with contextlib.suppress(RuntimeError):  # the loop closed (shutdown)
                loop.call_soon_threadsafe(finish, result, exc)

        threading.Thread(target=run, name="otherix-password-hash", daemon=True).start()
        return await outcome

    def _leave(self, client: str) -> None:
        with self._lock:
            self._inflight -= 1
            left = self._client_in_flight.pop(client, 1) - 1
            if left > 0:
                self._client_in_flight[client] = left

    def _timed(self, work: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return work()
        finally:
            took = time.perf_counter() - started
            with self._lock:
                self._hash_seconds = 0.8 * self._hash_seconds + 0.2 * took


def _lower_priority() -> None:
    """This thread (and the lanes argon2 starts from it, which inherit it) at
    ``HASH_NICE`` more than the process, so request handling wins the CPU."""
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + HASH_NICE))
    except (AttributeError, OSError):  # not Linux: same priority as the rest
        pass
