"""``Idempotency-Key`` for mutating endpoints (contract 1.1 and 3.11).

The same key with the same request (method, path, body) within 24 h replays
the first answer byte for byte; the same key with a different request gets
409 ``idempotency_key_mismatch``. Keys are scoped to the caller's credential
(sha256 of the Authorization header), so two users cannot collide. Answers of
500 and above, and 401/403/429, are not cached: the client should retry them.
Login, refresh, node join, join-token creation, the agent endpoints and dry
runs (``?dry_run=true``, which write nothing) are exempt.

The first request claims its key (a pending row, committed before the route
runs), so a second request with the same key while the first still runs gets
409 ``conflict`` (``details.reason: "idempotency_key_in_progress"``) instead
of running twice. The answer is stored into the claim when the route has
answered. A claim left by a server that died mid-request is taken over: at
once on SQLite (one process: a claim by an earlier process is dead), after
``server.idempotency_claim_timeout`` on PostgreSQL. The route's own commit
and the stored answer are separate transactions, so a retry after such a
crash runs the request again (a create then answers 409 ``conflict``: the
object exists once).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otherix.api.deps import Deps
from otherix.errors import Conflict, IdempotencyKeyMismatch, ValidationFailed
from otherix.store import StoreError, UniqueViolation
from otherix.store import settings as qs

MUTATING = {b"POST", b"PUT", b"PATCH", b"DELETE", "POST", "PUT", "PATCH", "DELETE"}
EXEMPT_PREFIXES = ("/v1/auth/login", "/v1/auth/refresh", "/v1/nodes/join")
TTL = timedelta(hours=24)
log = logging.getLogger(__name__)
UNCACHED = {401, 403, 429}
#: ``dry_run`` values that do not ask for a dry run (pydantic's false words).
_FALSE = {"", "0", "off", "f", "false", "n", "no"}
#: ``status_code`` of a claimed key whose first request has not answered yet;
#: its ``content_type`` names the claiming process (``claimed-by:<boot id>``).
PENDING = 0
CLAIMANT = f"claimed-by:{uuid.uuid4().hex}"


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


def _dry_run(scope: Scope) -> bool:
    """A ``?dry_run=`` request writes nothing, so it leaves no record either."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return any(v.strip().lower() not in _FALSE for v in query.get("dry_run", []))


def _key_of(scope: Scope) -> str | None:
    if scope["type"] != "http" or scope["method"] not in MUTATING or _exempt(scope["path"]):
        return None
    if _dry_run(scope):
        return None
    headers = dict(scope.get("headers") or [])
    return headers.get(b"idempotency-key", b"").decode("latin-1") or None


def _claim(
    deps: Deps, principal: str, key: str, request_hash: str, now: datetime
) -> dict[str, Any] | None:
    """Claim the key with a pending row, or return the row that holds it."""
    try:
        with deps.db.write() as conn:
            row = qs.get_idempotent(conn, principal, key)
            if row is not None:
                if row["status_code"] != PENDING:
                    alive = row["created_at"] > now - TTL
                elif deps.db.backend == "sqlite":
                    alive = row["content_type"] == CLAIMANT
                else:
                    timeout = timedelta(seconds=deps.settings.server.idempotency_claim_timeout)
                    alive = row["created_at"] > now - timeout
                if alive:
                    return row
                qs.delete_idempotent(conn, principal, key)  # expired or abandoned
            qs.put_idempotent(
                conn,
                {
                    "principal": principal,
                    "key": key,
                    "request_hash": request_hash,
                    "status_code": PENDING,
                    "content_type": CLAIMANT,
                    "body": b"",
                    "created_at": now,
                },
            )
            return None
    except UniqueViolation:  # a concurrent request claimed it first (PostgreSQL)
        with deps.db.read() as conn:
            return qs.get_idempotent(conn, principal, key)


async def _answer_for_held(send: Send, held: dict[str, Any], request_hash: str) -> None:
    if held["request_hash"] != request_hash:
        await _send_error(send, 409, IdempotencyKeyMismatch().envelope())
    elif held["status_code"] == PENDING:
        busy = Conflict(
            "a request with this Idempotency-Key is still in progress; retry when it has finished",
            {"reason": "idempotency_key_in_progress", "retry_after_seconds": 1},
        )
        await _send_error(send, 409, busy.envelope())
    else:
        await _replay(send, held)


def _finish(deps: Deps, principal: str, key: str, capture: _Capture | None) -> None:
    """Store the answer into the claim, or drop the claim when the answer is not
    to be replayed or there was none: a retry then runs again."""
    try:
        with deps.db.write() as conn:
            if capture is None or capture.status >= 500 or capture.status in UNCACHED:
                qs.delete_idempotent(conn, principal, key)
            else:
                body = b"".join(capture.body)
                qs.complete_idempotent(conn, principal, key, capture.status, capture.ctype, body)
    except StoreError:  # the answer stands; only its replay copy is lost
        log.warning("could not store the Idempotency-Key answer", exc_info=True)


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

        held = await anyio.to_thread.run_sync(_claim, deps, principal, key, request_hash, now)
        if held is not None:
            await _answer_for_held(send, held, request_hash)
            return

        delivered = False
        finished = False

        async def replay_receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def on_complete(capture: _Capture) -> None:
            nonlocal finished
            finished = True
            await anyio.to_thread.run_sync(_finish, deps, principal, key, capture)

        try:
            await self.app(scope, replay_receive, _Capture(send, on_complete))
        finally:
            if not finished:  # the route failed or was cancelled before answering
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_finish, deps, principal, key, None)
