"""``otherix pool cache``: a pool instance's image cache (docs/pool-contract.md §10.3).

``list`` shows what the node's agent last reported (image, size, last used, the VMs
whose disk was made from it, pinned) and the pool's cache limits; ``pin`` / ``unpin``
change ``config.cache.pinned`` (admin); ``prune`` asks the agent to evict every entry
that may go now (admin), ``--dry-run`` to only list them, ``--wait`` to print what it
evicted; ``quarantine list|clear`` (``pools_quarantine``) shows and deletes what a scrub
quarantined. A pool is addressed like ``pool scan``: a UUID, a unique name, or a name plus
``--node``.
"""

from __future__ import annotations

from typing import Any

import click

from otherix.cli.commands.common import output_option, render_object, validate_output
from otherix.cli.commands.pool_targets import ambiguous_error, resolve_target
from otherix.cli.commands.pools_quarantine import quarantine
from otherix.cli.context import get_context
from otherix.cli.output import human_bytes, render_table, wire
from otherix.cli.progress import follow_pool_task, parse_timeout
from otherix.client.errors import PoolNameAmbiguousError
from otherix.durations import format_duration

__all__ = ["cache"]

_NODE = click.option("--node", metavar="NAME", help="With a NAME: that node's instance.")


@click.group("cache")
def cache() -> None:
    """A pool's image cache: list, pin, unpin, prune, quarantine.

    The agent evicts least-recently-used images no running VM needs when the
    pool's config.cache limits are crossed (max_bytes, min_free_percent,
    min_age); pinned images are never evicted.

    \b
    Example:
      otherix pool cache list default --node node-a
      otherix pool cache pin default debian-12.qcow2 --node node-a
      otherix pool cache prune default --node node-a --dry-run --wait
      otherix pool cache quarantine list default --node node-a
    """


cache.add_command(quarantine)


def _text(view: dict[str, Any]) -> str:
    policy = view.get("policy") or {}
    cap = policy.get("max_bytes")
    head = (
        f"pool {view.get('pool')} on node {view.get('node')}: "
        f"max {human_bytes(cap) if cap is not None else 'no cap'}, "
        f"keep {policy.get('min_free_percent')}% free, "
        f"min age {format_duration(float(policy.get('min_age_seconds') or 0))}\n"
    )
    rows = [
        [
            str(i.get("name")),
            human_bytes(i.get("size_bytes")),
            str(i.get("last_used_at") or "-"),
            ",".join(i.get("vms") or []) or "-",
            "yes" if i.get("pinned") else "no",
        ]
        for i in view.get("images") or []
    ]
    return head + render_table(("IMAGE", "SIZE", "LAST USED", "VMS", "PINNED"), rows)


@cache.command("list")
@click.argument("ref", metavar="POOL")
@_NODE
@output_option("table", ("table", "json"))
def list_cache(ref: str, node: str | None, output: str) -> None:
    """List a pool instance's cached images.

    \b
    Example:
      otherix pool cache list default --node node-a
    """
    fmt = validate_output(output, ("table", "json"))
    ctx = get_context()
    api = ctx.client()
    target = resolve_target(api, ref, node)
    try:
        view = wire(api.pool_cache(target.ref))
    except PoolNameAmbiguousError as exc:
        raise ambiguous_error(api, target.ref, exc) from exc
    ctx.write(render_object(view, fmt) if fmt == "json" else _text(view))


def _pin(ref: str, image: str, node: str | None, *, pinned: bool) -> None:
    ctx = get_context()
    api = ctx.client()
    target = resolve_target(api, ref, node)
    try:
        api.pin_image(target.ref, image, pinned=pinned)
    except PoolNameAmbiguousError as exc:
        raise ambiguous_error(api, target.ref, exc) from exc
    ctx.line(f"image {image} {'pinned' if pinned else 'unpinned'} in pool {target.label}")


@cache.command("pin")
@click.argument("ref", metavar="POOL")
@click.argument("image")
@_NODE
def pin_image(ref: str, image: str, node: str | None) -> None:
    """Never evict IMAGE from the pool's cache (admin). It must be cached.

    \b
    Example:
      otherix pool cache pin default debian-12.qcow2 --node node-a
    """
    _pin(ref, image, node, pinned=True)


@cache.command("unpin")
@click.argument("ref", metavar="POOL")
@click.argument("image")
@_NODE
def unpin_image(ref: str, image: str, node: str | None) -> None:
    """Let IMAGE be evicted again (admin).

    \b
    Example:
      otherix pool cache unpin default debian-12.qcow2 --node node-a
    """
    _pin(ref, image, node, pinned=False)


@cache.command("prune")
@click.argument("ref", metavar="POOL")
@_NODE
@click.option("--dry-run", is_flag=True, help="Only list what would be evicted.")
@click.option("--wait", is_flag=True, help="Wait for the agent and print what went.")
@click.option("--wait-timeout", default="1m", show_default=True, metavar="DURATION")
def prune_cache(ref: str, node: str | None, dry_run: bool, wait: bool, wait_timeout: str) -> None:
    """Evict every cached image that may go now (admin): not pinned, not the
    image of a running VM nor a disk's backing file, unused for min_age.

    \b
    Example:
      otherix pool cache prune default --node node-a --dry-run --wait
    """
    limit = parse_timeout("--wait-timeout", wait_timeout)
    ctx = get_context()
    api = ctx.client()
    target = resolve_target(api, ref, node)
    try:
        accepted = api.prune_cache(target.ref, dry_run=dry_run)
    except PoolNameAmbiguousError as exc:
        raise ambiguous_error(api, target.ref, exc) from exc
    if not wait:
        ctx.line(f"prune of pool {target.label} queued: task {accepted.task_id}")
        return
    task = follow_pool_task(
        ctx, api, accepted.task_id, timeout=limit, task="prune", command="pool cache prune"
    )
    result = task.get("result") or {}
    evicted = result.get("evicted") or []
    verb = "would evict" if dry_run else "evicted"
    for item in evicted:
        ctx.line(f"{verb} {item.get('image')} ({human_bytes(item.get('size_bytes'))})")
    ctx.line(f"{verb} {len(evicted)} image(s), {human_bytes(result.get('bytes') or 0)}")
