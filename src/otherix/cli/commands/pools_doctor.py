"""``otherix pool doctor``: what a pool instance holds that nobody owns, and what it misses
(issue 16, drift).

Shows the node agent's last drift scan of the instance (``GET .../drift``): orphans in
``vms/`` (no VM owns them; an orphan disk file can be adopted with ``otherix vm
import``), strays in ``images/`` and ``scratch/``, and the VM disks the agent cannot
find (missing), each with its size, age and the action to take (admin, operator).
``--purge`` removes the orphans and strays listed (admin, like ``pool delete``): it
lists them and asks first unless ``--force`` (and refuses without a terminal), then a
``storage_pool.drift_purge`` task in which the agent checks each path again and keeps
what became owned meanwhile; ``--wait`` prints what went and what was kept. A pool is
addressed like ``pool scrub``: a UUID, a unique name, or a name plus ``--node``.
"""

from __future__ import annotations

from typing import Any

import click

from otherix.cli.commands.common import (
    force_option,
    output_option,
    render_object,
    require_confirmation,
    validate_output,
)
from otherix.cli.commands.pool_targets import ambiguous_error, resolve_target
from otherix.cli.context import CliContext, get_context
from otherix.cli.output import human_bytes, render_table, wire
from otherix.cli.progress import follow_pool_task, parse_timeout
from otherix.client.api import ApiClient
from otherix.client.errors import PoolNameAmbiguousError
from otherix.durations import format_duration

__all__ = ["doctor_pool"]


def _age(item: dict[str, Any]) -> str:
    age = item.get("age_seconds")
    return format_duration(float(age)) if isinstance(age, int) and age >= 0 else "-"


def _size(item: dict[str, Any]) -> str:
    size = item.get("size_bytes")
    return human_bytes(size) if isinstance(size, int) else "-"


def _text(view: dict[str, Any]) -> str:
    items = view.get("items") or []
    head = f"pool {view.get('pool')} on node {view.get('node')} ({view.get('path')})"
    if not view.get("reported"):
        return f"{head}: no drift report from its agent yet\n"
    if not items:
        return f"{head}: no drift (nothing orphaned, stray or missing)\n"
    rows = [
        [
            str(i.get("kind")),
            str(i.get("path")) + (f" (vm {i.get('vm')})" if i.get("vm") else ""),
            _size(i),
            _age(i),
            str(i.get("action")),
        ]
        for i in items
    ]
    out = f"{head}:\n" + render_table(("KIND", "PATH", "SIZE", "AGE", "ACTION"), rows)
    if view.get("more"):
        out += f"... and {view.get('more')} more not listed (purge some, then look again)\n"
    return out


def _purge(
    ctx: CliContext, api: ApiClient, ref: str, label: str, view: dict[str, Any], force: bool
) -> tuple[str, list[str]] | None:
    paths = [str(i["path"]) for i in view.get("items") or [] if i.get("kind") != "missing"]
    if not paths:
        ctx.line(f"pool {label}: nothing to purge")
        return None
    ctx.warn(f"will remove from pool {label}:")
    for i in view.get("items") or []:
        if i.get("kind") != "missing":
            ctx.warn(f"  {i.get('kind')} {i.get('path')} ({_size(i)})")
    require_confirmation(ctx, f"purge {len(paths)} item(s) from pool {label}", force=force)
    return api.purge_drift(ref, paths).task_id, paths


@click.command("doctor")
@click.argument("ref", metavar="POOL")
@click.option("--node", metavar="NAME", help="With a NAME: that node's instance.")
@click.option("--purge", is_flag=True, help="Remove the orphans and strays listed (admin).")
@force_option("With --purge: skip the confirmation prompt.")
@click.option("--wait", is_flag=True, help="With --purge: wait and print what went.")
@click.option("--wait-timeout", default="5m", show_default=True, metavar="DURATION")
@output_option("text", ("text", "json", "yaml"))
def doctor_pool(
    ref: str,
    node: str | None,
    purge: bool,
    force: bool,
    wait: bool,
    wait_timeout: str,
    output: str,
) -> None:
    """Show what a pool instance holds that no VM owns, and the VM disks it
    misses (admin, operator), each with what to do about it. With --purge,
    remove the orphans and strays (admin); the agent checks each again first
    and keeps whatever a VM came to own meanwhile.

    \b
    Example:
      otherix pool doctor default --node node-a
      otherix pool doctor default --node node-a --purge --force --wait
    """
    fmt = validate_output(output, ("text", "json", "yaml"))
    limit = parse_timeout("--wait-timeout", wait_timeout)
    ctx = get_context()
    api = ctx.client()
    target = resolve_target(api, ref, node)
    try:
        view = wire(api.pool_drift(target.ref))
        if not purge:
            ctx.write(render_object(view, fmt) if fmt != "text" else _text(view))
            return
        started = _purge(ctx, api, target.ref, target.label, view, force)
    except PoolNameAmbiguousError as exc:
        raise ambiguous_error(api, target.ref, exc) from exc
    if started is None:
        return
    task_id, _paths = started
    if not wait:
        ctx.line(f"purge of pool {target.label} queued: task {task_id}")
        return
    task = follow_pool_task(
        ctx, api, task_id, timeout=limit, task="purge", command="pool doctor --purge"
    )
    result = task.get("result") or {}
    if fmt != "text":
        ctx.write(render_object(result, fmt))
        return
    for item in result.get("removed") or []:
        ctx.line(f"removed {item.get('path')} ({human_bytes(item.get('size_bytes'))})")
    for item in result.get("kept") or []:
        ctx.line(f"kept {item.get('path')}: {item.get('reason')}")
    removed = result.get("removed") or []
    ctx.line(f"removed {len(removed)} item(s), {human_bytes(result.get('bytes') or 0)}")
