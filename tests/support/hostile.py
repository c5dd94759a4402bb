"""Hostile request bodies and the "every view still answers" check, for the API,
fuzz and security suites (strict input, issue 13).

- :func:`dumps` writes JSON the way a careless or hostile client does:
  ``json.dumps`` with ``ensure_ascii``, so a lone surrogate in a Python string
  goes out as the escape ``\\ud800`` (valid JSON syntax, invalid text).
- :func:`nested` builds a body whose nesting depth is exactly ``depth``.
- :func:`views` asks every list (pools, VMs, nodes, tasks, users) as admin and
  as a developer, and a node's heartbeat and watch, and returns the statuses:
  after any refused attempt they must all be 200.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from support.factories import heartbeat_body as heartbeat_body

LONE = "\ud800"
LISTS = ("/v1/storage-pools", "/v1/vms", "/v1/nodes", "/v1/tasks", "/v1/users")


def dumps(value: Any) -> bytes:
    """JSON with ``\\uXXXX`` escapes (a lone surrogate survives as its escape)."""
    return json.dumps(value).encode("ascii")


def nested(depth: int, around: str = "1") -> Any:
    """``depth`` arrays inside each other around ``around`` (a JSON text)."""
    return json.loads("[" * depth + around + "]" * depth) if depth < 900 else None


def nested_text(depth: int, around: str = "1") -> str:
    return "[" * depth + around + "]" * depth


def post_raw(
    client: httpx.Client, method: str, path: str, body: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    return client.request(
        method, path, content=body, headers={"content-type": "application/json", **(headers or {})}
    )


def views(url: str, tokens: dict[str, str], node_name: str, node_credential: str) -> dict[str, int]:
    """Status of every list (admin and developer), and the node's heartbeat and watch."""
    out: dict[str, int] = {}
    with httpx.Client(base_url=url, timeout=30) as c:
        for role in ("admin", "developer"):
            auth = {"Authorization": f"Bearer {tokens[role]}"}
            for path in LISTS:
                if role == "developer" and path == "/v1/users":
                    continue  # developers may not list users (403 is the answer, not a fault)
                out[f"{role} GET {path}"] = c.get(
                    path, headers=auth, params={"limit": 200}
                ).status_code
        auth = {"Authorization": f"Bearer {node_credential}"}
        r = c.post(f"/v1/nodes/{node_name}/heartbeat", json=heartbeat_body(), headers=auth)
        out["heartbeat"] = r.status_code
        r = c.get(
            f"/v1/nodes/{node_name}/watch", params={"revision": 0, "timeout": 0}, headers=auth
        )
        out["watch"] = r.status_code
    return out


def broken(statuses: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in statuses.items() if v != 200}
