"""Cluster settings (a key/value singleton) and the Idempotency-Key cache."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from otherix.store.schema import cluster_settings, idempotency_keys
from otherix.store.tx import Tx, sql

DEFAULT_POOL_NAME = "default_pool_name"
#: The cluster's identity, made once at the first start on an empty store and
#: never changed: pool identity markers and the data-directory marker carry it.
CLUSTER_ID = "cluster_id"


def get_setting(tx: Tx, key: str) -> str | None:
    stmt = sa.select(cluster_settings.c.value).where(cluster_settings.c.key == key)
    return sql(tx).execute(stmt).scalar_one_or_none()


def has_setting(tx: Tx, key: str) -> bool:
    stmt = sa.select(cluster_settings.c.key).where(cluster_settings.c.key == key)
    return sql(tx).execute(stmt).first() is not None


def put_setting(tx: Tx, key: str, value: str | None, now: datetime) -> None:
    """Upsert: update, else insert; an insert that loses a race to a concurrent
    first write (another replica seeding at start) falls back to the update."""
    update = (
        cluster_settings.update()
        .where(cluster_settings.c.key == key)
        .values(value=value, updated_at=now)
    )
    if sql(tx).execute(update).rowcount:
        return
    try:
        with sql(tx).begin_nested():
            sql(tx).execute(cluster_settings.insert().values(key=key, value=value, updated_at=now))
    except sa_exc.IntegrityError:
        sql(tx).execute(update)


def ensure_setting(tx: Tx, key: str, value: str, now: datetime) -> str:
    """The stored value of ``key``, writing ``value`` first when the key is absent.

    Concurrent first writers (replicas starting together) all get the one
    value that won the insert."""
    current = get_setting(tx, key)
    if current is not None:
        return current
    try:
        with sql(tx).begin_nested():
            sql(tx).execute(cluster_settings.insert().values(key=key, value=value, updated_at=now))
    except sa_exc.IntegrityError:
        pass
    stored = get_setting(tx, key)
    assert stored is not None
    return stored


def get_idempotent(tx: Tx, principal: str, key: str) -> dict[str, Any] | None:
    stmt = sa.select(idempotency_keys).where(
        idempotency_keys.c.principal == principal, idempotency_keys.c.key == key
    )
    row = sql(tx).execute(stmt).mappings().first()
    return dict(row) if row else None


def put_idempotent(tx: Tx, row: dict[str, Any]) -> None:
    sql(tx).execute(idempotency_keys.insert().values(**row))


def complete_idempotent(
    tx: Tx, principal: str, key: str, status_code: int, content_type: str, body: bytes
) -> None:
    """Store the answer into a claimed (pending) key."""
    sql(tx).execute(
        idempotency_keys.update()
        .where(idempotency_keys.c.principal == principal, idempotency_keys.c.key == key)
        .values(status_code=status_code, content_type=content_type, body=body)
    )


def delete_idempotent(tx: Tx, principal: str, key: str) -> None:
    sql(tx).execute(
        idempotency_keys.delete().where(
            idempotency_keys.c.principal == principal, idempotency_keys.c.key == key
        )
    )


def delete_idempotent_before(tx: Tx, cutoff: datetime) -> int:
    stmt = idempotency_keys.delete().where(idempotency_keys.c.created_at < cutoff)
    return sql(tx).execute(stmt).rowcount
