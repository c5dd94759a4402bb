"""The idempotency aggregate: one row per (principal, Idempotency-Key), a
claim while its request runs and the stored answer after."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from otherix.store.tx import Tx

#: ``status_code`` of a claim whose request has not answered yet
PENDING = 0


@dataclass(frozen=True, slots=True)
class IdempotencyRow:
    """A claim (``status_code`` PENDING, ``content_type`` = the claim's token)
    or a stored answer."""

    principal: str
    key: str
    request_hash: str
    status_code: int
    content_type: str
    body: bytes
    #: comma-separated fields of the stored answer whose secret was removed
    withheld: str | None
    created_at: datetime


class IdempotencyStore(Protocol):
    """Claims and stored answers; writes touch a claim only while it holds ``token``."""

    def get(self, tx: Tx, principal: str, key: str) -> IdempotencyRow | None: ...
    def insert_claim(
        self, tx: Tx, principal: str, key: str, request_hash: str, token: str, now: datetime
    ) -> None: ...
    def delete(self, tx: Tx, principal: str, key: str) -> None: ...
    def complete(
        self,
        tx: Tx,
        principal: str,
        key: str,
        token: str,
        *,
        status_code: int,
        content_type: str,
        body: bytes,
        withheld: str | None,
    ) -> bool: ...
    def release(self, tx: Tx, principal: str, key: str, token: str) -> bool: ...
