"""``otherix pool scrub``: re-hash a pool instance's image cache now (issue 16).

Asks the node's agent (a ``storage_pool.scrub`` task, admin or operator, like ``pool
scan``) to re-hash every cached image against its sidecar at the pool's
``scrub.max_bytes_per_second``; a mismatch is moved to the pool's ``quarantine/``.
``--wait`` follows the task (bytes done of total, on a TTY) and prints what was
quarantined. Not ``pool scan``, which only re-reads the pool's free space. A pool is
addressed like ``pool scan``: a UUID, a unique name, or a name plus ``--node``.
"""

from __future__ import annotations

import click

from otherix.cli.commands.pool_targets import ambiguous_error, resolve_target
from otherix.cli.context import get_context
from otherix.cli.output import human_bytes
from otherix.cli.progress import follow_pool_task, parse_timeout
from otherix.client.errors import PoolNameAmbiguousError

__all__ = ["scrub_pool"]


@click.command("scrub")
@click.argument("ref", metavar="POOL")
@click.option("--node", metavar="NAME", help="With a NAME: that node's instance.")
@click.option("--wait", is_flag=True, help="Wait for the agent and print what it found.")
@click.option("--wait-timeout", default="1h", show_default=True, metavar="DURATION")
def scrub_pool(ref: str, node: str | None, wait: bool, wait_timeout: str) -> None:
    """Re-hash every cached image of a pool against its sha256 now (admin,
    operator). A damaged image is moved to the pool's quarantine/ directory,
    never deleted and never used again: the next VM that needs it downloads it
    afresh. The agent also scrubs on the pool's config.scrub.interval (7d).

    \b
    Example:
      otherix pool scrub default --node node-a --wait
    """
    limit = parse_timeout("--wait-timeout", wait_timeout)
    ctx = get_context()
    api = ctx.client()
    target = resolve_target(api, ref, node)
    try:
        accepted = api.scrub_pool(target.ref)
    except PoolNameAmbiguousError as exc:
        raise ambiguous_error(api, target.ref, exc) from exc
    if not wait:
        ctx.line(f"scrub of pool {target.label} queued: task {accepted.task_id}")
        return
    task = follow_pool_task(
        ctx, api, accepted.task_id, timeout=limit, task="scrub", command="pool scrub"
    )
    result = task.get("result") or {}
    quarantined = result.get("quarantined") or []
    for item in quarantined:
        ctx.line(
            f"quarantined {item.get('image')}: expected sha256 {item.get('sha256_expected')}, "
            f"found {item.get('sha256_found') or '?'}; moved to {item.get('path')}"
        )
    ctx.line(
        f"scrubbed {result.get('entries', 0)} image(s), "
        f"{human_bytes(result.get('bytes') or 0)}: {len(quarantined)} quarantined"
    )
