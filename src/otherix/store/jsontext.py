"""How the store's JSON columns are written and read (both backends).

Owns :class:`JsonText`, whose ``dumps`` and ``loads`` ``engine.create_engine``
hands to SQLAlchemy as ``json_serializer`` / ``json_deserializer`` for every
JSON and JSONB column. They write what ``json.dumps`` writes and read what
``json.loads`` reads, with one difference: a value holding an unpaired
surrogate is repaired (each one becomes U+FFFD, ``otherix.models.jsonrepair``)
and logged, on the way in and on the way out.

Nothing the API accepts can hold one any more (``otherix.api.inputguard``),
and migration ``0008`` (text repair) repairs the rows stored before, so this is the
last line: one bad value degrades to U+FFFD in the answers that show it
instead of failing every list, heartbeat and watch that holds it. Its cost is
a substring scan of each value's text. PostgreSQL hands values over as bytes;
JSONB cannot hold an unpaired surrogate, so those are parsed as they are.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from otherix.models.jsonrepair import may_hold_lone_surrogate, repair_value

log = logging.getLogger("otherix.store")

#: repairs logged one by one before the log falls to one line per thousand
_LOG_FIRST = 20


class JsonText:
    """One engine's JSON codec, with its own count of repaired values.

    ``engine.create_engine`` makes one per engine and hands :meth:`dumps` and
    :meth:`loads` to SQLAlchemy, so the count (what the log line reports)
    belongs to the database it was read from, not to the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen = 0

    def _note(self, direction: str, surrogates: int) -> None:
        with self._lock:
            self._seen += 1
            n = self._seen
        if n <= _LOG_FIRST or n % 1000 == 0:
            log.warning(
                "a JSON value %s the store held %d unpaired surrogate(s); replaced with "
                "U+FFFD (%d such value(s) since start; migration 0008 (text repair) "
                "repairs stored rows)",
                direction,
                surrogates,
                n,
            )

    def dumps(self, value: Any) -> str:
        text = json.dumps(value)
        if not may_hold_lone_surrogate(text):
            return text
        repaired, counts = repair_value(json.loads(text))
        if not counts.surrogates:
            return text
        self._note("written to", counts.surrogates)
        return json.dumps(repaired)

    def loads(self, data: str | bytes) -> Any:
        value = json.loads(data)
        if isinstance(data, bytes) or not may_hold_lone_surrogate(data):
            return value
        repaired, counts = repair_value(value)
        if counts.surrogates:
            self._note("read from", counts.surrogates)
        return repaired
