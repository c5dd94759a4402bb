"""``otherix pool create`` and ``otherix pool delete`` (docs/pool-contract.md §11.3, §11.4).

Owns the two commands that add or remove one (name, node) instance.

``create`` sends ``{node, name, type, path}`` (no ``config``), turns a 409 on
the name into an "already exists" error that points at ``otherix pool get
<name>`` (any other 409, such as ``pool_path_overlap``, shows the server's
sentence),
and with ``--wait`` polls the new instance by id until its reconciliation
status is ``ready`` or ``failed`` (60 s; backoff in ``otherix.cli.wait``).
The ``waiting for agent reconciliation (timeout 1m0s)…`` line goes to stderr
so stdout carries only the result.

``delete`` resolves ``--node`` client-side, follows the destructive-command
rule (``commands.common``: asks ``delete storage pool <label>? [y/N]: `` on
a TTY, refuses without one, unless ``--force``), and renders the blocked
(409) and ambiguous (400) answers in text or JSON before failing with exit 1.

Choices docs/pool-contract.md leaves open: after a failed or timed-out wait the
created pool is still printed (stdout) before the error (stderr), so the
operator sees what exists; the delete prompt and the answer echo go to
stderr.
"""

from __future__ import annotations

from typing import Any, NoReturn

import click

from otherix.cli.commands.common import (
    force_option,
    output_option,
    render_object,
    require_confirmation,
    show_ids_option,
    validate_output,
)
from otherix.cli.commands.pool_targets import (
    AMBIGUOUS,
    Target,
    ambiguous_instances,
    resolve_target,
)
from otherix.cli.context import CliContext, CliError, get_context
from otherix.cli.output import wire
from otherix.cli.views.pools import ambiguous_text, blocked_delete_text
from otherix.cli.wait import poll
from otherix.client.api import ApiClient
from otherix.client.errors import (
    ApiError,
    ClientError,
    ConflictError,
    DeleteBlockedError,
    PoolNameAmbiguousError,
)
from otherix.durations import format_duration
from otherix.models.pools import StoragePool

__all__ = ["WAIT_TIMEOUT", "create_pool", "delete_pool", "vm_names"]

#: How long ``create --wait`` waits for the agent (docs/pool-contract.md: 60 s).
WAIT_TIMEOUT = 60.0


def _created_text(pool: StoragePool, node: str, show_ids: bool) -> str:
    shown = wire(pool)  # times as the server wrote them
    lines = [f"pool {pool.name} created on node {pool.node or node}"]
    if show_ids:
        lines.append(f"id: {pool.id}")
    lines.append(f"type: {pool.type}")
    lines.append(f"path: {pool.path}")
    lines.append(f"reconciliation_status: {pool.reconciliation_status}")
    for key in ("last_reconciled_at", "reconciliation_error"):
        if shown[key]:
            lines.append(f"{key}: {shown[key]}")
    return "".join(f"{line}\n" for line in lines)


def _wait_ready(ctx: CliContext, api: ApiClient, pool: StoragePool) -> tuple[StoragePool, str]:
    """Poll until ready/failed; returns the last view and an error ("" if ready)."""
    timeout = format_duration(WAIT_TIMEOUT)
    ctx.warn(f"waiting for agent reconciliation (timeout {timeout})…")
    outcome = poll(
        lambda: api.get_pool_instance(pool.id),
        lambda p: p.reconciliation_status in ("ready", "failed"),
        timeout=WAIT_TIMEOUT,
        sleep=ctx.sleep,
        monotonic=ctx.monotonic,
    )
    last = outcome.value
    status = last.reconciliation_status
    if status == "failed":
        return last, f"pool reconciliation failed: {last.reconciliation_error or 'unknown'}"
    if not outcome.done:
        name = last.name
        return last, (
            f"pool {name} did not reach 'ready' within {timeout} "
            f"(last status \"{status}\"); check it with 'otherix pool get {name}'"
        )
    return last, ""


