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
- ``delete --force`` both skips the prompt and deletes a running VM (its
  agent powers it off first); without it a running VM is refused
  (``vm_running``) after the prompt.
- Power verbs (``start``, ``stop``, ``restart``, ``poweroff``) print
  ``vm web-1 starting (task <id>)``; with ``--wait`` they follow the task
  and print the state it left (``vm web-1 running (pid 4242, tcg, up 0s)``).
- ``console`` prints the last lines the node reported (up to 50); ``-f``
  polls every second and prints lines it has not printed yet (matched
  against the previous tail: output faster than 50 lines a second between
  two polls loses lines; the file on the node, ``console.log``, has them).
"""

from __future__ import annotations

import math
import time
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
from otherix.cli.context import CliContext, CliError, get_context
from otherix.cli.errors import usage_error
from otherix.cli.output import human_bytes, render_yaml, wire
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
    printable,
    state_text,
    vm_list_table,
    vm_manifest,
    vm_text,
)
from otherix.client.api import ApiClient
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
      otherix vm stop web-1 --wait
      otherix vm move web-1 --pool fast --wait
      otherix vm console web-1 -f
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
@click.option("--no-start", is_flag=True, help="Leave the VM stopped once its disk is ready.")
@click.option(
    "--restart-policy",
    type=click.Choice(("always", "on-failure", "never")),
    help="When QEMU ends unasked: always, on-failure (after a crash; the default), never.",
)
@click.option(
    "--wait", is_flag=True, help="Wait until the disk is ready and the VM started, with progress."
)
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
    no_start: bool,
    restart_policy: str | None,
    wait: bool,
    wait_timeout: str,
    output: str,
) -> None:
    """Create VM NAME from an image URL; its disk goes on a pool, and the VM
    starts once the disk is ready (unless --no-start).

    Without --pool the cluster default pool is used. With --wait, follow
    the vm.create task (on a terminal: bytes downloaded and rate) and exit
    1 if the VM fails, is not ready in time, or does not start.

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
        "power_state": "stopped" if no_start else None,
        "restart_policy": restart_policy,
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
        state = (created.get("status") or {}).get("state")
        if not failure and not no_start and state not in ("running", "starting"):
            failure = f"vm {name}'s disk is ready but it did not start: {state_text(created)}"
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


def _follow(
    ctx: CliContext, api: ApiClient, name: str, task_id: str, timeout: float, doing: str, verb: str
) -> dict[str, Any]:
    """Follow VM ``name``'s task with the progress line; the finished task. A task still
    running after ``timeout``, or one that did not succeed, is a ``CliError``."""
    line = StatusLine(ctx, live_output(ctx))
    try:
        outcome = follow_task(ctx, api, task_id, timeout=timeout, line=line, label=f"vm {name}")
    finally:
        line.clear()
    task = outcome.value
    if not outcome.done:
        raise CliError(
            f"vm {name} is still {doing} after {format_duration(timeout)} "
            f"(task {task_id} {task.get('status')}); follow it with 'otherix task wait {task_id}'"
        )
    if task.get("status") != "success":
        raise CliError(f"vm {name} {verb} failed: {task_error(task)}")
    return task


