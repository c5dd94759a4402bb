"""The input boundary: every request's text and JSON checked once, before any route.

Pure ASGI middleware, installed by ``create_app`` inside ``RequestMiddleware``
(so the 1 MiB body cap applies while the body is read here) and outside
everything else (idempotency, routing), so every route (public, agent, login,
join) sees only input that passed the rules of ``otherix.models.strictjson``
and ``otherix.models.textrules``:

- the path: percent-decoded, it must be valid UTF-8 without NUL; a bad
  segment is named by its path parameter (``path.name``) when a route
  matches, else ``path``;
- the query string: each name and value likewise (``query.<name>``);
- headers: every value must be valid UTF-8 (``header.<name>``);
- a non-empty body must be strict JSON (UTF-8, no unpaired surrogate or NUL,
  nesting at most 64, integers within ±(2^63-1), finite numbers, no repeated
  key), whatever its content type: every route of this API takes JSON.

A refusal is ``400 validation_failed`` with ``details`` ``{"field", "in",
"reason"}``: ``field`` is the body's dotted JSON path (``config.a.b``,
``pools.0.name``; ``body`` for the whole body), ``query.<name>``,
``path.<parameter>`` or ``header.<name>``, and ``in`` is ``body``, ``query``,
``path`` or ``header``. A body that is
not JSON at all keeps the message it always had (``invalid request body:
malformed JSON``). The decoded body is left in ``request.state.json_body``
for routes that want it without parsing again. Bodies over 64 KiB are
decoded in a worker thread, so a large body never holds the event loop.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import anyio
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otherix.api.middleware import answer
from otherix.errors import ValidationFailed
from otherix.models import strictjson, textrules

#: bodies above this are decoded off the event loop
THREAD_THRESHOLD = 64 * 1024


def refusal(where: str, field: str, reason: str) -> ValidationFailed:
    """The 400 for one refused value (``field`` already carries its location prefix)."""
    return ValidationFailed(
        f"invalid request: {field}: {reason}", {"field": field, "in": where, "reason": reason}
    )


def _path_parameter(scope: Scope, bad: str) -> str:
    """The name of the path parameter whose (replacement-decoded) value holds the
    bad segment, or ``""`` when no route matches."""
    router = getattr(scope.get("app"), "router", None)
    stack: list[Any] = list(getattr(router, "routes", ()))
    while stack:
        route = stack.pop(0)
        if hasattr(route, "original_router"):  # an included router: its own routes
            stack.extend(route.original_router.routes)
            continue
        match, child = route.matches(scope)
        if match is Match.NONE:
            continue
        for name, value in child.get("path_params", {}).items():
            if isinstance(value, str) and bad in value:
                return str(name)
    return ""


def check_path(scope: Scope) -> ValidationFailed | None:
    raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    if b"%" not in raw and raw.isascii():
        return None
    for segment in raw.split(b"/"):
        _, reason = textrules.percent_decode(segment)
        if reason is not None:
            name = _path_parameter(scope, unquote(segment.decode("latin-1")))
            return refusal("path", f"path.{name}" if name else "path", reason)
    return None


def check_query(query: bytes) -> ValidationFailed | None:
    if b"%" not in query and query.isascii():
        return None
    for part in query.split(b"&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition(b"=")
        name, reason = textrules.percent_decode(raw_name, plus_is_space=True)
        if reason is None:
            _, reason = textrules.percent_decode(raw_value, plus_is_space=True)
        if reason is not None:
            return refusal("query", f"query.{name}", reason)
    return None


def check_headers(headers: list[tuple[bytes, bytes]]) -> ValidationFailed | None:
    for name, value in headers:
        if value.isascii():
            continue
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as exc:
            shown = name.decode("latin-1").lower()
            reason = f"not valid UTF-8 (byte 0x{value[exc.start]:02X})"
            return refusal("header", f"header.{shown}", reason)
    return None


def decode_body(body: bytes) -> tuple[Any, ValidationFailed | None]:
    try:
        return strictjson.decode(body), None
    except strictjson.MalformedJson:
        return None, ValidationFailed("invalid request body: malformed JSON")
    except strictjson.JsonRefused as exc:
        return None, refusal("body", exc.field or "body", exc.reason)


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False


async def _read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The whole body, or what came before the client left (and its disconnect)."""
    chunks: list[bytes] = []
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            return b"".join(chunks), msg
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(chunks), None


class InputGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        problem = (
            check_path(scope)
            or check_query(scope.get("query_string", b""))
            or check_headers(headers)
        )
        if problem is None and _has_body(headers):
            body, gone = await _read_body(receive)
            if gone is None and body:
                if len(body) > THREAD_THRESHOLD:
                    value, problem = await anyio.to_thread.run_sync(decode_body, body)
                else:
                    value, problem = decode_body(body)
                if problem is None:
                    scope.setdefault("state", {})["json_body"] = value
            receive = _replay(body, gone, receive)
        if problem is not None:
            for msg in answer(problem):
                await send(msg)
            return
        await self.app(scope, receive, send)


def _replay(body: bytes, gone: Message | None, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            if gone is not None:
                return gone
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