@click.command("create")
@click.argument("name")
@click.option("--node", required=True, metavar="NAME", help="Owning node name (not a UUID).")
@click.option("--path", required=True, help="Absolute directory on that node (on the allowlist).")
@click.option("--type", "pool_type", default="local_dir", show_default=True, help="Pool type.")
@click.option("--wait", is_flag=True, help="Wait (up to 1m) until the agent reports ready.")
@output_option("text", ("text", "json"))
@show_ids_option
def create_pool(
    name: str, node: str, path: str, pool_type: str, wait: bool, output: str, show_ids: bool
) -> None:
    """Create one pool instance NAME on one node (admin).

    Not idempotent: the same (name, node) twice is an error. Run once per
    node to put a name on several nodes.

    \b
    Example:
      otherix pool create default --node node-a \\
        --path /var/lib/otherix/pools/default --wait
    """
    fmt = validate_output(output, ("text", "json"))
    ctx = get_context()
    api = ctx.client()
    body = {"node": node, "name": name, "type": pool_type, "path": path}
    try:
        pool = api.create_pool(body)
    except ConflictError as exc:
        if not exc.name_taken:
            raise  # e.g. pool_path_overlap: the server's sentence names the other pool
        raise CliError(
            f'pool "{name}" already exists on node "{node}" '
            f"(inspect it with 'otherix pool get {name}' or choose a different name)"
        ) from exc
    failure = ""
    if wait:
        pool, failure = _wait_ready(ctx, api, pool)
    if fmt == "json":
        ctx.write(render_object(pool, fmt))
    else:
        ctx.write(_created_text(pool, node, show_ids))
    if failure:
        raise CliError(failure)


def vm_names(api: ApiClient, pool_ref: str) -> list[str]:
    """Names of VMs with a disk on the pool, best-effort (``[]`` on any error).

    ``?pool=`` also matches VMs not placed yet that ask for the pool; they
    hold no disk (``pool_id`` null), so they are left out.
    """
    try:
        body = api.json("GET", "/v1/vms", params={"pool": pool_ref, "limit": 200})
        return [
            str(vm["name"])
            for vm in body["data"]
            if vm.get("name") and ("pool_id" not in vm or vm["pool_id"])
        ]
    except (ClientError, KeyError, TypeError, AttributeError, ValueError):
        return []


def _blocked(ctx: CliContext, api: ApiClient, target: Target, exc: ApiError, fmt: str) -> NoReturn:
    blocking = exc.details.get("blocking_resources") or {}
    vms = vm_names(api, target.ref)
    if fmt == "json":
        out: dict[str, Any] = {
            "deleted": False,
            "identifier": target.label,
            "code": exc.code,
            "blocking_resources": blocking,
        }
        if vms:
            out["vms"] = vms
        ctx.write(render_object(out, fmt))
    else:
        ctx.write(blocked_delete_text(target.label, blocking, vms))
    raise CliError(f"pool {target.label} blocked: {exc.code}") from exc


def _ambiguous(
    ctx: CliContext, api: ApiClient, target: Target, exc: ApiError, fmt: str
) -> NoReturn:
    instances = ambiguous_instances(api, target.ref, exc)
    if fmt == "json":
        out = {
            "deleted": False,
            "identifier": target.label,
            "code": AMBIGUOUS,
            "instances": [{"node": i.get("node", ""), "id": i.get("id", "")} for i in instances],
        }
        ctx.write(render_object(out, fmt))
    else:
        ctx.write(ambiguous_text(target.ref, instances))
    raise CliError(f'pool "{target.ref}" is ambiguous: {len(instances)} instances') from exc


@click.command("delete")
@click.argument("ref", metavar="NAME|UUID")
@click.option("--node", metavar="NAME", help="With a NAME: delete that node's instance.")
@force_option("Skip the confirmation prompt.")
@output_option("text", ("text", "json"))
def delete_pool(ref: str, node: str | None, force: bool, output: str) -> None:
    """Delete one pool instance (admin). Files on disk are kept.

    Refused while VM disks live on the pool (there is no force-delete). A
    name on several nodes is ambiguous: add --node or use the UUID. Asks
    for confirmation when stdin is a terminal and refuses without one,
    unless --force.

    \b
    Example:
      otherix pool delete default --node node-a
      otherix pool delete 8b1d2c3e-… --force
    """
    fmt = validate_output(output, ("text", "json"))
    ctx = get_context()
    api = ctx.client()
    target = resolve_target(api, ref, node)
    require_confirmation(
        ctx,
        f"delete pool {target.label}",
        force=force,
        question=f"delete storage pool {target.label}?",
    )
    try:
        api.delete_pool(target.ref)
    except DeleteBlockedError as exc:
        if not exc.default_pool_in_use:  # its message says the way on
            _blocked(ctx, api, target, exc, fmt)
        raise
    except PoolNameAmbiguousError as exc:
        _ambiguous(ctx, api, target, exc, fmt)
    if fmt == "json":
        ctx.write(render_object({"deleted": True, "identifier": target.label}, fmt))
    else:
        ctx.line(f"pool {target.label} deleted")
