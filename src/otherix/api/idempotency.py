"""``Idempotency-Key`` for mutating endpoints (docs/pool-contract.md §1.3).

The same key with the same request (method, path, query, body) within 24 h
replays the first answer; the same key with a different request gets 409
``idempotency_key_mismatch``. Answers of 500 and above, and 401/403/429, are
not stored: the client should retry them.
A dry run (``?dry_run=true``, which writes nothing) leaves no record either.

Who a key answers. The key is looked up only once the request has
authenticated and is authorised: the route guard (``guards.require``) calls
:func:`claim` after its permission check, and keys are scoped to the user id.
So a revoked token, a deleted user or a role that lost the permission gets the
401/403 any request of theirs gets, and another user's requests never meet
the key. Routes without a user principal ignore the key: login, refresh and
node join (public) and the agent endpoints (node credential).

Secrets. An answer that carries a secret (an ``otx…_`` token, or a field named
like one: API token, join token, node credential, re-enrol token) is stored
with the secret replaced by ``null``; a replay returns the same status and
object with ``Idempotent-Replay-Withheld`` naming the fields. The secret is
shown once, in the first answer, as it is everywhere else.

Claims. The first request claims its key (a pending row, committed before the
route runs), so a second request with the key while the first still runs gets
409 ``conflict`` (``details.reason: "idempotency_key_in_progress"``) instead of
running twice; the answer is stored into the claim when the route has
answered. A claim whose request gave no answer to replay is released. When the
release itself fails (the store is down), the claim is abandoned, not stuck:
this server knows which of its claims are still in flight (``api/claims.py``)
and takes an abandoned one over at the next request with its key, and the
``store-watch`` worker retries the release until the store answers. A claim of
a server that died is taken over at once on SQLite (one process) and after
``server.idempotency_claim_timeout`` on PostgreSQL. The route's commit and the
stored answer are separate transactions, so a retry after such a crash runs
the request again (a create then answers 409 ``conflict``: the object exists
once).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qs

import anyio
from fastapi import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from otherix.api.deps import Deps
from otherix.api.provide import deps_of
from otherix.errors import Conflict, IdempotencyKeyMismatch, OtherixError, ValidationFailed
from otherix.models.withhold import withhold
from otherix.store import StoreError, UniqueViolation
from otherix.store.ports.idempotency import PENDING, IdempotencyRow

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
TTL = timedelta(hours=24)
UNCACHED = {401, 403, 429}
REPLAY_HEADER = "Idempotent-Replay"
WITHHELD_HEADER = "Idempotent-Replay-Withheld"
#: seconds between two passes of the ``store-watch`` worker (file check, releases)
STORE_WATCH_INTERVAL = 1.0
log = logging.getLogger(__name__)
#: ``dry_run`` values that do not ask for a dry run (pydantic's false words).
_FALSE = {"", "0", "off", "f", "false", "n", "no"}


@dataclass
class Ticket:
    """A request with a key, from the middleware to the guard and back."""

    key: str
    request_hash: str
    principal: str | None = None  # set once this request holds the claim
    token: str = ""


class HeldKey(Exception):
    """The key is held by an earlier request: the answer to send instead of running."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status, self.body, self.headers = status, body, headers
        super().__init__(status)

    def response(self) -> Response:
        return Response(self.body, status_code=self.status, headers=self.headers)


def _error(exc: OtherixError, **headers: str) -> HeldKey:
    body = json.dumps(exc.envelope()).encode()
    return HeldKey(
        exc.http_status, body, {"content-type": "application/json; charset=utf-8", **headers}
    )


def _held_answer(row: IdempotencyRow, request_hash: str) -> HeldKey:
    if row.request_hash != request_hash:
        return _error(IdempotencyKeyMismatch())
    if row.status_code == PENDING:
        busy = Conflict(
            "a request with this Idempotency-Key is still in progress; retry when it has finished",
            {"reason": "idempotency_key_in_progress", "retry_after_seconds": 1},
        )
        return _error(busy, **{"retry-after": "1"})
    headers = {"content-type": row.content_type, REPLAY_HEADER: "true"}
    if row.withheld:
        headers[WITHHELD_HEADER] = row.withheld
    return HeldKey(row.status_code, row.body, headers)


def _running(ticket: Ticket, pk: tuple[str, str], now: datetime) -> IdempotencyRow:
    """A claim that is being written right now (its row is not visible yet)."""
    principal, key = pk
    return IdempotencyRow(principal, key, ticket.request_hash, PENDING, "", b"", None, now)


def _alive(deps: Deps, row: IdempotencyRow, now: datetime) -> bool:
    if row.status_code != PENDING:
        return bool(row.created_at > now - TTL)
    if deps.claims.mine(row.content_type):
        return False  # ours and not in flight (the caller entered it): abandoned
    if deps.db.backend == "sqlite":
        return False  # one process: a claim of an earlier process is dead
    timeout = timedelta(seconds=deps.settings.server.idempotency_claim_timeout)
    return bool(row.created_at > now - timeout)


