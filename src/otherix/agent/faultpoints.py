"""Named pause points for the fault tests (``tests/faults/``): off unless configured.

Owns :class:`FaultPoints`. The composition root (``otherix.agent.main``) builds one
from ``debug.pause_at`` (point name -> seconds; empty by default, when a point is one
dict lookup that finds nothing) and hands it to the image cache's eviction
(``images.evict``) and to the scrub (``images.scrub``). At a configured point the agent
logs ``fault point`` with the point's name and details and then sleeps that long, so a
test that waits for that log line can ``kill -9`` the agent while it stands exactly
there. The work before and after a point is the production code path; nothing else
changes.

Points: ``evict.step`` (``image``, ``step``: ``start`` under the entry's lock before
anything is removed, then ``sidecar``, ``source`` and ``image`` after each removal);
``scrub.quarantine`` (``image``, ``step``: ``start`` under the lock, ``dir`` once its
directory is made, then ``sidecar``, ``image``, ``source`` after each move, ``report``
after ``scrub.json``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

__all__ = ["NO_FAULTS", "FaultPoints"]

_log = logging.getLogger(__name__)


class FaultPoints:
    """Where the agent pauses for a fault test (module docstring)."""

    def __init__(
        self,
        pauses: Mapping[str, float] | None = None,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._pauses = {k: float(v) for k, v in (pauses or {}).items() if v > 0}
        self._sleep = sleep

    def __call__(self, point: str, **detail: object) -> None:
        seconds = self._pauses.get(point)
        if seconds is None:
            return
        _log.warning("fault point", extra={"point": point, **detail})
        self._sleep(seconds)


#: the default: no point pauses
NO_FAULTS = FaultPoints()
