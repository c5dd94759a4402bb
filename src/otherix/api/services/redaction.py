"""What a role may see of the hosts: the one redaction every view applies.

Called by ``services.vms`` (the VM view: disks, ``status.message`` and
``status.details``) and ``services.tasks`` (a task's ``result`` and ``error``,
in ``GET /v1/tasks/{id}``, task lists and the answer of a cancel), so that a
task never shows a role more than the object's own view does.

The rule: host layout (where things are on a node's filesystem) is for callers
with the full node view (``node:read`` scope ``full``: admin, operator).
Everyone else (developer, viewer) gets

- ``None`` for every mapping key in :data:`HOST_LAYOUT_KEYS`, at any depth (the
  key stays, as ``file_path: null`` in the VM view);
- ``<host path>`` for every absolute path inside a string (agent error
  messages quote paths, e.g. ``[Errno 28] No space left on device:
  '/var/lib/otherix/pools/p/vms/<id>/disk.qcow2'``); URLs keep their paths.
  This hides a pool's root in a message too, which the pool view shows: a
  message cannot tell a pool root from a disk path, so it hides both.

Pure: no I/O, table-tested in ``tests/api/test_api_redaction.py``.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from otherix.api.deps import Principal
from otherix.rbac import Permission, Scope

__all__ = ["HOST_LAYOUT_KEYS", "HOST_PATH", "redact", "redact_text", "shows_host_layout"]

T = TypeVar("T")

#: keys whose values are host layout, wherever they appear in agent-reported data
HOST_LAYOUT_KEYS = frozenset({"file_path"})
HOST_PATH = "<host path>"
# An absolute path: a "/" that starts a word (not inside a URL, "1/25" or "a/b"),
# up to whitespace, a quote or closing punctuation.
_PATH = re.compile(r"(?<![\w.:/~\-\]\)])/[^\s'\"`,;()\[\]{}<>]+")


def shows_host_layout(principal: Principal) -> bool:
    return principal.scope(Permission.NODE_READ) is Scope.FULL


def redact_text(text: str) -> str:
    return _PATH.sub(HOST_PATH, text)


def _redact(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: None if k in HOST_LAYOUT_KEYS else _redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def redact(principal: Principal, value: T) -> T:
    """``value`` as ``principal`` may see it (unchanged for the full node view)."""
    if value is None or shows_host_layout(principal):
        return value
    out: T = _redact(value)
    return out
