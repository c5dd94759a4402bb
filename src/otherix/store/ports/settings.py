"""The cluster settings aggregate: a key/value singleton (``cluster_settings``)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from otherix.store.tx import Tx

#: The cluster default pool: a pool *name* (``services.defaultpool``).
DEFAULT_POOL_NAME = "default_pool_name"
#: The cluster's identity, made once at the first start on an empty store and
#: never changed: pool identity markers and the data-directory marker carry it.
CLUSTER_ID = "cluster_id"


class SettingsStore(Protocol):
    """Cluster-wide settings by key; a value may be None (set, and empty)."""

    def get_setting(self, tx: Tx, key: str) -> str | None: ...
    def has_setting(self, tx: Tx, key: str) -> bool: ...
    def put_setting(self, tx: Tx, key: str, value: str | None, now: datetime) -> None: ...
    def ensure_setting(self, tx: Tx, key: str, value: str, now: datetime) -> str: ...
