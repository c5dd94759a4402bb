"""The cluster id a database holds, read before any migration runs.

Called at start by ``otherix.api.datadir`` to compare the database with the
data directory's marker, so an empty or foreign database is found before
anything is written to it.
"""

from __future__ import annotations

import sqlalchemy as sa

from otherix.store.engine import Database
from otherix.store.ports.settings import CLUSTER_ID
from otherix.store.settings import store as settings
from otherix.store.tx import sql


def stored_cluster_id(db: Database) -> str | None:
    """The database's ``cluster_settings.cluster_id``; None when it has none
    (no tables yet: a new, dropped or wrong database)."""
    with db.read() as tx:
        if not sa.inspect(sql(tx)).has_table("cluster_settings"):
            return None
        return settings.get_setting(tx, CLUSTER_ID)
