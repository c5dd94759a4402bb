"""Connection-state logging for the agent's loop.

The pacing of its retries is ``otherix.retry`` (the one retry policy of the
agent, the client and the CLI): ``agent_backoff`` is exponential backoff with
full jitter, the n-th consecutive failure waiting a uniform random time in
``[0, min(cap, initial * 2**n)]``, so many agents losing the same control plane
spread their retries instead of arriving together when it is back.

``Link`` remembers what the loop last knew about its control plane
(``connected``, ``unreachable``, ``unauthorized``, ``gone``, ``rejected``) and
logs only when that changes, so an outage is one warning and one "connected
again", not a line per retry.

Used by ``otherix.agent.daemon`` only.
"""

from __future__ import annotations

import logging

__all__ = ["Link"]


class Link:
    """The control-plane connection state, logged once per change."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self.state = "starting"

    def set(self, state: str, level: int, message: str, *args: object) -> bool:
        """Move to ``state``; log ``message`` only if that is a change. True if it was."""
        if state == self.state:
            return False
        self.state = state
        self._log.log(level, message, *args)
        return True
