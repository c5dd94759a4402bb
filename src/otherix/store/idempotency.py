"""Idempotency-Key rows: claims and stored answers (used by ``otherix.api.idempotency``).

``SqlIdempotency`` implements ``ports.idempotency.IdempotencyStore``. A row is
keyed by (principal, key). ``status_code`` 0 (``PENDING``) marks a claim whose
request has not answered yet; its ``content_type`` then holds the claim's
token, and ``complete`` and ``release`` only touch the row while it still
holds that token, so a claim another request has taken over meanwhile is
never overwritten or dropped. ``withheld`` lists the fields of a stored
answer whose secrets were removed before it was stored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from otherix.store.ports.idempotency import PENDING, IdempotencyRow, IdempotencyStore
from otherix.store.schema import idempotency_keys as t
from otherix.store.tx import Tx, sql

__all__ = ["PENDING", "SqlIdempotency", "store"]


def _key(principal: str, key: str) -> Any:
    return (t.c.principal == principal) & (t.c.key == key)


def _claimed(principal: str, key: str, token: str) -> Any:
    return _key(principal, key) & (t.c.status_code == PENDING) & (t.c.content_type == token)


class SqlIdempotency:
    """:class:`IdempotencyStore` in SQLAlchemy Core, for both backends."""

    def get(self, tx: Tx, principal: str, key: str) -> IdempotencyRow | None:
        row = sql(tx).execute(t.select().where(_key(principal, key))).mappings().first()
        return IdempotencyRow(**row) if row else None

    def insert_claim(
        self, tx: Tx, principal: str, key: str, request_hash: str, token: str, now: datetime
    ) -> None:
        sql(tx).execute(
            t.insert().values(
                principal=principal,
                key=key,
                request_hash=request_hash,
                status_code=PENDING,
                content_type=token,
                body=b"",
                withheld=None,
                created_at=now,
            )
        )

    def delete(self, tx: Tx, principal: str, key: str) -> None:
        sql(tx).execute(t.delete().where(_key(principal, key)))

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
    ) -> bool:
        """Store the answer into the claim ``token``; False when the claim is no longer ours."""
        stmt = (
            t.update()
            .where(_claimed(principal, key, token))
            .values(
                status_code=status_code, content_type=content_type, body=body, withheld=withheld
            )
        )
        return bool(sql(tx).execute(stmt).rowcount)

    def release(self, tx: Tx, principal: str, key: str, token: str) -> bool:
        """Drop the claim ``token`` (its request gave no answer to replay)."""
        return bool(sql(tx).execute(t.delete().where(_claimed(principal, key, token))).rowcount)


#: The one instance (stateless); ``Database.idempotency`` is this.
store: IdempotencyStore = SqlIdempotency()
