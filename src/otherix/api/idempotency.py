"""``Idempotency-Key`` for mutating endpoints (contract 1.1 and 3.11).

The same key with the same request (method, path, body) within 24 h replays
the first answer byte for byte; the same key with a different request gets
409 ``idempotency_key_mismatch``. Keys are scoped to the caller's credential
(sha256 of the Authorization header), so two users cannot collide. Answers of
500 and above, and 401/403/429, are not cached: the client should retry them.
Login, refresh, node join, join-token creation and the agent endpoints are
exempt.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otherix.errors import IdempotencyKeyMismatch, ValidationFailed
from otherix.store import StoreError, UniqueViolation
from otherix.store import settings as qs

MUTATING = {b"POST", b"PUT", b"PATCH", b"DELETE", "POST", "PUT", "PATCH", "DELETE"}
EXEMPT_PREFIXES = ("/v1/auth/login", "/v1/auth/refresh", "/v1/nodes/join")
TTL = timedelta(hours=24)
log = logging.getLogger(__name__)
UNCACHED = {401, 403, 429}


def _exempt(path: str) -> bool:
    if path.startswith(EXEMPT_PREFIXES) or not path.startswith("/v1/"):
        return True
    return path.endswith(("/heartbeat", "/watch")) or "/agent/" in path


async def _send_error(send: Send, status: int, envelope: dict[str, Any]) -> None:
    body = json.dumps(envelope).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(chunks)


async def _replay(send: Send, cached: dict[str, Any]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": cached["status_code"],
            "headers": [
                (b"content-type", cached["content_type"].encode()),
                (b"idempotent-replay", b"true"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": cached["body"]})


class _Capture:
    """Keeps a copy of status, type and body, and holds the answer back until
    ``on_complete`` (which stores it) has run: a client that sends the same
    key right after reading the answer must find it stored."""

    def __init__(self, send: Send, on_complete: Callable[[_Capture], Awaitable[None]]) -> None:
        self.send = send
        self.on_complete = on_complete
        self.status = 500
        self.ctype = "application/json"
        self.body: list[bytes] = []
        self.held: list[Message] = []

    async def __call__(self, msg: Message) -> None:
        if msg["type"] == "http.response.start":
            self.status = msg["status"]
            for name, value in msg.get("headers", []):
                if name.lower() == b"content-type":
                    self.ctype = value.decode("latin-1")
            self.held.append(msg)
            return
        if msg["type"] == "http.response.body":
            self.body.append(msg.get("body", b""))
            self.held.append(msg)
            if msg.get("more_body", False):
                return
            await self.on_complete(self)
            held, self.held = self.held, []
            for m in held:
                await self.send(m)
            return
        await self.send(msg)


def _key_of(scope: Scope) -> str | None:
    if scope["type"] != "http" or scope["method"] not in MUTATING or _exempt(scope["path"]):
        return None
    headers = dict(scope.get("headers") or [])
    return headers.get(b"idempotency-key", b"").decode("latin-1") or None


class IdempotencyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _key_of(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        if len(key) > 255:
            err = ValidationFailed("Idempotency-Key must be at most 255 characters")
            await _send_error(send, 400, err.envelope())
            return
        body = await _read_body(receive)
        auth = dict(scope.get("headers") or []).get(b"authorization", b"")
        principal = hashlib.sha256(auth).hexdigest()
        target = scope["path"].encode() + b"?" + scope.get("query_string", b"")
        request_hash = hashlib.sha256(
            scope["method"].encode() + b" " + target + b"\n" + body
        ).hexdigest()
        deps = scope["app"].state.deps
        now = deps.clock.now()

        def lookup() -> dict[str, Any] | None:
            with deps.db.read() as conn:
                return qs.get_idempotent(conn, principal, key)

        cached = await anyio.to_thread.run_sync(lookup)
        if cached is not None and cached["created_at"] > now - TTL:
            if cached["request_hash"] != request_hash:
                await _send_error(send, 409, IdempotencyKeyMismatch().envelope())
            else:
                await _replay(send, cached)
            return

        delivered = False

        async def replay_receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        def store(capture: _Capture) -> None:
            try:
                with deps.db.write() as conn:
                    if cached is not None:  # expired entry: replace it
                        qs.delete_idempotent(conn, principal, key)
                    qs.put_idempotent(
                        conn,
                        {
                            "principal": principal,
                            "key": key,
                            "request_hash": request_hash,
                            "status_code": capture.status,
                            "content_type": capture.ctype,
                            "body": b"".join(capture.body),
                            "created_at": now,
                        },
                    )
            except UniqueViolation:
                pass  # a concurrent request with the same key stored first
            except StoreError:  # the answer stands; only its replay copy is lost
                log.warning("could not store the Idempotency-Key answer", exc_info=True)

        async def on_complete(capture: _Capture) -> None:
            if capture.status < 500 and capture.status not in UNCACHED:
                await anyio.to_thread.run_sync(store, capture)

        await self.app(scope, replay_receive, _Capture(send, on_complete))
