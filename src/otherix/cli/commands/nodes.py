"""``otherix node …``: hypervisor nodes (contract §1.3).

Owns ``node list|get|cordon|uncordon|readmit|delete`` and mounts the
``node join-token`` group (``otherix.cli.commands.join_tokens``). Nodes are
addressed by name only; the server rejects a UUID.

Choices where the contract is silent: ``list`` shows
``NAME STATUS ARCH VERSION AGE`` (``ID`` first with ``--show-ids``; ``-``
for an unknown architecture or version, and for VERSION when the caller's
role only sees the node summary), pages like ``pool list`` (``--limit 20``)
and filters with ``--status``/``--architecture``. ``get -o text`` prints
``key: value`` lines with nested ``capabilities``/``resources``.
``delete`` follows the destructive-command rule (``commands.common``): it
asks ``delete node <name>? [y/N]: `` on a TTY and refuses without one,
unless ``--force``.
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
)
from otherix.cli.commands.join_tokens import join_token
from otherix.cli.context import get_context
from otherix.cli.output import age, render_table, render_yaml_stream
from otherix.cli.views.pools import paging_footer

__all__ = ["node"]

STATUSES = ("pending", "ready", "cordoned", "unreachable", "gone")
_TEXT_KEYS = (
    "id",
    "name",
    "status",
    "cordoned",
    "architecture",
    "agent_version",
    "last_heartbeat_at",
    "status_changed_at",
    "desired_revision",
    "created_at",
    "updated_at",
)


@click.group("node")
def node() -> None:
    """Inspect and maintain nodes; manage join tokens.

    \b
    Example:
      otherix node list
      otherix node cordon node-a
    """


node.add_command(join_token)


@node.command("list")
@click.option("--status", type=click.Choice(STATUSES), help="Only nodes in this status.")
@click.option(
    "--architecture", type=click.Choice(("amd64", "arm64")), help="Only this architecture."
)
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--cursor", help="Continue from a previous page's cursor.")
@output_option("table", ("table", "json", "yaml"))
@show_ids_option
@click.pass_context
def list_nodes(
    cctx: click.Context,
    status: str | None,
    architecture: str | None,
    limit: int,
    cursor: str | None,
    output: str,
    show_ids: bool,
) -> None:
    """List nodes (NAME STATUS ARCH VERSION AGE).

    \b
    Example:
      otherix node list --status ready --show-ids
    """
    fmt = validate_output(output, ("table", "json", "yaml"))
    ctx = get_context()
    body = ctx.client().list_nodes(
        status=status, architecture=architecture, limit=limit, cursor=cursor
    )
    data: list[dict[str, Any]] = body.get("data") or []
    next_cursor = (body.get("meta") or {}).get("next_cursor")
    if fmt == "json":
        ctx.write(render_object(body, fmt))
        return
    if fmt == "yaml":
        ctx.write(render_yaml_stream(data))
        ctx.err(paging_footer(next_page_command(cctx), next_cursor))
        return
    now = ctx.now()
    rows = []
    for n in data:
        row = [
            str(n.get("name", "")),
            str(n.get("status", "")),
            str(n.get("architecture") or "-"),
            str(n.get("agent_version") or "-"),
            age(n.get("created_at"), now),
        ]
        rows.append([str(n.get("id", "")), *row] if show_ids else row)
    headers = ("NAME", "STATUS", "ARCH", "VERSION", "AGE")
    ctx.write(render_table(("ID", *headers) if show_ids else headers, rows))
    ctx.write(paging_footer(next_page_command(cctx), next_cursor))


def node_text(n: dict[str, Any]) -> str:
    """``key: value`` lines for ``node get``; nested maps are indented."""
    lines: list[str] = []
    for key in _TEXT_KEYS:
        if key not in n:
            continue
        value = n[key]
        if isinstance(value, bool):
            value = "true" if value else "false"
        lines.append(f"{key}: {'' if value is None else value}")
    for key in ("capabilities", "resources"):
        section = n.get(key)
        if not section:
            continue
        lines.append(f"{key}:")
        lines.extend(f"  {k}: {v}" for k, v in sorted(section.items()))
    return "".join(f"{line}\n" for line in lines)


@node.command("get")
@click.argument("name")
@output_option("text", ("text", "json", "yaml"))
def get_node(name: str, output: str) -> None:
    """Show one node by name.

    \b
    Example:
      otherix node get node-a -o yaml
    """
    fmt = validate_output(output, ("text", "json", "yaml"))
    ctx = get_context()
    body = ctx.client().get_node(name)
    ctx.write(node_text(body) if fmt == "text" else render_object(body, fmt))


def _action(name: str, action: str, done: str, output: str) -> None:
    fmt = validate_output(output, ("text", "json"))
    ctx = get_context()
    body = ctx.client().node_action(name, action)
    if fmt == "json":
        ctx.write(render_object(body, fmt))
    else:
        ctx.line(f"node {body.get('name', name)} {done} (status {body.get('status', '')})")


@node.command("cordon")
@click.argument("name")
@output_option("text", ("text", "json"))
def cordon(name: str, output: str) -> None:
    """Stop placing new VMs on a node.

    \b
    Example:
      otherix node cordon node-a
    """
    _action(name, "cordon", "cordoned", output)


@node.command("uncordon")
@click.argument("name")
@output_option("text", ("text", "json"))
def uncordon(name: str, output: str) -> None:
    """Allow new VMs on a cordoned node again.

    \b
    Example:
      otherix node uncordon node-a
    """
    _action(name, "uncordon", "uncordoned", output)


@node.command("readmit")
@click.argument("name")
@output_option("text", ("text", "json"))
def readmit(name: str, output: str) -> None:
    """Let a node marked gone rejoin (it returns to pending).

    \b
    Example:
      otherix node readmit node-a
    """
    _action(name, "readmit", "readmitted", output)


@node.command("delete")
@click.argument("name")
@force_option("Do not ask for confirmation.")
def delete_node(name: str, force: bool) -> None:
    """Remove a node. Its storage pools stay, shown as orphaned.

    \b
    Example:
      otherix node delete node-a --force
    """
    ctx = get_context()
    require_confirmation(ctx, f"delete node {name}", force=force)
    ctx.client().delete_node(name)
    ctx.line(f"node {name} deleted")
