"""``otherix vm import``: adopt an orphan disk of a pool as a new VM (issue 16, drift).

``otherix pool doctor`` lists a pool's orphan disks; ``vm import NAME --pool POOL
--disk FILE`` (admin) makes a new, stopped VM whose root disk is that file: the node's
agent renames it into ``vms/<new-vm-id>/`` (a ``vm.import`` task; the VM is
``creating`` until it succeeds). ``FILE`` is the path as ``pool doctor`` printed it
(relative to the pool root) or its absolute path on the node. ``--wait`` follows the
task and exits 1 if it fails (the VM is then ``error``, the orphan where it was;
``otherix vm delete NAME`` removes the VM). Mounted on the ``vm`` group by
``otherix.cli.main``.
"""

from __future__ import annotations

from typing import Any

import click

from otherix.cli.commands.common import output_option, render_object, validate_output
from otherix.cli.context import CliError, get_context
from otherix.cli.output import human_bytes, wire
from otherix.cli.progress import StatusLine, follow_task, live_output, parse_timeout, task_error

__all__ = ["import_vm"]


@click.command("import")
@click.argument("name")
@click.option("--pool", required=True, metavar="NAME|UUID", help="The pool holding the orphan.")
@click.option("--node", metavar="NAME", help="With a pool NAME: that node's instance.")
@click.option("--disk", required=True, metavar="FILE", help="The orphan, as pool doctor shows it.")
@click.option("--vcpus", type=click.IntRange(1, 1024), default=1, show_default=True)
@click.option(
    "--memory-mb", type=click.IntRange(64, 16 * 1024 * 1024), default=1024, show_default=True
)
@click.option("--arch", type=click.Choice(["amd64", "arm64"]), help="Default: the node's.")
@click.option("--wait", is_flag=True, help="Wait until the agent adopted the disk.")
@click.option("--wait-timeout", default="5m", show_default=True, metavar="DURATION")
@output_option("text", ("text", "json"))
def import_vm(
    name: str,
    pool: str,
    node: str | None,
    disk: str,
    vcpus: int,
    memory_mb: int,
    arch: str | None,
    wait: bool,
    wait_timeout: str,
    output: str,
) -> None:
    """Adopt an orphan disk of a pool as a new, stopped VM NAME (admin).

    The disk must be an orphan that 'otherix pool doctor' lists (a file in
    the pool's vms/ or scratch/ that no VM owns); the node's agent moves it
    into the new VM's directory (no copy) after checking its format.

    \b
    Example:
      otherix pool doctor default --node node-a
      otherix vm import rescued --pool default --node node-a \\
        --disk vms/5f0c.../disk.qcow2 --wait
    """
    fmt = validate_output(output, ("text", "json"))
    limit = parse_timeout("--wait-timeout", wait_timeout)
    body: dict[str, Any] = {
        "name": name,
        "pool": pool,
        "disk": disk,
        "vcpus": vcpus,
        "memory_mb": memory_mb,
    }
    body.update({k: v for k, v in {"node": node, "arch": arch}.items() if v is not None})
    ctx = get_context()
    api = ctx.client()
    created = wire(api.import_vm(body))
    task_id = str((created.get("status") or {}).get("task_id") or "")
    if not wait:
        if fmt == "json":
            ctx.write(render_object(created, fmt))
        else:
            ctx.line(f"vm {name} importing {disk} (task {task_id})")
        return
    line = StatusLine(ctx, live_output(ctx))
    try:
        outcome = follow_task(ctx, api, task_id, timeout=limit, line=line, label=f"vm {name}")
    finally:
        line.clear()
    task = outcome.value
    if not outcome.done:
        raise CliError(
            f"vm {name} is still importing (task {task_id} {task.get('status')}); follow it "
            f"with 'otherix task wait {task_id}'"
        )
    if task.get("status") != "success":
        raise CliError(
            f"vm {name} import failed: {task_error(task)}; the disk was left where it was "
            f"('otherix vm delete {name}' removes the VM)"
        )
    vm = wire(api.get_vm(name))
    if fmt == "json":
        ctx.write(render_object(vm, fmt))
        return
    result = task.get("result") or {}
    ctx.line(
        f"vm {name} imported: {result.get('format')} disk of "
        f"{human_bytes(result.get('virtual_size_bytes'))} at {result.get('file_path')}"
    )
