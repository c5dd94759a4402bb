"""``otherix pool``: the storage-pool command group (docs/pool-contract.md §11.4).

Owns the group and its help text; the commands live in ``pools_read``
(list, get), ``pools_write`` (create, delete), ``pools_ops`` (update,
scan), ``pools_reinit`` (reinit), ``pools_scrub`` (scrub), ``pools_cache``
(cache) and ``pools_history`` (history), sharing instance addressing from
``pool_targets``. Mounted by
``otherix.cli.main``.
"""

from __future__ import annotations

import click

from otherix.cli.commands.pools_cache import cache
from otherix.cli.commands.pools_doctor import doctor_pool
from otherix.cli.commands.pools_history import pool_history
from otherix.cli.commands.pools_ops import cordon_pool, scan_pool, uncordon_pool, update_pool
from otherix.cli.commands.pools_read import get_pool, list_pools
from otherix.cli.commands.pools_reinit import reinit_pool
from otherix.cli.commands.pools_scrub import scrub_pool
from otherix.cli.commands.pools_write import create_pool, delete_pool

__all__ = ["pool"]


@click.group("pool")
def pool() -> None:
    """Manage storage pools: per-node directories that hold VM disks.

    A pool NAME is cluster-wide (like a StorageClass); each (name, node)
    instance is one directory on one node (like a PersistentVolume). list
    shows one row per instance; get NAME aggregates them; create and delete
    act on one instance per call.

    \b
    Example:
      otherix pool create default --node node-a --path /var/lib/otherix/pools/default
      otherix pool list
      otherix pool delete default --node node-a
    """


for _command in (list_pools, get_pool, create_pool, delete_pool, update_pool, scan_pool):
    pool.add_command(_command)
pool.add_command(reinit_pool)
pool.add_command(cache)
pool.add_command(cordon_pool)
pool.add_command(uncordon_pool)
pool.add_command(scrub_pool)
pool.add_command(doctor_pool)  # drift (issue 16)
pool.add_command(pool_history)  # time to full (issue 16.6)
