"""Helpers shared by routes: pagination parameters and the list envelope."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from otherix.errors import ValidationFailed
from otherix.models.pagination import clamp_limit
from otherix.models.strictjson import INT64_MAX

#: The ``dry_run`` query parameter of the create endpoints.
DRY_RUN_DESCRIPTION = (
    "Run every check of the create (validation, lookups, allowlist, uniqueness, "
    "default-pool substitution) and answer 200 with what would be created; "
    "write nothing (no row, no task, no Idempotency-Key record)."
)


def dry_run_answer(what: str, model: type[Any]) -> dict[str, Any]:
    """The OpenAPI entry of a dry run's 200 answer (the would-be object)."""
    return {
        "model": model,
        "description": f"dry run: the {what} that would be created; nothing was written",
    }


def limit_param(limit: int | None) -> int:
    """``limit`` resolved: above the maximum page it is clamped (docs/pool-contract.md §1.2), but an
    integer no store column could hold is refused like any other (strict input)."""
    if limit is not None and abs(limit) > INT64_MAX:
        raise ValidationFailed(
            "limit is out of range (it must lie within ±(2^63-1))", {"field": "limit"}
        )
    try:
        return clamp_limit(limit)
    except ValueError as exc:
        raise ValidationFailed(str(exc), {"field": "limit"}) from exc


def page(data: list[Any], next_cursor: str | None) -> dict[str, Any]:
    return {"data": data, "meta": {"next_cursor": next_cursor}}


async def json_body(request: Request) -> object:
    """The raw decoded body, for endpoints whose validation order is fixed
    (docs/pool-contract.md §1.5), as the input boundary decoded it, strictly
    (``api/inputguard.py``)."""
    raw = await request.body()
    if not raw:
        raise ValidationFailed("invalid request body: empty")
    if "json_body" in request.scope.get("state", {}):
        return request.scope["state"]["json_body"]
    import json

    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed("invalid request body: malformed JSON") from exc
