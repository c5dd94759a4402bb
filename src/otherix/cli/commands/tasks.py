"""``otherix task``: list, inspect, wait for and cancel tasks (docs/pool-contract.md §6).

Owns the task command group. Tasks are the control plane's record of work a
node's agent does (``vm.create``, ``vm.delete``, ``storage_pool.scan``);
``GET /v1/tasks`` pages them with ``--limit``/``--cursor`` and filters by
``--status`` and ``--type``. Developers and viewers see only their own.

Choices docs/pool-contract.md leaves open:

- ``task list`` columns: ``ID TYPE STATUS PROGRESS RESOURCE AGE``, with
  ``RESOURCE`` as ``<resource_type>/<resource_id>``; ``-o yaml`` and ``-o
  json`` print the response body (tasks are not manifests).
- ``task wait`` draws the progress line of ``otherix.cli.progress`` on a
  terminal and prints ``task <id> succeeded`` at the end; a failed or
  cancelled task exits 1 with ``task <id> failed: <code>: <message>`` (or
  ``was cancelled``); a timeout says the task goes on in the background.
- ``task cancel`` prints ``task <id> cancelled``; the server's 409 (finished,
  or a type that cannot be cancelled now) is printed as it comes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import click

from otherix.cli.commands.common import (
    next_page_command,
    output_option,
    render_object,
    validate_output,
)
from otherix.cli.context import CliError, get_context
from otherix.cli.output import age, render_table, wire
from otherix.cli.progress import (
    FINAL,
    StatusLine,
    follow_task,
    live_output,
    parse_timeout,
    task_error,
    task_line,
)
from otherix.cli.views.pools import paging_footer
from otherix.durations import format_duration

__all__ = ["task", "task_text"]

STATUSES = ("pending", "running", "success", "failed", "cancelled")
_HEADERS = ("ID", "TYPE", "STATUS", "PROGRESS", "RESOURCE", "AGE")

Task = Mapping[str, Any]


def _resource(t: Task) -> str:
    if not t.get("resource_type"):
        return "-"
    return f"{t['resource_type']}/{t.get('resource_id') or ''}"


def task_table(tasks: Sequence[Task], now: datetime) -> str:
    rows = [
        [
            str(t.get("id", "")),
            str(t.get("type", "")),
            str(t.get("status", "")),
            f"{t.get('progress') or 0}%",
            _resource(t),
            age(t.get("created_at"), now),
        ]
        for t in tasks
    ]
    return render_table(_HEADERS, rows)


def _value(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def task_text(t: Task) -> str:
    """``task get`` as ``key: value`` lines: progress detail, result or error."""
    lines = [
        f"id: {t.get('id', '')}",
        f"type: {t.get('type', '')}",
        f"status: {t.get('status', '')}",
        f"progress: {t.get('progress') or 0}%",
        f"resource: {_resource(t)}",
        f"attempts: {t.get('attempts', 0)}/{t.get('max_attempts', 0)}",
    ]
    if t.get("status") not in FINAL and t.get("status") != "pending":
        lines.append(f"detail: {task_line(t)}")
    if t.get("status") in ("failed", "cancelled"):
        lines.append(f"error: {task_error(t)}")
    result = t.get("result") or {}
    if result and t.get("status") == "success":
        lines.append("result:")
        lines.extend(f"  {key}: {_value(value)}" for key, value in result.items())
    for key in ("created_at", "started_at", "finished_at"):
        if t.get(key):
            lines.append(f"{key}: {t[key]}")
    return "".join(f"{line}\n" for line in lines)


@click.group("task")
def task() -> None:
    """Inspect, wait for and cancel tasks: work the nodes' agents do.

    \b
    Example:
      otherix task list --status running
      otherix task wait 3f6c1d2e-… --timeout 10m
    """


@task.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only tasks in this status.")
@click.option("--type", "task_type", metavar="TYPE", help="Only this type, e.g. vm.create.")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--cursor", help="Continue from a previous page's cursor.")
@output_option("table", ("table", "json", "yaml"))
@click.pass_context
def list_tasks(
    cctx: click.Context,
    status: str | None,
    task_type: str | None,
    limit: int,
    cursor: str | None,
    output: str,
) -> None:
    """List tasks, oldest first.

    \b
    Columns: ID TYPE STATUS PROGRESS RESOURCE AGE.

    \b
    Example:
      otherix task list --type vm.create --status failed
    """
    fmt = validate_output(output, ("table", "json", "yaml"))
    ctx = get_context()
    body = wire(ctx.client().list_tasks(limit=limit, cursor=cursor, status=status, type=task_type))
    if fmt != "table":
        ctx.write(render_object(body, fmt))
        return
    ctx.write(task_table(body.get("data") or [], ctx.now()))
    ctx.write(paging_footer(next_page_command(cctx), (body.get("meta") or {}).get("next_cursor")))


@task.command("get")
@click.argument("task_id", metavar="ID")
@output_option("text", ("text", "json"))
def get_task(task_id: str, output: str) -> None:
    """Show one task: status, progress, and its result or error.

    attempts is tries so far / the most the node will make: a vm.create is
    tried up to the agent's tasks.vm_create_attempts (3 unless the agent
    reports its own), a vm.delete once.

    \b
    Example:
      otherix task get 3f6c1d2e-… -o json
    """
    fmt = validate_output(output, ("text", "json"))
    ctx = get_context()
    body = wire(ctx.client().get_task(task_id))
    ctx.write(render_object(body, fmt) if fmt == "json" else task_text(body))


@task.command("wait")
@click.argument("task_id", metavar="ID")
@click.option(
    "--timeout",
    default="5m",
    show_default=True,
    metavar="DURATION",
    help="Give up waiting after this long (e.g. 90s, 10m).",
)
def wait_task(task_id: str, timeout: str) -> None:
    """Wait until a task finishes; exit 1 if it failed or was cancelled.

    On a terminal a progress line shows what the agent reports (bytes and
    rate for downloads); piped, only the outcome is printed.

    \b
    Example:
      otherix task wait 3f6c1d2e-… --timeout 10m
    """
    seconds = parse_timeout("--timeout", timeout)
    ctx = get_context()
    api = ctx.client()
    line = StatusLine(ctx, live_output(ctx))
    try:
        outcome = follow_task(ctx, api, task_id, timeout=seconds, line=line)
    finally:
        line.clear()
    last = outcome.value
    if not outcome.done:
        raise CliError(
            f"task {task_id} did not finish within {format_duration(seconds)} "
            f"(status {last.get('status')}, {last.get('progress') or 0}%); "
            "it goes on in the background"
        )
    if last.get("status") == "cancelled":
        why = f" ({task_error(last)})" if last.get("error") else ""
        raise CliError(f"task {task_id} was cancelled{why}")
    if last.get("status") == "failed":
        raise CliError(f"task {task_id} failed: {task_error(last)}")
    ctx.line(f"task {task_id} succeeded")


@task.command("cancel")
@click.argument("task_id", metavar="ID")
@output_option("text", ("text", "json"))
def cancel_task(task_id: str, output: str) -> None:
    """Cancel a task that has not finished (types that support it).

    A vm.create can be cancelled only before the node's agent starts it.

    \b
    Example:
      otherix task cancel 3f6c1d2e-…
    """
    fmt = validate_output(output, ("text", "json"))
    ctx = get_context()
    body = wire(ctx.client().cancel_task(task_id))
    if fmt == "json":
        ctx.write(render_object(body, fmt))
    else:
        ctx.line(f"task {task_id} cancelled")
