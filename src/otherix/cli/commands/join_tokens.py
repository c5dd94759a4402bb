"""``otherix node join-token create|list|delete``: node enrolment tokens.

Owns the join-token commands (admin, ``node:manage``). A join token lets an
agent enrol a node once (or ``--max-uses`` times) before it expires; its
secret is shown only at creation. Mounted under ``otherix node`` by
``otherix.cli.commands.nodes``.

Choices docs/pool-contract.md leaves open: ``--ttl`` takes a duration (``24h``,
``7d``, ``90m``; default 24h); ``list`` shows
``ID PREFIX DESCRIPTION USES EXPIRES AGE`` with USES as ``used/max``
(``unlimited`` when there is no cap) and EXPIRES as the server's timestamp
or ``never``. ``delete`` follows the destructive-command rule
(``commands.common``).
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
from otherix.cli.context import CliError, get_context
from otherix.cli.errors import usage_error
from otherix.cli.output import age, render_table, wire
from otherix.durations import parse_duration

__all__ = ["join_token"]


@click.group("join-token")
def join_token() -> None:
    """Manage node join tokens (admin).

    \b
    Example:
      otherix node join-token create --ttl 1h --description "rack 4"
    """


@join_token.command("create")
@click.option("--ttl", default="24h", show_default=True, help="Lifetime, e.g. 1h, 7d.")
@click.option(
    "--max-uses", type=click.IntRange(min=1), default=1, show_default=True, help="Uses allowed."
)
@click.option("--description", default="", help="Free text shown in 'join-token list'.")
@output_option("text", ("text", "json"))
def create(ttl: str, max_uses: int, description: str, output: str) -> None:
    """Create a join token; its secret is printed once.

    \b
    Example:
      otherix node join-token create --ttl 24h --max-uses 3 -o json
    """
    fmt = validate_output(output, ("text", "json"))
    try:
        seconds = int(parse_duration(ttl))
    except ValueError as exc:
        raise usage_error(f"--ttl: {exc}") from exc
    ctx = get_context()
    created = ctx.client().create_join_token(seconds, max_uses, description)
    if not created.token:
        # an Idempotency-Key replay: the secret was shown once and is not kept
        tid = created.id
        raise CliError(
            f"join token {tid} was already created by an earlier request with this "
            "Idempotency-Key, and its secret is shown only once: delete it with "
            f"'otherix node join-token delete {tid}' and create a new one"
        )
    if fmt == "json":
        ctx.write(render_object(created, fmt))
    else:
        shown = wire(created)  # times as the server wrote them
        ctx.line(f"id: {created.id}")
        ctx.line(f"expires_at: {shown['expires_at'] or 'never'}")
        ctx.line(f"max_uses: {created.max_uses or 'unlimited'}")
        ctx.line(f"token: {created.token}")
    ctx.warn("store this token now: it cannot be shown again")


@join_token.command("list")
@output_option("table", ("table", "json", "yaml"))
def list_cmd(output: str) -> None:
    """List join tokens (never their secrets).

    \b
    Example:
      otherix node join-token list
    """
    fmt = validate_output(output, ("table", "json", "yaml"))
    ctx = get_context()
    body = wire(ctx.client().list_join_tokens())
    if fmt != "table":
        ctx.write(render_object(body, fmt))
        return
    now = ctx.now()
    rows = [
        [
            str(t.get("id", "")),
            str(t.get("prefix", "")),
            str(t.get("description") or ""),
            f"{t.get('uses', 0)}/{t.get('max_uses') or 'unlimited'}",
            str(t.get("expires_at") or "never"),
            age(t.get("created_at"), now),
        ]
        for t in body.get("data") or []
    ]
    ctx.write(render_table(("ID", "PREFIX", "DESCRIPTION", "USES", "EXPIRES", "AGE"), rows))


@join_token.command("delete")
@click.argument("token_id", metavar="ID")
@force_option("Do not ask for confirmation (required when stdin is not a terminal).")
def delete(token_id: str, force: bool) -> None:
    """Delete a join token so it can no longer enrol nodes.

    Asks for confirmation when stdin is a terminal and refuses without one,
    unless --force.

    \b
    Example:
      otherix node join-token delete 5d0e… --force
    """
    ctx = get_context()
    require_confirmation(ctx, f"delete join token {token_id}", force=force)
    ctx.client().delete_join_token(token_id)
    ctx.line(f"join token {token_id} deleted")
