"""``otherix pool cache quarantine``: the cache entries a scrub found damaged (issue 16).

``list`` shows what the instance's agent last reported of its ``quarantine/`` (the
``scrub.quarantined`` of ``pool get``); ``clear`` asks the agent to delete the
quarantined entries of the images named, or all of them (a
``storage_pool.quarantine_clear`` task, admin), after the operator looked at them: it
lists what goes and asks first on a terminal, refuses without one unless ``--force``,
and with ``--wait`` prints what the agent deleted. A pool is addressed like ``pool
scan``: a UUID, a unique name, or a name plus ``--node``.
"""

from __future__ import annotations

import click

from otherix.cli.commands.common import (
    force_option,
    output_option,
    render_object,
    require_confirmation,
    validate_output,
)
from otherix.cli.commands.pool_targets import ambiguous_error, instances_of, resolve_target
from otherix.cli.context import CliError, get_context
from otherix.cli.output import render_table, wire
from otherix.cli.progress import follow_pool_task, parse_timeout
from otherix.client.api import ApiClient
from otherix.client.errors import PoolNameAmbiguousError
from otherix.models.pools import QuarantinedImageView, StoragePool

__all__ = ["quarantine"]

_NODE = click.option("--node", metavar="NAME", help="With a NAME: that node's instance.")


@click.group("quarantine")
def quarantine() -> None:
    """Cached images a scrub found damaged: list them, clear them.

    A scrub moves an image whose bytes no longer match its sha256 to the
    pool's quarantine/ directory; it is never used again nor deleted unasked.
    Look at it, then clear it.

    \b
    Example:
      otherix pool cache quarantine list default --node node-a
      otherix pool cache quarantine clear default debian-12.qcow2 --node node-a
    """


def _instance(api: ApiClient, ref: str) -> StoragePool:
    found = api.get_pool(ref)
    if isinstance(found, StoragePool):
        return found
    instances = instances_of(found)
    if len(instances) != 1:
        nodes = ", ".join(sorted(i.node for i in instances)) or "<none>"
        raise CliError(
            f'pool "{ref}" has {len(instances)} instances (nodes: {nodes}); add --node or '
            "use the instance UUID"
        )
    return instances[0]


def _quarantined(api: ApiClient, ref: str) -> tuple[StoragePool, list[QuarantinedImageView]]:
    pool = _instance(api, ref)
    return pool, list(pool.scrub.quarantined) if pool.scrub else []


@quarantine.command("list")
@click.argument("ref", metavar="POOL")
@_NODE
@output_option("table", ("table", "json"))
def list_quarantine(ref: str, node: str | None, output: str) -> None:
    """List a pool instance's quarantined cache entries.

    \b
    Example:
      otherix pool cache quarantine list default --node node-a
    """
    fmt = validate_output(output, ("table", "json"))
    ctx = get_context()
    api = ctx.client()
    target = resolve_target(api, ref, node)
    pool, items = _quarantined(api, target.ref)
    if fmt == "json":
        body = {"pool": pool.name, "node": pool.node, "quarantined": [wire(q) for q in items]}
        ctx.write(render_object(body, fmt))
        return
    rows = [
        [q.image, q.quarantined_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
         q.sha256_expected or "-", q.sha256_found or "-", q.path]
        for q in items
    ]  # fmt: skip
    ctx.line(f"pool {pool.name} on node {pool.node}: {len(items)} quarantined")
    if rows:
        ctx.write(render_table(("IMAGE", "QUARANTINED", "EXPECTED", "FOUND", "PATH"), rows))


@quarantine.command("clear")
@click.argument("ref", metavar="POOL")
@click.argument("images", metavar="[IMAGE]...", nargs=-1)
@_NODE
@force_option("Skip the confirmation prompt.")
@click.option("--wait", is_flag=True, help="Wait for the agent and print what it deleted.")
@click.option("--wait-timeout", default="1m", show_default=True, metavar="DURATION")
def clear_quarantine(
    ref: str, images: tuple[str, ...], node: str | None, force: bool, wait: bool,
    wait_timeout: str,
) -> None:  # fmt: skip
    """Delete a pool instance's quarantined cache entries (admin): those of
    the IMAGEs named, or every one. Asks first on a terminal and refuses
    without one, unless --force.

    \b
    Example:
      otherix pool cache quarantine clear default debian-12.qcow2 --node node-a
      otherix pool cache quarantine clear default --node node-a --force --wait
    """
    limit = parse_timeout("--wait-timeout", wait_timeout)
    ctx = get_context()
    api = ctx.client()
    target = resolve_target(api, ref, node)
    pool, items = _quarantined(api, target.ref)
    listed = {q.image for q in items}
    missing = sorted(set(images) - listed)
    if missing:
        raise CliError(
            f'image {missing[0]} is not in the quarantine of pool "{pool.name}" on node '
            f"{pool.node}; see 'otherix pool cache quarantine list {pool.name} --node "
            f"{pool.node}'"
        )
    going = [q for q in items if not images or q.image in images]
    if not going:
        ctx.line(f"nothing is quarantined in pool {target.label}")
        return
    for q in going:
        ctx.warn(f"will delete {q.path} ({q.image})")
    require_confirmation(
        ctx,
        f"delete {len(going)} quarantined entr{'y' if len(going) == 1 else 'ies'}",
        force=force,
        question=f"delete {len(going)} quarantined cache entries of pool {target.label}?",
    )
    try:
        accepted = api.clear_quarantine(pool.id, sorted(set(images)))
    except PoolNameAmbiguousError as exc:
        raise ambiguous_error(api, target.ref, exc) from exc
    if not wait:
        ctx.line(f"quarantine clear of pool {target.label} queued: task {accepted.task_id}")
        return
    task = follow_pool_task(
        ctx,
        api,
        accepted.task_id,
        timeout=limit,
        task="quarantine clear",
        command="pool cache quarantine clear",
    )
    cleared = (task.get("result") or {}).get("cleared") or []
    for item in cleared:
        ctx.line(f"deleted {item.get('path')} ({item.get('image')})")
    ctx.line(f"deleted {len(cleared)} quarantined entr{'y' if len(cleared) == 1 else 'ies'}")
