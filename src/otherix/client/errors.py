"""Client-side errors. httpx exceptions are translated here and only here.

    ClientError
    ├── ApiError                     the server answered with an error
    │   ├── ValidationFailedError        400 (Permanent)
    │   │   ├── PathNotAllowedError          path_not_allowed
    │   │   ├── PoolNameAmbiguousError       pool_name_ambiguous
    │   │   └── DefaultPoolMissingInput      default_pool_not_set (400)
    │   ├── UnauthenticatedError         401 (Permanent)
    │   ├── PermissionDeniedError        403 (Permanent)
    │   ├── NotFoundError                404 (Permanent)
    │   │   └── DefaultPoolMissing           default_pool_not_set (404)
    │   ├── MethodNotAllowedError        405 (Permanent)
    │   ├── ConflictError                409 (Permanent)
    │   │   └── DeleteBlockedError           errors.DELETE_BLOCKING_CODES
    │   ├── UnavailableError             408, 429, 5xx but 500 (Retryable)
    │   └── InternalServerError          500 internal (Permanent)
    └── TransportError               no usable answer (Retryable)
        ├── ConnectionRefused    "connection_refused: ..."
        ├── RequestTimedOut      "request_timeout: ..."
        ├── TlsFailed            "tls_handshake_failed: ..."
        └── RequestFailed        "request_failed: ..."

:class:`DefaultPoolNotSetError` is the marker both ``default_pool_not_set``
classes share. :func:`api_error` picks the class of an answer from one table,
:data:`BY_WIRE`, built from the server's tree (``otherix.errors``): the class
whose ``(http_status, code)`` the answer carries decides the family; an
answer no class of the tree produces (a proxy's 502, an older server) falls
back on its status (:data:`BY_STATUS`).

``is_retryable`` is ``isinstance(exc, otherix.retry.Retryable)``.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx

from otherix import errors
from otherix.retry import Permanent, Retryable


class ClientError(Exception):
    @property
    def is_retryable(self) -> bool:
        return isinstance(self, Retryable)


class ApiError(ClientError):
    def __init__(
        self, status: int, code: str | None, message: str, details: dict[str, Any] | None
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.code:
            return f"api_error: {self.code}: {self.message}"
        return f"api_error: status {self.status}"


class ValidationFailedError(ApiError, Permanent):
    """400: the request is wrong (a field, a path, a name)."""


class PathNotAllowedError(ValidationFailedError):
    """400 ``path_not_allowed``; ``details.allowed_prefixes`` lists the allowlist."""


class PoolNameAmbiguousError(ValidationFailedError):
    """400 ``pool_name_ambiguous``: the name is on several nodes; use a UUID or a node."""


class DefaultPoolNotSetError(ApiError):
    """Marker: ``default_pool_not_set``, as a 400 (a create needing it) or a 404 (a get)."""


class DefaultPoolMissingInput(ValidationFailedError, DefaultPoolNotSetError):
    """400 ``default_pool_not_set``."""


class UnauthenticatedError(ApiError, Permanent):
    """401: no credential, or one the server does not accept."""


class PermissionDeniedError(ApiError, Permanent):
    """403."""


class NotFoundError(ApiError, Permanent):
    """404."""


class DefaultPoolMissing(NotFoundError, DefaultPoolNotSetError):
    """404 ``default_pool_not_set``."""


class MethodNotAllowedError(ApiError, Permanent):
    """405."""


class ConflictError(ApiError, Permanent):
    """409."""

    @property
    def name_taken(self) -> bool:
        """The conflict is the name (``details.field == "name"``): the object already
        exists. Other 409s (a path overlapping another pool's, a lock) say their own
        reason and must not read as "already exists"."""
        return self.details.get("field") == "name"


class DeleteBlockedError(ConflictError):
    """409 with a code of ``errors.DELETE_BLOCKING_CODES``: something still uses
    the resource (``details.blocking_resources`` says what)."""

    @property
    def default_pool_in_use(self) -> bool:
        """What blocks is the cluster default pool (``details.reason ==
        "default_pool_in_use"``): its last instance, or a pool VMs created without
        a pool would land on. The message says how to set another default."""
        return self.details.get("reason") == "default_pool_in_use"


class UnavailableError(ApiError, Retryable):
    """408, 429, a 5xx other than 500: the same request may succeed later."""


class InternalServerError(ApiError, Permanent):
    """500 ``internal``: a bug on the server; asking again gets the same answer."""


#: The client class of each family of the server's tree, nearest ancestor wins.
_FAMILIES: dict[type[errors.OtherixError], type[ApiError]] = {
    errors.ValidationFailed: ValidationFailedError,
    errors.PathNotAllowed: PathNotAllowedError,
    errors.PoolNameAmbiguous: PoolNameAmbiguousError,
    errors.DefaultPoolNotSet400: DefaultPoolMissingInput,
    errors.Unauthenticated: UnauthenticatedError,
    errors.PermissionDenied: PermissionDeniedError,
    errors.NotFound: NotFoundError,
    errors.DefaultPoolNotSet: DefaultPoolMissing,
    errors.MethodNotAllowed: MethodNotAllowedError,
    errors.Conflict: ConflictError,
    errors.TemporaryError: UnavailableError,
    errors.Internal: InternalServerError,
}


def _family(server: type[errors.OtherixError]) -> type[ApiError]:
    if server.http_status == 409 and server.code in errors.DELETE_BLOCKING_CODES:
        return DeleteBlockedError
    for base in server.__mro__:
        if base in _FAMILIES:
            return _FAMILIES[base]
    raise LookupError(f"{server.__name__} has no client family")  # a test keeps this unreachable


#: ``(http_status, code)`` of every class of the server's tree -> the class raised.
BY_WIRE: dict[tuple[int, str], type[ApiError]] = {
    (cls.http_status, str(cls.code)): _family(cls)
    for cls in errors.all_error_classes()
    if "code" in vars(cls)  # the classes that name a code (not the abstract bases)
    and cls is not errors.OtherixError
}

#: An answer no class of the tree produces: its status decides.
BY_STATUS: dict[int, type[ApiError]] = {
    400: ValidationFailedError,
    401: UnauthenticatedError,
    403: PermissionDeniedError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    408: UnavailableError,
    409: ConflictError,
    429: UnavailableError,
    500: InternalServerError,
    502: UnavailableError,
    503: UnavailableError,
    504: UnavailableError,
}


def api_error(
    status: int, code: str | None, message: str, details: dict[str, Any] | None = None
) -> ApiError:
    """The typed error for an answer of ``status`` with ``code`` (module docstring)."""
    cls = BY_WIRE.get((status, code or "")) or BY_STATUS.get(status)
    if cls is None:  # another 5xx (a proxy, a gateway) may pass; an unknown 4xx will not
        cls = UnavailableError if status > 500 else ApiError
    return cls(status, code, message, details)


class TransportError(ClientError, Retryable):
    """``str()`` is ``<kind>: <url>: <reason>`` (agent logs); ``url`` is the
    request's URL and ``reason`` what went wrong, for callers that word it
    themselves (the CLI); ``tried`` lists every control-plane URL tried when
    the request failed over them all."""

    kind = "request_failed"

    def __init__(
        self, detail: str, *, url: str = "", reason: str = "", tried: tuple[str, ...] = ()
    ) -> None:
        self.detail = detail
        self.url = url
        self.reason = reason or detail
        self.tried = tried
        super().__init__(f"{self.kind}: {detail}")


class ConnectionRefused(TransportError):
    kind = "connection_refused"


class RequestTimedOut(TransportError):
    kind = "request_timeout"


class TlsFailed(TransportError):
    kind = "tls_handshake_failed"


class RequestFailed(TransportError):
    kind = "request_failed"


def from_response(resp: httpx.Response) -> ApiError:
    try:
        body = resp.json()
        err = body.get("error") if isinstance(body, dict) else None
    except (ValueError, json.JSONDecodeError):
        err = None
    if isinstance(err, dict):
        details = err.get("details")
        return api_error(
            resp.status_code,
            str(err.get("code") or "") or None,
            str(err.get("message") or ""),
            details if isinstance(details, dict) else None,
        )
    return api_error(resp.status_code, None, resp.text[:200], None)


def from_httpx(exc: httpx.HTTPError, url: str) -> TransportError:
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimedOut(f"{url}: no answer in time", url=url, reason="no answer in time")
    if isinstance(exc, httpx.ConnectError):
        if isinstance(cause, ssl.SSLError) or "SSL" in str(exc) or "certificate" in str(exc):
            return TlsFailed(f"{url}: {exc}", url=url, reason=str(exc))
        reason = str(exc) or "connection refused"
        return ConnectionRefused(f"{url}: {reason}", url=url, reason=reason)
    reason = str(exc) or type(exc).__name__
    return RequestFailed(f"{url}: {reason}", url=url, reason=reason)