@vm.command("delete")
@click.argument("name")
@force_option("Skip the confirmation prompt, and power the VM off first if it runs.")
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
    terminal and refuses without one, unless --force. A running VM is
    refused unless --force, which powers it off first.

    \b
    Example:
      otherix vm delete web-1 --force --wait
    """
    timeout = parse_timeout("--wait-timeout", wait_timeout)
    ctx = get_context()
    api = ctx.client()
    require_confirmation(ctx, f"delete vm {name}", force=force)
    accepted = api.delete_vm(name, force=force)
    if accepted is None:
        ctx.line(f"vm {name} deleted")
        return
    task_id = accepted.task_id
    if not wait:
        ctx.line(f"vm {name} deleting (task {task_id})")
        return
    _follow(ctx, api, name, task_id, timeout, "deleting", "delete")
    ctx.line(f"vm {name} deleted")


@vm.command("move")
@click.argument("name")
@click.option("--pool", "pool", required=True, metavar="NAME|UUID", help="The pool to move to.")
@click.option("--node", metavar="NAME", help="The target pool's node, to move the VM across nodes.")
@click.option("--wait", is_flag=True, help="Wait until the disk is moved, with progress.")
@click.option(
    "--wait-timeout",
    default="1h",
    show_default=True,
    metavar="DURATION",
    help="Give up waiting after this long (e.g. 90s, 10m).",
)
def move_vm(name: str, pool: str, node: str | None, wait: bool, wait_timeout: str) -> None:
    """Move stopped VM NAME's disk to another pool (admin, operator).

    The node's agent copies the disk into the pool (a reflink where the
    filesystem can, else a copy), compares the sha256 of both, and only then
    does the VM switch to the new copy; the old one is removed after. The VM
    must be stopped; the pool must be ready, not cordoned, and have room for
    the disk. --pool names the pool's instance on the VM's node; with --node,
    the instance on that node: its agent pulls the disk from the VM's node
    (both need their transfer endpoint, agent setting transfer.listen).

    \b
    Example:
      otherix vm stop web-1 --wait
      otherix vm move web-1 --pool fast --wait
      otherix vm move web-1 --pool fast --node node-b --wait
    """
    timeout = parse_timeout("--wait-timeout", wait_timeout)
    ctx = get_context()
    api = ctx.client()
    accepted = api.move_vm(name, pool, node=node)
    task_id = accepted.task_id
    if not wait:
        ctx.line(f"vm {name} moving to pool {pool} (task {task_id})")
        return
    task = _follow(ctx, api, name, task_id, timeout, "moving", "move")
    result = task.get("result") or {}
    how = {"reflink": "reflinked", "copy": "copied", "existing": "found copied"}.get(
        str(result.get("method")), "moved"
    )
    size = result.get("bytes")
    amount = f" ({human_bytes(size)})" if isinstance(size, int) else ""
    ctx.line(
        f"vm {name} moved to pool {pool}: disk {how}{amount}, sha256 "
        f"{str(result.get('sha256') or '?')[:12]} verified"
    )


_VERB_ING = {
    "start": "starting",
    "stop": "stopping",
    "restart": "restarting",
    "poweroff": "powering off",
}
_VERB_HELP = {
    "start": (
        "Start VM NAME: its QEMU runs on its node from its disk on the pool.",
        "Refused (vm_not_startable) while its disk is not ready, its pool is failed, its\n"
        "disk is missing, or its node is unreachable; nothing is started then.",
        "otherix vm start web-1 --wait",
    ),
    "stop": (
        "Stop VM NAME: an ACPI power-down, then power-off after --timeout.",
        "The guest gets --timeout to shut down; QEMU is powered off after that.",
        "otherix vm stop web-1 --timeout 2m --wait",
    ),
    "restart": (
        "Restart VM NAME: stop it (as 'vm stop' does), then start it again.",
        "A VM that is not running is just started.",
        "otherix vm restart web-1 --wait",
    ),
    "poweroff": (
        "Power VM NAME off at once, without a guest shutdown (like pulling the plug).",
        "Writes the guest has not flushed are lost; prefer 'vm stop'.",
        "otherix vm poweroff web-1 --wait",
    ),
}


def _guest_timeout(text: str) -> int:
    """``--timeout`` in whole seconds, 1 s to 1 h (a usage error otherwise)."""
    seconds = parse_timeout("--timeout", text)
    if not 1 <= seconds <= 3600:
        raise usage_error(f'--timeout: "{text}" must be from 1s to 1h')
    return math.ceil(seconds)


def _power_command(action: str) -> None:
    summary, detail, example = _VERB_HELP[action]
    timed = action in ("stop", "restart")

    def power(name: str, wait: bool, wait_timeout: str, timeout: str | None = None) -> None:
        limit = parse_timeout("--wait-timeout", wait_timeout)
        guest = _guest_timeout(timeout) if timeout else None
        ctx = get_context()
        api = ctx.client()
        accepted = api.power_vm(name, action, timeout_seconds=guest)
        task_id = accepted.task_id
        if not wait:
            ctx.line(f"vm {name} {_VERB_ING[action]} (task {task_id})")
            return
        _follow(ctx, api, name, task_id, limit, _VERB_ING[action], action)
        ctx.line(f"vm {name} {state_text(wire(api.get_vm(name)))}")

    power.__doc__ = f"""{summary}

    {detail}
    With --wait, follow the vm.{action} task and print the state it left; exit 1
    if it fails or does not finish in time.

    \b
    Example:
      {example}
    """
    command = click.argument("name")(power)
    command = click.option("--wait", is_flag=True, help="Wait until the task is done.")(command)
    command = click.option(
        "--wait-timeout",
        default="5m",
        show_default=True,
        metavar="DURATION",
        help="Give up waiting after this long (e.g. 90s, 10m).",
    )(command)
    if timed:
        command = click.option(
            "--timeout",
            metavar="DURATION",
            help="How long the guest gets to power down before QEMU is powered off "
            "(default 60s; at most 1h).",
        )(command)
    vm.command(action)(command)


for _action in ("start", "stop", "restart", "poweroff"):
    _power_command(_action)


@vm.command("console")
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C to stop).")
@click.option(
    "--interval", default="1s", show_default=True, metavar="DURATION", help="Poll interval with -f."
)
def console_vm(name: str, follow: bool, interval: str) -> None:
    """Print the last lines of VM NAME's serial console (up to 50).

    The lines are what the VM's node last reported (within a few seconds of
    the guest printing them). With -f, keep polling and print new lines as
    they come, until Ctrl-C (exit 0).

    \b
    Example:
      otherix vm console web-1
      otherix vm console web-1 -f
    """
    every = parse_timeout("--interval", interval)
    ctx = get_context()
    api = ctx.client()
    seen: list[str] = []
    try:
        while True:
            lines = api.vm_console(name).lines
            for text in _new_lines(seen, lines):
                ctx.line(printable(text))
            seen = lines
            if not follow:
                return
            time.sleep(every)
    except KeyboardInterrupt:
        return


def _new_lines(before: list[str], now: list[str]) -> list[str]:
    """The lines of ``now`` after its longest overlap with the end of ``before``."""
    for size in range(min(len(before), len(now)), 0, -1):
        if before[-size:] == now[:size]:
            return now[size:]
    return now
