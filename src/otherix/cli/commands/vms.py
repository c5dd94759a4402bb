"""``otherix vm``: create, list, get and delete VMs (docs/pool-contract.md §7, §11).

Owns the VM command group. A VM here is the owner of a disk on a pool:
``create`` admits it (``POST /v1/vms``, phase ``pending``), the scheduler
places it on a pool instance, and the node's agent runs its ``vm.create``
task (image cache fill, disk materialisation) until the VM is ``stopped``,
which means its disk is ready. Layouts come from ``otherix.cli.views.vms``;
the progress line and task following from ``otherix.cli.progress``.

``create --wait`` follows the VM through placement and its ``vm.create``
task (``otherix.cli.progress.wait_vm_ready``); one ``--wait-timeout``
covers all of it.

Choices docs/pool-contract.md leaves open:

- ``--pull-policy``, ``--format`` and ``--disk-gib`` are sent only when
  given, so the server's defaults apply (``if-not-present``, ``qcow2``, 0 =
  the image's virtual size); ``--arch`` defaults to ``amd64``.
- While a VM cannot be placed, each new ``status.reason`` is printed once
  on stderr (``vm web-1 pending: <reason>: <message>``), on a terminal or
  not; only the in-place progress line is terminal-only.
- ``create`` maps ``default_pool_not_set`` to a message that names both
  ways out (``--pool``, ``cluster set-default-pool``).
- After a failed or timed-out wait the VM is still printed (stdout) before
  the error (stderr), as ``pool create --wait`` does; a timeout leaves the
  VM in place and says how to follow it.
- ``delete --wait`` prints only the outcome (``vm web-1 deleted``); without
  it, a placed VM prints ``vm web-1 deleting (task <id>)``.
"""

from __future__ import annotations

from typing import Any

import click

from otherix.cli.commands.common import (
    force_option,
    next_page_command,
    output_option,
    render_object,
    require_confirmation,
    show_ids_option,
    validate_output,
    write_list_page,
)
from otherix.cli.context import CliError, get_context
from otherix.cli.output import render_yaml, wire
from otherix.cli.progress import (
    StatusLine,
    follow_task,
    live_output,
    parse_timeout,
    task_error,
    wait_vm_ready,
)
from otherix.cli.views.vms import (
    created_text,
    list_manifests,
    vm_list_table,
    vm_manifest,
    vm_text,
)
from otherix.client.errors import DefaultPoolNotSetError
from otherix.domain.vms import PHASES
from otherix.durations import format_duration

__all__ = ["vm"]

NO_DEFAULT = (
    "no --pool given and the cluster default pool is not set (default_pool_not_set): "
    "pass --pool NAME, or set a default with 'otherix cluster set-default-pool NAME'"
)


@click.group("vm")
def vm() -> None:
    """Manage VMs: each owns a disk on a storage pool.

    A new VM is admitted as pending, placed on a pool instance (the cluster
    default pool unless --pool), and its node's agent fills the pool's image
    cache and materialises the disk; phase stopped means the disk is ready.

    \b
    Example:
      otherix vm create web-1 --image-url https://images.example/ubuntu.img --wait
      otherix vm list --pool default
      otherix vm delete web-1
    """


