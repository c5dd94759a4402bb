"""Cluster settings (a key/value singleton): ``SqlSettings`` implements
``ports.settings.SettingsStore``. The Idempotency-Key records are
``store/idempotency.py``'s."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
import sqlalchemy.exc as sa_exc

from otherix.store.ports.settings import SettingsStore
from otherix.store.schema import cluster_settings
from otherix.store.tx import Tx, sql


class SqlSettings:
    """:class:`SettingsStore` in SQLAlchemy Core, for both backends."""

    def get_setting(self, tx: Tx, key: str) -> str | None:
        stmt = sa.select(cluster_settings.c.value).where(cluster_settings.c.key == key)
        return sql(tx).execute(stmt).scalar_one_or_none()

    def has_setting(self, tx: Tx, key: str) -> bool:
        stmt = sa.select(cluster_settings.c.key).where(cluster_settings.c.key == key)
        return sql(tx).execute(stmt).first() is not None

    def put_setting(self, tx: Tx, key: str, value: str | None, now: datetime) -> None:
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
                sql(tx).execute(
                    cluster_settings.insert().values(key=key, value=value, updated_at=now)
                )
        except sa_exc.IntegrityError:
            sql(tx).execute(update)

    def ensure_setting(self, tx: Tx, key: str, value: str, now: datetime) -> str:
        """The stored value of ``key``, writing ``value`` first when the key is absent.

        Concurrent first writers (replicas starting together) all get the one
        value that won the insert."""
        current = self.get_setting(tx, key)
        if current is not None:
            return current
        try:
            with sql(tx).begin_nested():
                sql(tx).execute(
                    cluster_settings.insert().values(key=key, value=value, updated_at=now)
                )
        except sa_exc.IntegrityError:
            pass
        stored = self.get_setting(tx, key)
        assert stored is not None
        return stored


#: The one instance (stateless). ``Database.settings`` is this.
store: SettingsStore = SqlSettings()
