"""The eviction journal of a pool: what makes a cache eviction survive ``kill -9``.

Used by ``images.evict`` only. Without it an eviction cut short by a kill left an image
(or an image and its ``.source``) without a sidecar in ``images/``, an absent entry that
nothing would ever remove or report, and the evictions done before the kill were never
reported at all (they were kept in memory until the next heartbeat).

``{pool}/.otherix-evictions.json`` (written atomically, 0644)::

    {"pending": [eviction, ...], "done": [eviction, ...]}

where an eviction is ``Eviction.to_wire()``. An eviction is added to ``pending`` under
the entry's lock *before* its first file is removed, and moved to ``done`` (the newest
``KEEP``) after its last one went. When the agent starts again, the first eviction
pass of the pool (the report pass runs before any task can fetch an image) settles
``pending``: an entry still present with the recorded sha256 was never touched (the
kill came before its sidecar went) and is dropped from the journal; otherwise its
removal had begun and is finished (what is left of its files goes) and it counts as
done. A pool too full to take the journal's write is evicted without it (freeing
space matters most then), as before the journal. ``done`` is what the agent reports
as its recent evictions after a restart (the control plane logs each one once, so
repeating them is harmless).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Final

from otherix.agent import fs

__all__ = ["JOURNAL_NAME", "KEEP", "Journal"]

_log = logging.getLogger(__name__)

JOURNAL_NAME: Final = ".otherix-evictions.json"
KEEP: Final = 50
_KEYS: Final = ("image", "sha256", "size_bytes", "reason", "last_used_at", "evicted_at")


def _valid(item: Any) -> bool:
    return isinstance(item, dict) and all(k in item for k in _KEYS)


class Journal:
    """The journal of the pool at ``root`` (module docstring). Not thread-safe: the
    caller holds the pool's journal lock."""

    def __init__(self, root: Path) -> None:
        self.path = root / JOURNAL_NAME

    def read(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(pending, done); both empty when there is no journal or it is unreadable."""
        try:
            raw: Any = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return [], []
        except (OSError, ValueError) as exc:
            _log.warning("eviction journal unreadable", extra={"path": str(self.path),
                                                               "error": str(exc)})  # fmt: skip
            return [], []
        if not isinstance(raw, dict):
            return [], []
        pending = [p for p in raw.get("pending") or [] if _valid(p)]
        done = [d for d in raw.get("done") or [] if _valid(d)]
        return pending, done

    def _write(self, pending: list[dict[str, Any]], done: list[dict[str, Any]]) -> None:
        body = {"pending": pending, "done": done[-KEEP:]}
        fs.atomic_write(self.path, json.dumps(body).encode(), 0o644)

    def begin(self, eviction: dict[str, Any]) -> None:
        pending, done = self.read()
        self._write([*pending, eviction], done)

    def finish(self, eviction: dict[str, Any], *, evicted: bool = True) -> None:
        """Move ``eviction`` out of ``pending``: into ``done``, or (``evicted`` False:
        nothing was removed) nowhere."""
        pending, done = self.read()
        rest = [p for p in pending if p != eviction]
        self._write(rest, [*done, eviction] if evicted else done)
