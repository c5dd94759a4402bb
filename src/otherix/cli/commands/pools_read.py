"""``otherix pool list`` and ``otherix pool get`` (docs/pool-contract.md §11.4).

Owns the two read commands. ``list`` pages with ``--limit`` (default 20)
and ``--cursor`` and filters with ``--node``/``--type``; ``get`` prints the
flat instance view for a UUID and the aggregated concept view for a name,
matching on the model the client returns (``StoragePool`` or
``PoolConceptView``). Layouts come from ``otherix.cli.views.pools``, which
read the bodies as the server sent them (``output.wire``).

Choices docs/pool-contract.md leaves open: ``list -o json`` prints the whole
response body (``data`` and ``meta``, so scripts can page); with ``-o
yaml`` the paging footer goes to stderr so stdout stays a valid YAML
stream.
"""

from __future__ import annotations

import click

from otherix.cli.commands.common import (
    next_page_command,
    output_option,
    render_object,
    show_ids_option,
    validate_output,
    write_list_page,
)
from otherix.cli.context import CliError, get_context
from otherix.cli.output import render_yaml_stream, wire
from otherix.cli.views.pools import (
    concept_text,
    list_manifests,
    pool_list_table,
    pool_list_wide_table,
    pool_manifests,
    pool_text,
)
from otherix.models.pools import StoragePool

__all__ = ["get_pool", "list_pools"]


@click.command("list")
@click.option("--node", metavar="NAME|UUID", help="Only instances on this node.")
@click.option("--type", "pool_type", metavar="TYPE", help="Only this pool type (local_dir).")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--cursor", help="Continue from a previous page's cursor.")
@output_option("table", ("table", "wide", "json", "yaml"))
@show_ids_option
@click.pass_context
def list_pools(
    cctx: click.Context,
    node: str | None,
    pool_type: str | None,
    limit: int,
    cursor: str | None,
    output: str,
    show_ids: bool,
) -> None:
    """List pool instances, one row per (name, node).

    \b
    Columns: NAME NODE TYPE PATH AVAILABLE STATUS DEFAULT AGE (ID first
    with --show-ids). DEFAULT is "yes" for the cluster default pool.
    -o wide adds CAPACITY VM-DISKS PROVISIONED CACHE SCRATCH OTHER (what
    the pool's VM disks, image cache and scratch take; "-" until measured).

    \b
    Example:
      otherix pool list --node node-a
      otherix pool list -o yaml > pools.yaml
    """
    fmt = validate_output(output, ("table", "wide", "json", "yaml"))
    ctx = get_context()
    page = ctx.client().list_pools(limit=limit, cursor=cursor, node=node, type=pool_type)
    render = pool_list_wide_table if fmt == "wide" else pool_list_table
    write_list_page(
        ctx,
        next_page_command(cctx),
        wire(page),
        "table" if fmt == "wide" else fmt,
        table=lambda rows: render(rows, ctx.now(), show_ids),
        manifests=list_manifests,
    )


@click.command("get")
@click.argument("ref", metavar="NAME|UUID")
@output_option("text", ("text", "json", "yaml"))
def get_pool(ref: str, output: str) -> None:
    """Show a pool: by name every instance, by UUID one instance in detail.

    A failed instance shows reconciliation_reason (pool_missing,
    pool_identity_mismatch, pool_device_changed, pool_path_overlap, ...);
    vm_disks (shown when there are any) counts the VM disks on it and how
    many are missing; usage (when the agent measured it) what its VM disks
    (allocated, and provisioned with the overcommit ratio), image cache,
    scratch and everything else take.

    -o yaml prints an apply-ready StoragePool manifest (one document with
    spec.nodeList when all instances share type and path).

    \b
    Example:
      otherix pool get default
      otherix pool get 8b1d2c3e-…  -o json
    """
    fmt = validate_output(output, ("text", "json", "yaml"))
    ctx = get_context()
    found = ctx.client().get_pool(ref)
    if fmt == "json":
        ctx.write(render_object(found, fmt))
    elif fmt == "yaml":
        try:
            ctx.write(render_yaml_stream(pool_manifests(wire(found))))
        except ValueError as exc:
            raise CliError(str(exc)) from exc
    elif isinstance(found, StoragePool):  # a UUID: one instance
        ctx.write(pool_text(wire(found), ctx.now()))
    else:
        ctx.write(concept_text(wire(found), ctx.now()))