@vm.command("create")
@click.argument("name")
@click.option("--image-url", required=True, metavar="URL", help="http(s) URL of the disk image.")
@click.option("--image-sha256", metavar="HEX", help="Expected sha256 of the image (64 hex).")
@click.option(
    "--pull-policy",
    type=click.Choice(("if-not-present", "always")),
    help="Use the pool's cached image if present (default), or download it always.",
)
@click.option(
    "--arch",
    type=click.Choice(("amd64", "arm64")),
    default="amd64",
    show_default=True,
    help="CPU architecture; the VM goes to a node of this architecture.",
)
@click.option("--vcpus", type=click.IntRange(1, 1024), default=2, show_default=True, help="vCPUs.")
@click.option(
    "--memory-mb", type=click.IntRange(64), default=2048, show_default=True, help="Memory (MiB)."
)
@click.option(
    "--format", "disk_format", type=click.Choice(("qcow2", "raw")), help="Disk format (qcow2)."
)
@click.option(
    "--disk-gib", type=click.IntRange(0, 65536), help="Disk size (default: the image's size)."
)
@click.option("--pool", metavar="NAME|UUID", help="Pool name or instance UUID (default: cluster).")
@click.option("--node", metavar="NAME", help="Place the VM on this node.")
@click.option("--wait", is_flag=True, help="Wait until the disk is ready, showing progress.")
@click.option(
    "--wait-timeout",
    default="5m",
    show_default=True,
    metavar="DURATION",
    help="Give up waiting after this long (e.g. 90s, 10m).",
)
@output_option("text", ("text", "json"))
def create_vm(
    name: str,
    image_url: str,
    image_sha256: str | None,
    pull_policy: str | None,
    arch: str,
    vcpus: int,
    memory_mb: int,
    disk_format: str | None,
    disk_gib: int | None,
    pool: str | None,
    node: str | None,
    wait: bool,
    wait_timeout: str,
    output: str,
) -> None:
    """Create VM NAME from an image URL; its disk goes on a pool.

    Without --pool the cluster default pool is used. With --wait, follow
    the vm.create task (on a terminal: bytes downloaded and rate) and exit
    1 if the VM fails or is not ready in time.

    \b
    Example:
      otherix vm create web-1 \\
        --image-url https://images.example/ubuntu-24.04.img --pool fast --wait
    """
    fmt = validate_output(output, ("text", "json"))
    timeout = parse_timeout("--wait-timeout", wait_timeout)
    body: dict[str, Any] = {
        "name": name,
        "image_url": image_url,
        "arch": arch,
        "vcpus": vcpus,
        "memory_mb": memory_mb,
    }
    optional = {
        "image_sha256": image_sha256,
        "pull_policy": pull_policy,
        "format": disk_format,
        "disk_gib": disk_gib,
        "pool": pool,
        "node": node,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    ctx = get_context()
    api = ctx.client()
    try:
        created = wire(api.create_vm(body))
    except DefaultPoolNotSetError as exc:
        raise CliError(NO_DEFAULT) from exc
    failure = ""
    if wait:
        created, failure = wait_vm_ready(ctx, api, created, timeout)
    ctx.write(render_object(created, fmt) if fmt == "json" else created_text(created))
    if failure:
        raise CliError(failure)


@vm.command("list")
@click.option("--pool", metavar="NAME|UUID", help="Only VMs on (or asking for) this pool.")
@click.option("--node", metavar="NAME|UUID", help="Only VMs placed on this node.")
@click.option("--status", type=click.Choice(PHASES), help="Only VMs in this phase.")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--cursor", help="Continue from a previous page's cursor.")
@output_option("table", ("table", "json", "yaml"))
@show_ids_option
@click.pass_context
def list_vms(
    cctx: click.Context,
    pool: str | None,
    node: str | None,
    status: str | None,
    limit: int,
    cursor: str | None,
    output: str,
    show_ids: bool,
) -> None:
    """List VMs, oldest first.

    \b
    Columns: NAME POOL NODE PHASE REASON AGE (ID first with --show-ids).
    REASON says why a pending VM is not placed, or why it failed; a stopped
    VM shows disk_missing when its disk's pool failed or its file is gone.

    \b
    Example:
      otherix vm list --pool fast --status pending
      otherix vm list -o yaml > vms.yaml
    """
    fmt = validate_output(output, ("table", "json", "yaml"))
    ctx = get_context()
    body = wire(
        ctx.client().list_vms(limit=limit, cursor=cursor, pool=pool, node=node, status=status)
    )
    write_list_page(
        ctx,
        next_page_command(cctx),
        body,
        fmt,
        table=lambda rows: vm_list_table(rows, ctx.now(), show_ids),
        manifests=list_manifests,
    )


@vm.command("get")
@click.argument("name")
@output_option("text", ("text", "json", "yaml"))
def get_vm(name: str, output: str) -> None:
    """Show a VM with its disks (pool and size of each).

    A disk whose pool failed (its directory, identity marker or device is
    gone) or whose file is gone is marked MISSING, and the phase reads
    "stopped (disk missing: ...)". -o yaml prints an apply-ready VM
    manifest (no ids or status).

    \b
    Example:
      otherix vm get web-1
      otherix vm get web-1 -o yaml > web-1.yaml
    """
    fmt = validate_output(output, ("text", "json", "yaml"))
    ctx = get_context()
    body = wire(ctx.client().get_vm(name))
    if fmt == "json":
        ctx.write(render_object(body, fmt))
    elif fmt == "yaml":
        ctx.write(render_yaml(vm_manifest(body)))
    else:
        ctx.write(vm_text(body))


@vm.command("delete")
@click.argument("name")
@force_option("Skip the confirmation prompt.")
@click.option("--wait", is_flag=True, help="Wait until the node's agent removed the disk.")
@click.option(
    "--wait-timeout",
    default="5m",
    show_default=True,
    metavar="DURATION",
    help="Give up waiting after this long (e.g. 90s, 10m).",
)
def delete_vm(name: str, force: bool, wait: bool, wait_timeout: str) -> None:
    """Delete VM NAME and its disk.

    A VM not placed yet is gone at once; a placed one is deleted by its
    node's agent (a vm.delete task). Asks for confirmation when stdin is a
    terminal and refuses without one, unless --force.

    \b
    Example:
      otherix vm delete web-1 --force --wait
    """
    timeout = parse_timeout("--wait-timeout", wait_timeout)
    ctx = get_context()
    api = ctx.client()
    require_confirmation(ctx, f"delete vm {name}", force=force)
    accepted = api.delete_vm(name)
    if accepted is None:
        ctx.line(f"vm {name} deleted")
        return
    task_id = accepted.task_id
    if not wait:
        ctx.line(f"vm {name} deleting (task {task_id})")
        return
    line = StatusLine(ctx, live_output(ctx))
    try:
        outcome = follow_task(ctx, api, task_id, timeout=timeout, line=line, label=f"vm {name}")
    finally:
        line.clear()
    task = outcome.value
    if not outcome.done:
        raise CliError(
            f"vm {name} is still deleting after {format_duration(timeout)} "
            f"(task {task_id} {task.get('status')}); follow it with 'otherix task wait {task_id}'"
        )
    if task.get("status") != "success":
        raise CliError(f"vm {name} delete failed: {task_error(task)}")
    ctx.line(f"vm {name} deleted")
