"""The one place exceptions become HTTP answers: ``{"error": {code, message, details}}``.

- ``OtherixError`` subclasses render with their own code and status.
- FastAPI's request validation (bad JSON, wrong types, unknown fields) becomes
  400 ``validation_failed`` with the offending fields in ``details.fields``.
- Starlette's 404/405 become ``not_found`` / ``method_not_allowed``.
- Store errors that escaped a service: unique/FK violations become 409
  ``conflict``; an unavailable database (unreachable, locked, or its file
  deleted or replaced under the server) becomes 503 ``store_unavailable`` with
  a ``Retry-After`` header (:func:`store_unavailable`).
- An answer with ``details.retry_after_seconds`` (``rate_limited``,
  ``store_unavailable``, an Idempotency-Key still in progress) carries the
  same figure in a ``Retry-After`` header.
- Anything else is logged with the request id and answered 500 ``internal``
  without a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from otherix.api.idempotency import HeldKey
from otherix.api.middleware import BodyTooLarge
from otherix.errors import (
    Conflict,
    DatabaseUnavailable,
    Internal,
    MethodNotAllowed,
    NotFound,
    OtherixError,
    ValidationFailed,
)
from otherix.models.pagination import InvalidCursor
from otherix.store import ForeignKeyViolation, StoreLost, StoreUnavailable, UniqueViolation

log = logging.getLogger("otherix.api")

JSON_UTF8 = "application/json; charset=utf-8"
#: ``Retry-After`` while the database does not answer, and once its file is lost
#: (that lasts until an operator restores it and restarts the server).
RETRY_AFTER_OUTAGE = 2
RETRY_AFTER_LOST = 30


def error_response(exc: OtherixError, status: int | None = None) -> JSONResponse:
    headers = None
    retry = (exc.details or {}).get("retry_after_seconds")
    if isinstance(retry, int) and not isinstance(retry, bool):  # RFC 9110: delay-seconds
        headers = {"Retry-After": str(max(0, retry))}
    return JSONResponse(
        exc.envelope(),
        status_code=status or exc.http_status,
        media_type=JSON_UTF8,
        headers=headers,
    )


def store_unavailable(exc: StoreUnavailable, request_id: str) -> JSONResponse:
    """The 503 ``store_unavailable`` answer, with ``Retry-After``."""
    if isinstance(exc, StoreLost):
        retry = RETRY_AFTER_LOST
        err = DatabaseUnavailable(
            "the database file was deleted or replaced under the running server; "
            "restore it and restart the server",
            {"reason": "database_lost", "retry_after_seconds": retry, "request_id": request_id},
        )
    else:
        retry = RETRY_AFTER_OUTAGE
        err = DatabaseUnavailable(
            "the database is unavailable; retry",
            {"retry_after_seconds": retry, "request_id": request_id},
        )
    return error_response(err)


def _request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "-"))


def _validation_details(exc: RequestValidationError) -> dict[str, Any]:
    fields = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        fields.append({"field": ".".join(loc) or "body", "reason": err.get("msg", "invalid")})
    return {"fields": fields}


def _install_store(app: FastAPI) -> None:
    @app.exception_handler(UniqueViolation)
    async def _unique(_request: Request, _exc: UniqueViolation) -> JSONResponse:
        return error_response(Conflict("the resource already exists"))

    @app.exception_handler(ForeignKeyViolation)
    async def _fk(_request: Request, _exc: ForeignKeyViolation) -> JSONResponse:
        return error_response(Conflict("a referenced resource changed concurrently; retry"))

    @app.exception_handler(StoreUnavailable)
    async def _unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        if not isinstance(exc, StoreLost):  # a lost file was logged once, when it was found
            log.error("store unavailable (request %s): %s", _request_id(request), exc)
        return store_unavailable(exc, _request_id(request))


def install(app: FastAPI, *, max_body_bytes: int) -> None:
    """The error handlers; ``max_body_bytes`` is the cap that a 400 for a too-large
    body names (``server.max_body_bytes``)."""

    @app.exception_handler(OtherixError)
    async def _otherix(_request: Request, exc: OtherixError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if errors and errors[0].get("type") == "json_invalid":
            return error_response(ValidationFailed("invalid request body: malformed JSON"))
        return error_response(ValidationFailed("invalid request", _validation_details(exc)))

    @app.exception_handler(HeldKey)
    async def _held(_request: Request, exc: HeldKey) -> Response:
        return exc.response()  # a replay, or why the key cannot run now

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_request: Request, _exc: BodyTooLarge) -> JSONResponse:
        limit = max_body_bytes
        return error_response(
            ValidationFailed(f"request body too large (max {limit} bytes)", {"max_bytes": limit})
        )

    @app.exception_handler(InvalidCursor)
    async def _cursor(_request: Request, _exc: InvalidCursor) -> JSONResponse:
        return error_response(ValidationFailed("invalid cursor", {"field": "cursor"}))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(NotFound())
        if exc.status_code == 405:
            return error_response(MethodNotAllowed())
        if exc.status_code == 400:
            return error_response(ValidationFailed(str(exc.detail)))
        return error_response(Internal(str(exc.detail)), exc.status_code)

    _install_store(app)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        rid = _request_id(request)
        log.exception("unexpected error (request %s)", rid, exc_info=exc)
        return error_response(Internal("internal error", {"request_id": rid}))
