"""The OpenAPI document with the error answers the API really gives.

FastAPI documents a 422 on every route with inputs, which this API never sends
(request validation answers 400 ``validation_failed``, see ``api.errors``), and
no other error. ``install`` replaces that: every operation lists the error
statuses it can answer, each with the one envelope ``{"error": {code,
message, details}}``:

- every operation: 500 and 503 (store unavailable); with inputs: 400;
- guarded operations: 401 (no, bad, expired or revoked credential) and 403
  (role lacks the permission; for agent routes, a node acting for another);
  public writes (login, refresh, join) take credentials in the body: 401;
- operations with a path parameter, or a filter naming another resource
  (``?node=``, ``?pool=``): 404;
- writes: 409 (conflicts, resource in use, Idempotency-Key mismatch);
- login: 429 (rate limited).

The fuzz suite (``tests/fuzz``) fails on any status the server sends that the
document does not list.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from otherix.api import guards

ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"

_ENVELOPE_SCHEMA: dict[str, Any] = {
    "title": "ErrorEnvelope",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "stable code, docs/error-codes.md"},
                "message": {"type": "string"},
                "details": {"type": "object", "additionalProperties": True},
            },
        }
    },
}

_DESCRIPTIONS = {
    400: "Invalid input (`validation_failed`, `invalid cursor`, `path_not_allowed`, ...)",
    401: "Missing, invalid, expired or revoked credentials",
    403: "The caller's role (or node credential) does not allow this",
    404: "A named resource does not exist (or is not visible to the caller)",
    409: "Conflict: exists already, in use, changed concurrently, Idempotency-Key mismatch",
    429: "Too many failed login attempts, or the password-check queue is full "
    "(`rate_limited`; `Retry-After` says when to retry)",
    500: "Internal error (logged with the request id)",
    503: "The database is unavailable; retry",
}
_WRITES = {"post", "put", "patch", "delete"}
_NAMING_FILTERS = {"node", "pool"}


def _guard(route: APIRoute) -> str:
    stack = list(route.dependant.dependencies)
    kinds = set()
    while stack:
        dep = stack.pop()
        if dep.call is guards.public:
            kinds.add("public")
        elif dep.call is guards.agent_node or hasattr(dep.call, "permission"):
            kinds.add("guarded")
        stack.extend(dep.dependencies)
    return "guarded" if "guarded" in kinds else "public"


def error_statuses(route: APIRoute, method: str) -> list[int]:
    statuses = {500, 503}
    d = route.dependant
    if d.path_params or d.query_params or d.body_params or method in _WRITES:
        statuses.add(400)
    if _guard(route) == "guarded":
        statuses |= {401, 403}
    elif method in _WRITES:  # login, refresh, join: credentials in the body
        statuses.add(401)
    names_resource = route.dependant.path_params or any(
        p.name in _NAMING_FILTERS for p in route.dependant.query_params
    )
    if names_resource:
        statuses.add(404)
    if method in _WRITES:
        statuses.add(409)
    if route.operation_id == "login":
        statuses.add(429)
    return sorted(statuses)


def document_errors(schema: dict[str, Any], routes: list[APIRoute]) -> None:
    """Rewrite FastAPI's generated document in place (idempotent)."""
    by_op = {(r.path, m.lower()): r for r in routes for m in r.methods or ()}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    components["ErrorEnvelope"] = _ENVELOPE_SCHEMA
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            route = by_op.get((path, method))
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if route is None:
                continue
            for status in error_statuses(route, method):
                responses.setdefault(
                    str(status),
                    {
                        "description": _DESCRIPTIONS[status],
                        "content": {"application/json": {"schema": {"$ref": ENVELOPE_REF}}},
                    },
                )


def install(app: FastAPI, routes: list[APIRoute]) -> None:
    def openapi() -> dict[str, Any]:
        schema = FastAPI.openapi(app)  # generated once and cached by FastAPI
        if schema.get("components", {}).get("schemas", {}).get("ErrorEnvelope") is None:
            document_errors(schema, routes)  # once per generated document
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
