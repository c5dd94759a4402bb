"""Client-side errors. httpx exceptions are translated here and only here.

    ClientError
    ├── ApiError             the server answered with an error envelope
    └── TransportError       no usable answer
        ├── ConnectionRefused    "connection_refused: ..."
        ├── RequestTimedOut      "request_timeout: ..."
        ├── TlsFailed            "tls_handshake_failed: ..."
        └── RequestFailed        "request_failed: ..."

``is_retryable``: transport errors, and API errors with status 408, 429 or >= 500.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx


class ClientError(Exception):
    @property
    def is_retryable(self) -> bool:
        return False


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

    @property
    def is_retryable(self) -> bool:
        return self.status in (408, 429) or self.status >= 500


class TransportError(ClientError):
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

    @property
    def is_retryable(self) -> bool:
        return True


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
        return ApiError(
            resp.status_code,
            str(err.get("code") or "") or None,
            str(err.get("message") or ""),
            details if isinstance(details, dict) else None,
        )
    return ApiError(resp.status_code, None, resp.text[:200], None)


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