def _claim_row(deps: Deps, ticket: Ticket, pk: tuple[str, str]) -> IdempotencyRow | None:
    """Claim the key with a pending row, or return the row that holds it."""
    principal, key = pk
    now = deps.clock.now()
    try:
        with deps.db.write() as conn:
            row = deps.db.idempotency.get(conn, principal, key)
            if row is not None:
                if _alive(deps, row, now):
                    return row
                deps.db.idempotency.delete(
                    conn, principal, key
                )  # expired or abandoned: take it over
            deps.db.idempotency.insert_claim(
                conn, principal, key, ticket.request_hash, ticket.token, now
            )
    except UniqueViolation:  # a concurrent request claimed it first (PostgreSQL)
        with deps.db.read() as conn:
            return deps.db.idempotency.get(conn, principal, key) or _running(ticket, pk, now)
    deps.claims.forget_release(pk)  # the row it was owed for is gone
    return None


def claim(request: Request, user_id: str) -> None:
    """Called by the route guard once the user is authenticated and authorised:
    claim the request's key for this user, or raise :class:`HeldKey` with the
    answer of the request that holds it. No key: nothing to do."""
    ticket: Ticket | None = getattr(request.state, "idempotency", None)
    if ticket is None or ticket.principal is not None:
        return
    deps = deps_of(request)
    pk = (f"user:{user_id}", ticket.key)
    if not deps.claims.enter(pk):  # a request of this server runs it right now
        with deps.db.read() as conn:
            running = deps.db.idempotency.get(conn, *pk) or _running(ticket, pk, deps.clock.now())
        raise _held_answer(running, ticket.request_hash)
    ticket.token = deps.claims.token()
    try:
        row = _claim_row(deps, ticket, pk)
    except BaseException:
        deps.claims.leave(pk)
        raise
    if row is not None:
        deps.claims.leave(pk)
        raise _held_answer(row, ticket.request_hash)
    ticket.principal = pk[0]


def _finish(deps: Deps, ticket: Ticket, status: int | None, ctype: str, body: bytes) -> None:
    """Store the answer into the claim, or release the claim when there is no
    answer to replay (``status`` None: the route failed or was cancelled). A
    release that fails on a store error is owed and retried by the worker."""
    assert ticket.principal is not None
    pk = (ticket.principal, ticket.key)
    store = status is not None and status < 500 and status not in UNCACHED
    try:
        with deps.db.write() as conn:
            if store:
                assert status is not None
                stored, fields = withhold(body, ctype)
                kept = deps.db.idempotency.complete(
                    conn,
                    *pk,
                    ticket.token,
                    status_code=status,
                    content_type=ctype,
                    body=stored,
                    withheld=",".join(fields)[:255] or None,
                )
            else:
                kept = deps.db.idempotency.release(conn, *pk, ticket.token)
        if not kept:
            log.warning("Idempotency-Key claim %r was taken over before its answer", ticket.key)
    except StoreError:
        # The answer stands; the claim is abandoned: taken over by the next
        # request with this key here, released by the worker when the store is back.
        deps.claims.owe_release(pk, ticket.token)
        log.warning("could not %s an Idempotency-Key claim", "store" if store else "release")
    finally:
        deps.claims.leave(pk)


def retry_releases(deps: Deps) -> int:
    """Release claims owed since a store error (the ``store-watch`` worker); the count."""
    done = 0
    for pk, token in deps.claims.owed():
        if deps.claims.running(pk):
            continue  # taken over by a request that is running now
        try:
            with deps.db.write() as conn:
                deps.db.idempotency.release(conn, *pk, token)
        except StoreError:
            return done  # still down: next pass
        deps.claims.forget_release(pk)
        done += 1
    return done


async def _send_error(send: Send, exc: OtherixError) -> None:
    held = _error(exc)
    await send(
        {
            "type": "http.response.start",
            "status": held.status,
            "headers": [(k.encode(), v.encode()) for k, v in held.headers.items()],
        }
    )
    await send({"type": "http.response.body", "body": held.body})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(chunks)


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
    if scope["type"] != "http" or scope["method"] not in MUTATING:
        return None
    if not scope["path"].startswith("/v1/"):
        return None
    if _dry_run(scope):
        return None
    headers = dict(scope.get("headers") or [])
    return headers.get(b"idempotency-key", b"").decode("latin-1") or None


class IdempotencyMiddleware:
    """Hands the key to the route guard (a :class:`Ticket` in ``request.state``),
    and stores the answer of a request whose guard claimed the key. It never
    reads the store before the request is authenticated."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = _key_of(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        if len(key) > 255:
            too_long = ValidationFailed("Idempotency-Key must be at most 255 characters")
            await _send_error(send, too_long)
            return
        body = await _read_body(receive)
        target = scope["path"].encode() + b"?" + scope.get("query_string", b"")
        request_hash = hashlib.sha256(
            scope["method"].encode() + b" " + target + b"\n" + body
        ).hexdigest()
        ticket = Ticket(key, request_hash)
        scope.setdefault("state", {})["idempotency"] = ticket
        deps: Deps = scope["app"].state.deps
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
            if ticket.principal is not None:
                answer = b"".join(capture.body)
                await anyio.to_thread.run_sync(
                    _finish, deps, ticket, capture.status, capture.ctype, answer
                )

        try:
            await self.app(scope, replay_receive, _Capture(send, on_complete))
        finally:
            if not finished and ticket.principal is not None:  # failed or cancelled
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_finish, deps, ticket, None, "", b"")
