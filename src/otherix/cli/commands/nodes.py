"""``otherix node …``: hypervisor nodes (docs/pool-contract.md §3).

Owns ``node list|get|cordon|uncordon|readmit|delete|provision-default-pool|reset-credentials``
and mounts the ``node join-token`` group (``otherix.cli.commands.join_tokens``).
Nodes are addressed by name only; the server rejects a UUID.

Choices docs/pool-contract.md leaves open: ``list`` shows
``NAME STATUS ARCH VERSION AGE`` (``ID`` first with ``--show-ids``; ``-``
for an unknown architecture or version, and for VERSION when the caller's
role only sees the node summary), pages like ``pool list`` (``--limit 20``)
and filters with ``--status``/``--architecture``. ``get -o text`` prints
``key: value`` lines with nested ``capabilities``/``resources`` and, for
admins and operators, the node's ``events`` (oldest first).
``delete`` follows the destructive-command rule (``commands.common``): it
asks ``delete node <name>? [y/N]: `` on a TTY and refuses without one,
unless ``--force``;
it lists the pool instances deleted with the node, and a refusal because the
node's pools hold VM disks lists the VMs.
``reset-credentials`` prints ``node``, ``expires_at`` and ``token`` lines and,
on stderr, the ``otherix-agent bootstrap --rejoin-token`` line to run on the
node, with the control-plane URLs this CLI uses.
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
    wire,
)
from otherix.cli.commands.join_tokens import join_token
from otherix.cli.context import CliContext, CliError, get_context
from otherix.cli.errors import usage_error
from otherix.cli.output import age, render_table, render_yaml_stream
from otherix.cli.views.pools import paging_footer
from otherix.client.errors import ApiError, DeleteBlockedError
from otherix.domain.liveness import STATUSES
from otherix.durations import parse_duration
from otherix.models.nodes import Node, NodeDetail, NodeSummary

__all__ = ["node"]

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
@output_option("table", ("table", "wide", "json", "yaml"))
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

    VERSION is the agent version the node last reported. -o wide adds
    CORDONED and HEARTBEAT (age of the last heartbeat).

    \b
    Example:
      otherix node list --status ready --show-ids
      otherix node list -o wide
    """
    fmt = validate_output(output, ("table", "wide", "json", "yaml"))
    ctx = get_context()
    page = ctx.client().list_nodes(
        status=status, architecture=architecture, limit=limit, cursor=cursor
    )
    next_cursor = page.meta.next_cursor
    if fmt == "json":
        ctx.write(render_object(page, fmt))
        return
    if fmt == "yaml":
        ctx.write(render_yaml_stream([wire(n) for n in page.data]))
        ctx.err(paging_footer(next_page_command(cctx), next_cursor))
        return
    now = ctx.now()
    wide = fmt == "wide"
    rows = []
    for n in page.data:
        full = n if isinstance(n, Node) else None  # a summary has no version or heartbeat
        row = [
            n.name,
            n.status,
            n.architecture or "-",
            (full.agent_version if full else None) or "-",
        ]
        if wide:
            heartbeat = full.last_heartbeat_at if full else None
            row += [
                ("yes" if full.cordoned else "no") if full else "-",
                age(heartbeat, now) if heartbeat else "-",
            ]
        row.append(age(n.created_at, now))
        rows.append([n.id, *row] if show_ids else row)
    headers: tuple[str, ...] = ("NAME", "STATUS", "ARCH", "VERSION")
    headers += ("CORDONED", "HEARTBEAT", "AGE") if wide else ("AGE",)
    ctx.write(render_table(("ID", *headers) if show_ids else headers, rows))
    ctx.write(paging_footer(next_page_command(cctx), next_cursor))


def node_text(node: NodeSummary) -> str:
    """``key: value`` lines for ``node get``, values as the server wrote them
    (a summary has fewer keys); nested maps are indented; the events of a
    ``NodeDetail`` (admins, operators) last."""
    n = wire(node)
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
    if isinstance(node, NodeDetail):  # only in the full view (admins, operators)
        events = n["events"]
        lines.append("events:" if events else "events: <none>")
        lines.extend(
            f"  {e['created_at']}  {e['type']}  {e['reason']}: {e['message']}" for e in events
        )
    return "".join(f"{line}\n" for line in lines)


@node.command("get")
@click.argument("name")
@output_option("text", ("text", "json", "yaml"))
def get_node(name: str, output: str) -> None:
    """Show one node by name.

    Admins and operators also see the node's events (the newest 50, oldest
    first), e.g. a default pool that was not provisioned because another
    pool holds its path.

    \b
    Example:
      otherix node get node-a -o yaml
    """
    fmt = validate_output(output, ("text", "json", "yaml"))
    ctx = get_context()
    found = ctx.client().get_node(name)
    ctx.write(node_text(found) if fmt == "text" else render_object(found, fmt))


