"""Log output of ``otherix-agent``: one line per record on stderr.

Called once by the composition root (``otherix.agent.main``). Lines look like
``2026-01-01T10:00:00+0000 WARNING otherix.agent.pools: pool reconcile failed
pool=x error="..."``: fields passed through ``extra=`` (the pool reconciler
uses them) are appended as ``key=value`` so they are not lost.
"""

from __future__ import annotations

import json
import logging
from typing import Final

__all__ = ["KeyValueFormatter", "setup_logging"]

# Attributes every LogRecord has; anything else came from ``extra=``.
_STANDARD: Final = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


def _value(v: object) -> str:
    text = str(v)
    if text and all(c.isalnum() or c in "-_./:@" for c in text):
        return text
    return json.dumps(text, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S%z")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [
            f"{k}={_value(v)}" for k, v in vars(record).items() if k not in _STANDARD and v != ""
        ]
        if not extras:
            return line
        head, sep, tail = line.partition("\n")  # keep a traceback below the fields
        return f"{head} {' '.join(extras)}{sep}{tail}"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request at INFO; that is one line per heartbeat.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
