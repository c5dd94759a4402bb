"""One retry vocabulary for the agent, the client and the CLI.

What may be retried is a type, not a status code compared at each call site:

- :class:`Retryable`: the same request may succeed later (nothing reached a
  server, 408/429, a 5xx other than 500, ``rate_limited``, ``request_timeout``,
  ``store_unavailable``);
- :class:`Permanent`: sending it again gets the same answer (every other
  4xx, and 500 ``internal``: a bug on the server does not go away by asking
  again).

Both are plain ``Exception`` markers, mixed into the error classes of
``otherix.errors`` (the server's tree) and ``otherix.client.errors`` (what the
client raises); :func:`is_retryable` is the one test.

How the tries are paced is one :class:`RetryPolicy` (a frozen dataclass:
``initial``, ``factor``, ``max``, ``jitter``, and when to give up: ``deadline``
or ``attempts``) and its running state :class:`Backoff`. The users:

- the agent's control-plane loop and task outbox (``agent.daemon``,
  ``agent.outbox``): :func:`agent_backoff`, 0.5 s doubling to 30 s, full jitter;
  the slow retry after a refusal: :func:`steady`, the heartbeat interval ±10 %;
- the agent's ``vm.create`` retries (``agent.vmtasks``): ``retry_delay``
  doubling, no jitter, ``vm_create_attempts`` tries;
- the CLI's ``--wait`` polls (``cli.wait``): :data:`CLI_POLL`, 0.1 s growing
  x1.5 to 2 s, no jitter, until the command's deadline;
- the client's failover (``client.base``) moves to the next URL only on a
  :class:`Retryable` transport failure, at once (no pacing: each URL is tried
  once per request).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Literal

__all__ = [
    "CLI_POLL",
    "FULL",
    "Backoff",
    "Permanent",
    "RetryPolicy",
    "Retryable",
    "agent_backoff",
    "is_retryable",
    "steady",
]


class Retryable(Exception):
    """Marker: the same request may succeed later."""


class Permanent(Exception):
    """Marker: the same request gets the same answer; retrying cannot help."""


def is_retryable(exc: BaseException) -> bool:
    """True for a :class:`Retryable` error; everything else is permanent."""
    return isinstance(exc, Retryable)


#: ``jitter=FULL``: each delay is uniform in ``[0, ceiling]`` (the AWS architecture
#: blog's "full jitter"), so many clients losing the same server spread their retries.
FULL: Literal["full"] = "full"


@dataclass(frozen=True)
class RetryPolicy:
    """Delays ``initial * factor**n`` capped at ``max`` (the n-th consecutive failure),
    with ``jitter``; give up after ``attempts`` tries or ``deadline`` seconds.

    ``jitter``: :data:`FULL`, or a fraction ``f`` that draws each delay uniform in
    ``[ceiling * (1 - f), ceiling * (1 + f)]`` (``0.0``: exact delays).
    ``attempts`` counts every try, the first included; None: no limit.
    ``deadline``: seconds from the first try; None: no limit.
    """

    initial: float
    factor: float = 2.0
    max: float = math.inf
    jitter: float | Literal["full"] = 0.0
    deadline: float | None = None
    attempts: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.initial <= self.max:
            raise ValueError("initial must be at least 0 and at most max")
        if self.factor < 1:
            raise ValueError("factor must be at least 1")
        if self.jitter != FULL and not 0 <= float(self.jitter) < 1:
            raise ValueError("jitter must be 'full' or a fraction in [0, 1)")

    def ceiling(self, failures: int) -> float:
        """The delay after ``failures`` consecutive failures, before jitter."""
        try:
            grown = self.initial * self.factor**failures
        except OverflowError:  # a float power overflows after ~1000 doublings
            grown = math.inf
        return float(min(self.max, grown))

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """The wait after ``failures`` consecutive failures, jitter drawn from ``rng``."""
        ceiling = self.ceiling(failures)
        if self.jitter == FULL:
            return (rng or random).uniform(0, ceiling)
        spread = float(self.jitter)
        if spread == 0:
            return ceiling
        return (rng or random).uniform(ceiling * (1 - spread), ceiling * (1 + spread))

    def exhausted(self, tries: int) -> bool:
        """True when ``tries`` tries have used up ``attempts``."""
        return self.attempts is not None and tries >= self.attempts

    def with_deadline(self, deadline: float | None) -> RetryPolicy:
        return replace(self, deadline=deadline)

    def remaining(self, started: float, now: float) -> float:
        """Seconds left of ``deadline`` for tries that began at ``started`` (inf: none)."""
        if self.deadline is None:
            return math.inf
        return started + self.deadline - now

    def backoff(self, rng: random.Random | None = None) -> Backoff:
        return Backoff(self, rng)


class Backoff:
    """The running state of one :class:`RetryPolicy`: the consecutive failures.

    ``next()`` counts one more failure and says how long to wait; ``reset()``
    after any success.
    """

    def __init__(self, policy: RetryPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not crypto
        self.failures = 0

    @property
    def cap(self) -> float:
        """The longest wait the policy allows (before jitter)."""
        return self.policy.max

    def ceiling(self) -> float:
        """Upper bound (before jitter) of the next delay."""
        return self.policy.ceiling(self.failures)

    def next(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        delay = self.policy.delay(self.failures, self._rng)
        self.failures += 1
        return delay

    def reset(self) -> None:
        self.failures = 0


def agent_backoff(initial: float = 0.5, cap: float = 30.0) -> RetryPolicy:
    """The agent's pacing after a :class:`Retryable` failure: ``initial`` doubling to
    ``cap``, full jitter, forever (``control_plane.backoff_initial``/``backoff_max``)."""
    return RetryPolicy(initial=initial, factor=2.0, max=cap, jitter=FULL)


def steady(interval: float, jitter: float = 0.1) -> RetryPolicy:
    """A fixed ``interval`` ± ``jitter`` (the agent's slow retry after a refusal)."""
    return RetryPolicy(initial=interval, factor=1.0, max=interval, jitter=jitter)


#: The CLI's ``--wait`` polls: at once, then 0.1 s growing x1.5 up to 2 s, no jitter;
#: the deadline is the command's (``with_deadline``).
CLI_POLL = RetryPolicy(initial=0.1, factor=1.5, max=2.0)
