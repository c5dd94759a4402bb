"""Cluster settings (a key/value singleton). The Idempotency-Key records are
``store/idempotency.py``'s."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from otherix.store.schema import cluster_settings
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
