"""``otherix token list|create|revoke``: personal API tokens (docs/pool-contract.md §2).

Owns the API-token commands. Tokens are ``otx_…`` secrets shown exactly
once, at creation. Every role manages its own tokens; an admin may pass
``--user <id|username>`` to act on someone else's.

Choices docs/pool-contract.md leaves open: ``list`` shows
``ID NAME PREFIX STATUS EXPIRES LAST_USED AGE`` where STATUS is ``active``,
``revoked`` or ``expired``; ``create`` takes ``--expires-in 30d`` or
``--expires-at <RFC3339>`` (never both) and prints the secret on stdout
with a reminder on stderr that it is not shown again; ``revoke`` follows the
destructive-command rule (``commands.common``: a prompt on a TTY, refused
without one, unless ``--force``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

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
from otherix.cli.output import age, parse_timestamp, render_table, wire
from otherix.durations import parse_duration

__all__ = ["token"]

user_option = click.option(
    "--user",
    "user_ref",
    default="me",
    show_default=True,
    metavar="ID|USERNAME",
    help="Whose tokens (admin only for someone else).",
)


@click.group("token")
def token() -> None:
    """Manage API tokens.

    \b
    Example:
      otherix token create ci --expires-in 30d
      otherix token list
    """


def _status(t: dict[str, Any], ctx_now: Any) -> str:
    if t.get("revoked_at"):
        return "revoked"
    expires = parse_timestamp(t.get("expires_at"))
    if expires is not None and expires <= ctx_now:
        return "expired"
    return "active"


@token.command("list")
@user_option
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked tokens.")
@output_option("table", ("table", "json", "yaml"))
def list_tokens(user_ref: str, include_revoked: bool, output: str) -> None:
    """List API tokens (never their secrets).

    \b
    Example:
      otherix token list --all
    """
    fmt = validate_output(output, ("table", "json", "yaml"))
    ctx = get_context()
    body = wire(ctx.client().list_tokens(user_ref, include_revoked=include_revoked))
    if fmt != "table":
        ctx.write(render_object(body, fmt))
        return
    now = ctx.now()
    rows = [
        [
            str(t.get("id", "")),
            str(t.get("name", "")),
            str(t.get("prefix", "")),
            _status(t, now),
            str(t.get("expires_at") or "never"),
            age(t.get("last_used_at"), now) if t.get("last_used_at") else "never",
            age(t.get("created_at"), now),
        ]
        for t in body.get("data") or []
    ]
    headers = ("ID", "NAME", "PREFIX", "STATUS", "EXPIRES", "LAST_USED", "AGE")
    ctx.write(render_table(headers, rows))


@token.command("create")
@click.argument("name")
@click.option("--expires-in", metavar="DURATION", help="Lifetime, e.g. 30d or 12h.")
@click.option("--expires-at", metavar="RFC3339", help="Expiry time, e.g. 2030-01-01T00:00:00Z.")
@user_option
@output_option("text", ("text", "json"))
def create_token(
    name: str, expires_in: str | None, expires_at: str | None, user_ref: str, output: str
) -> None:
    """Create an API token; its secret is printed once.

    \b
    Example:
      otherix token create ci --expires-in 30d
      TOKEN=$(otherix token create ci -o json | jq -r .token)
    """
    fmt = validate_output(output, ("text", "json"))
    if expires_in and expires_at:
        raise click.UsageError("--expires-in and --expires-at are mutually exclusive")
    ctx = get_context()
    if expires_in:
        try:
            seconds = parse_duration(expires_in)
        except ValueError as exc:
            raise usage_error(f"--expires-in: {exc}") from exc
        expires_at = (ctx.now() + timedelta(seconds=seconds)).isoformat()
    created = ctx.client().create_token(name, expires_at, user=user_ref)
    if not created.token:
        # an Idempotency-Key replay: the secret was shown once and is not kept
        tid = created.id
        raise CliError(
            f"token {tid} was already created by an earlier request with this "
            "Idempotency-Key, and its secret is shown only once: revoke it with "
            f"'otherix token revoke {tid}' and create a new one"
        )
    if fmt == "json":
        ctx.write(render_object(created, fmt))
    else:
        shown = wire(created)  # times as the server wrote them
        ctx.line(f"id: {created.id}")
        ctx.line(f"name: {created.name}")
        ctx.line(f"expires_at: {shown['expires_at'] or 'never'}")
        ctx.line(f"token: {created.token}")
    ctx.warn("store this token now: it cannot be shown again")


@token.command("revoke")
@click.argument("token_id", metavar="TOKEN_ID")
@user_option
@force_option("Do not ask for confirmation (required when stdin is not a terminal).")
def revoke_token(token_id: str, user_ref: str, force: bool) -> None:
    """Revoke an API token by id (see 'otherix token list').

    Asks for confirmation when stdin is a terminal and refuses without one,
    unless --force. A script using the token fails from then on.

    \b
    Example:
      otherix token revoke 3f2c… --force
    """
    ctx = get_context()
    whose = "" if user_ref == "me" else f" of user {user_ref}"
    require_confirmation(ctx, f"revoke API token {token_id}{whose}", force=force)
    ctx.client().revoke_token(token_id, user=user_ref)
    ctx.line(f"token {token_id} revoked")
