"""Polling for ``--wait``: fetch until done, with backoff and a deadline.

Owns the one poll loop the CLI uses (``pool create --wait`` polls the new
pool, ``pool scan --wait`` polls the task). The first poll happens at once;
the interval then starts at 0.1 s and grows x1.5 up to 2 s
(``otherix.retry.CLI_POLL``, the one retry policy).

Choice where docs/pool-contract.md differs from the reference: the reference polls every fixed 2 s
(docs/pool-contract.md §11.3). A short first interval lets ``--wait`` return well under a second
when the agent is quick, while the 2 s cap keeps a long wait as cheap as the
reference's. The deadline (60 s for pool create) is unchanged.

Sleep and clock come from the :class:`~otherix.cli.context.CliContext`, so
tests can run it without real time passing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from otherix.retry import CLI_POLL, RetryPolicy

__all__ = ["FIRST_INTERVAL", "MAX_INTERVAL", "Outcome", "poll"]

T = TypeVar("T")

FIRST_INTERVAL = CLI_POLL.initial
MAX_INTERVAL = CLI_POLL.max


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """The last value fetched, and whether ``done`` accepted it in time."""

    value: T
    done: bool


def poll(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float,
    sleep: Callable[[float], None],
    monotonic: Callable[[], float],
    policy: RetryPolicy = CLI_POLL,
) -> Outcome[T]:
    """Call ``fetch`` until ``done(value)`` or ``timeout`` seconds have passed.

    Errors from ``fetch`` propagate (a failed GET ends the wait). Never
    sleeps past the deadline; a last fetch is made at the deadline. The
    pacing is ``policy`` (``otherix.retry.CLI_POLL``), its deadline ``timeout``.
    """
    policy = policy.with_deadline(timeout)
    started = monotonic()
    backoff = policy.backoff()
    while True:
        value = fetch()
        if done(value):
            return Outcome(value, True)
        remaining = policy.remaining(started, monotonic())
        if remaining <= 0:
            return Outcome(value, False)
        sleep(min(backoff.next(), remaining))