def _action(name: str, action: str, done: str, output: str) -> None:
    fmt = validate_output(output, ("text", "json"))
    ctx = get_context()
    after = ctx.client().node_action(name, action)
    if fmt == "json":
        ctx.write(render_object(after, fmt))
    else:
        ctx.line(f"node {after.name} {done} (status {after.status})")


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
@output_option("text", ("text", "json"))
def delete_node(name: str, force: bool, output: str) -> None:
    """Remove a node and its storage pool instances (files on disk are kept).

    Refused while the node's pools hold VM disks (the VMs are listed) and
    while it holds the last instance of the cluster default pool. The
    node's agent stops (exit status 78) at its next request.

    \b
    Example:
      otherix node delete node-a --force
    """
    fmt = validate_output(output, ("text", "json"))
    ctx = get_context()
    require_confirmation(ctx, f"delete node {name}", force=force)
    try:
        deleted = ctx.client().delete_node(name)
    except DeleteBlockedError as exc:
        blocking = exc.details.get("blocking_resources")
        if isinstance(blocking, dict):
            _blocked(ctx, name, exc, blocking, fmt)
        raise
    if fmt == "json":
        ctx.write(render_object({"deleted": True, **(wire(deleted) if deleted else {})}, fmt))
        return
    pools = deleted.deleted_pools if deleted else []
    ctx.line(f"node {name} deleted")
    for p in pools:
        ctx.line(f"  storage pool {p.name} ({p.id}) {p.path}")
    if pools:
        ctx.line(f"{len(pools)} storage pool instance(s) deleted with it; their files are kept")


def _blocked(ctx: CliContext, name: str, exc: ApiError, blocking: dict[str, Any], fmt: str) -> None:
    vms = [str(v) for v in exc.details.get("vms") or []]
    if fmt == "json":
        out = {"deleted": False, "name": name, "code": exc.code, "blocking_resources": blocking}
        ctx.write(render_object({**out, "vms": vms}, fmt))
    else:
        lines = [f"cannot delete node {name}: blocked by:"]
        lines.extend(f"  - {kind}: {count}" for kind, count in sorted(blocking.items()))
        if vms:
            lines += ["", "VMs with a disk on this node's pools:", *(f"  - {v}" for v in vms)]
        hint = exc.details.get("hint") or f"otherix vm list --node {name}"
        lines += ["", f"delete those VMs first (list them with '{hint}')."]
        ctx.write("".join(f"{line}\n" for line in lines))
    raise CliError(f"node {name} blocked: {exc.code}") from exc


@node.command("provision-default-pool")
@click.argument("name")
@output_option("text", ("text", "json"))
def provision_default_pool(name: str, output: str) -> None:
    """Provision the default pool on a node now (admin).

    The control plane provisions it by itself only when a node first
    becomes ready; this runs that step again, e.g. after the default pool
    was deleted on the node. It never provisions over a path another pool
    holds: that is recorded as an event on the node ('otherix node get').
    Exits 0 when the node has the pool (created now or before), 1 when
    nothing could be provisioned.

    \b
    Example:
      otherix node provision-default-pool node-a
    """
    fmt = validate_output(output, ("text", "json"))
    ctx = get_context()
    body = ctx.client().provision_default_pool(name)
    outcome = body.outcome
    if fmt == "json":
        ctx.write(render_object(body, fmt))
    elif outcome in ("created", "exists"):
        ctx.line(body.message)
    if outcome not in ("created", "exists"):
        raise CliError(body.message or f"default pool not provisioned ({outcome})")


@node.command("reset-credentials")
@click.argument("name")
@click.option(
    "--ttl", default=None, help="Lifetime of the token, e.g. 15m, 2h. [default: 1h, the server's]"
)
@output_option("text", ("text", "json"))
def reset_credentials(name: str, ttl: str | None, output: str) -> None:
    """Make a one-time re-enrol token for a node that lost its credential (admin).

    The node's agent redeems it with 'otherix-agent bootstrap --rejoin-token':
    the same node (same id, same pools) gets new credentials and the old ones
    stop working. Until then the old credential keeps working. The token is
    printed once; a newer token replaces an older one.

    \b
    Example:
      otherix node reset-credentials node-a --ttl 30m
    """
    fmt = validate_output(output, ("text", "json"))
    seconds = None
    if ttl is not None:
        try:
            seconds = int(parse_duration(ttl))
        except ValueError as exc:
            raise usage_error(f"--ttl: {exc}") from exc
    ctx = get_context()
    api = ctx.client()
    made = api.reset_node_credentials(name, seconds)
    if fmt == "json":
        ctx.write(render_object(made, fmt))
    else:
        shown = wire(made)  # times as the server wrote them
        ctx.line(f"node: {made.node} ({made.node_id})")
        ctx.line(f"expires_at: {shown['expires_at']}")
        ctx.line(f"token: {made.token}")
    servers = " ".join(f"--server {url}" for url in api.base_urls)
    ctx.warn("store this token now: it cannot be shown again. On the node, run:")
    ctx.warn(f"  otherix-agent bootstrap {servers} --rejoin-token {made.token}")
