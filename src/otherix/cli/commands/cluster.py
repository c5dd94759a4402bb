"""``otherix cluster get-default-pool|set-default-pool|unset-default-pool``.

The commands of docs/pool-contract.md §11.4.

Owns the cluster-settings commands. The default pool is a pool *name*; the
server validates that an instance with that name exists and stores its
canonical spelling. Reading needs ``cluster:read`` (every role), changing
needs ``cluster:manage`` (admin).

``unset-default-pool`` follows the destructive-command rule
(``commands.common``): it asks ``Clear cluster default pool? [y/N]: `` on
stderr when stdin is a TTY (only ``y``/``yes`` confirm), refuses without
``--force`` when it is not (exit 2), and a declined prompt exits 1.
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
from otherix.cli.context import get_context
from otherix.cli.views.pools import default_pool_text

__all__ = ["cluster"]

FORMATS = ("text", "json")


@click.group("cluster")
def cluster() -> None:
    """Cluster-wide settings: the default storage pool.

    \b
    Example:
      otherix cluster set-default-pool default
      otherix cluster get-default-pool
    """


@cluster.command("get-default-pool")
@output_option("text", FORMATS)
def get_default_pool(output: str) -> None:
    """Print the cluster default pool, or how to set one.

    Exits 0 when no default is set (JSON output is null).

    \b
    Example:
      otherix cluster get-default-pool -o json
    """
    fmt = validate_output(output, FORMATS)
    ctx = get_context()
    name = ctx.client().get_default_pool()
    if fmt == "json":
        ctx.write(render_object({"name": name} if name else None, fmt))
    else:
        ctx.write(default_pool_text(name))


@cluster.command("set-default-pool")
@click.argument("name")
@output_option("text", FORMATS)
def set_default_pool(name: str, output: str) -> None:
    """Make pool NAME (a name, not a UUID) the cluster default (admin).

    VMs created without --pool then land in it.

    \b
    Example:
      otherix cluster set-default-pool default
    """
    fmt = validate_output(output, FORMATS)
    ctx = get_context()
    canonical = ctx.client().set_default_pool(name)
    if fmt == "json":
        ctx.write(render_object({"name": canonical}, fmt))
    else:
        ctx.line(f"default pool set to '{canonical}'")


@cluster.command("unset-default-pool")
@force_option("Do not ask for confirmation (required when stdin is not a terminal).")
def unset_default_pool(force: bool) -> None:
    """Clear the cluster default pool (admin).

    \b
    Example:
      otherix cluster unset-default-pool --force
    """
    ctx = get_context()
    require_confirmation(
        ctx,
        "clear the cluster default pool",
        force=force,
        question="Clear cluster default pool?",
        accept_yes_word=True,
    )
    ctx.client().unset_default_pool()
    ctx.line("default pool cleared")
