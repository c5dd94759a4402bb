"""Secrets out of stored answers: :func:`withhold` (pure, table-tested).

Used by ``otherix.api.idempotency`` before it stores an answer for
Idempotency-Key replays: the database must never hold a secret in the clear.
A secret is a string that looks like one of the control plane's opaque tokens
(``otx`` + kind + ``_`` + at least 32 URL-safe characters, as
``api.services.secrets.new_token`` makes them: API tokens ``otx_``, join
tokens ``otxj_``, node credentials ``otxn_``, ...) or any string under a field
named like a secret (``token``, ``credential``, ...), whatever its form.
"""

from __future__ import annotations

import json
import re
from typing import Any

SECRET_VALUE = re.compile(r"^otx[a-z]*_[A-Za-z0-9_-]{32,}$")
SECRET_FIELDS = frozenset(
    {
        "token",
        "credential",
        "secret",
        "password",
        "join_token",
        "rejoin_token",
        "reenrol_token",
        "access_token",
        "refresh_token",
    }
)


def withhold(body: bytes, content_type: str) -> tuple[bytes, list[str]]:
    """The body with every secret replaced by null, and the fields that held one."""
    if "json" not in content_type or not body:
        return body, []
    try:
        doc = json.loads(body)
    except ValueError:
        return body, []
    found: list[str] = []

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for name, value in node.items():
                where = f"{path}.{name}" if path else str(name)
                if isinstance(value, str) and (name in SECRET_FIELDS or SECRET_VALUE.match(value)):
                    found.append(where)
                    out[name] = None
                else:
                    out[name] = walk(value, where)
            return out
        if isinstance(node, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(node)]
        if isinstance(node, str) and SECRET_VALUE.match(node):
            found.append(path or "$")
            return None
        return node

    cleaned = walk(doc, "")
    return (json.dumps(cleaned).encode() if found else body), found
