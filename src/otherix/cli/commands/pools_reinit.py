"""``otherix pool reinit``: start a pool afresh after its identity check failed (admin).

Owns the one command over ``POST /v1/storage-pools/{id}/reinit``. A pool is
addressed like ``pool delete`` (a UUID, a unique name, or a name with
``--node``). It asks ``reinitialise storage pool <label>? [y/N]: `` when
stdin is a terminal and ``--force`` is absent (as ``pool delete``); ``aborted``
then goes to stdout. A refusal (409) prints why: the VM disks that block it
(with the VM names, best-effort), or the pool's state and reason. The new
status is ``pending`` until the agent has written the new marker; the
command prints it and how to watch it.
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
from otherix.cli.commands.pool_targets import ambiguous_error, resolve_target
from otherix.cli.commands.pools_write import vm_names
from otherix.cli.context import CliError, get_context
from otherix.client.errors import ApiError, ConflictError, PoolNameAmbiguousError

__all__ = ["reinit_pool"]


def _refusal(exc: ApiError, label: str, vms: list[str]) -> str:
    blocking = exc.details.get("blocking_resources") or {}
    if blocking:
        disks = blocking.get("vm_disks", 0)
        named = f" ({', '.join(vms)})" if vms else ""
        return (
            f"pool {label} holds {disks} VM disk(s){named}: mount its disk back "
            "(the pool turns ready by itself), or delete those VMs first"
        )
    return f"cannot reinitialise pool {label}: {exc.message}"


@click.command("reinit")
@click.argument("ref", metavar="NAME|UUID")
@click.option("--node", metavar="NAME", help="With a NAME: reinitialise that node's instance.")
@force_option("Skip the confirmation prompt.")
@output_option("text", ("text", "json"))
def reinit_pool(ref: str, node: str | None, force: bool, output: str) -> None:
    """Start a failed pool afresh: its agent writes a new identity marker (admin).

    For a pool whose directory, identity marker or device is gone
    (pool_missing, pool_identity_mismatch, pool_device_changed). Such a pool
    is never re-created on its own; this tells the agent to materialise it
    anew (the directory if missing, a new marker). Refused while VM disks
    reference the pool, and for a pool that is not failed for one of those
    reasons. A foreign marker (another pool's or cluster's) is never
    overwritten: move it away first. Asks for confirmation when stdin is a
    terminal, unless --force.

    \b
    Example:
      otherix pool reinit fast --node node-a
      otherix pool reinit 8b1d2c3e-… --force
    """
    fmt = validate_output(output, ("text", "json"))
    ctx = get_context()
    api = ctx.client()
    target = resolve_target(api, ref, node)
    require_confirmation(ctx, f"reinitialise storage pool {target.label}", force=force)
    try:
        pool = api.reinit_pool(target.ref)
    except ApiError as exc:
        if isinstance(exc, PoolNameAmbiguousError):
            raise ambiguous_error(api, target.ref, exc) from exc
        if isinstance(exc, ConflictError):
            blocked = bool(exc.details.get("blocking_resources"))
            vms = vm_names(api, target.ref) if blocked else []
            raise CliError(_refusal(exc, target.label, vms)) from exc
        raise
    if fmt == "json":
        ctx.write(render_object(pool, fmt))
        return
    ctx.line(f"pool {target.label} reinitialised")
    ctx.line(f"reconciliation_status: {pool.reconciliation_status}")
    ctx.line(f"watch it with: otherix pool get {pool.id}")
