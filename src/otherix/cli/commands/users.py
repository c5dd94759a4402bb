"""``otherix user list|create|delete|disable|enable``: user accounts (docs/pool-contract.md §2).

Owns the user commands. ``list`` needs ``user:read`` (admin, operator);
``create``, ``delete``, ``disable`` and ``enable`` need ``user:manage`` (admin).
``disable`` ends every session of the user and refuses their logins and API
tokens until ``enable`` (``PATCH /v1/users/{id}`` with ``disabled``). The API's
``permission_denied`` error is printed as the server words it.

Choices docs/pool-contract.md leaves open: ``list`` shows ``NAME ROLE AGE``
(``ID`` first with ``--show-ids``); ``create`` takes ``--password``, then
``$OTHERIX_NEW_PASSWORD``, then a hidden prompt with confirmation on a TTY;
``delete`` accepts a username or id and follows the destructive-command
rule (``commands.common``): ``delete user <x>? [y/N]: `` on a TTY, refused
without one, unless ``--force``.
"""

from __future__ import annotations

import click

from otherix.cli.commands.common import (
    force_option,
    output_option,
    render_object,
    require_confirmation,
    show_ids_option,
    validate_output,
)
from otherix.cli.context import get_context
from otherix.cli.errors import usage_error
from otherix.cli.output import age, render_table, wire

__all__ = ["user"]

ROLES = ("admin", "operator", "developer", "viewer")
ENV_NEW_PASSWORD = "OTHERIX_NEW_PASSWORD"  # noqa: S105 - an env var name


@click.group("user")
def user() -> None:
    """Manage user accounts (admin).

    \b
    Example:
      otherix user create alice --role developer
      otherix user list
    """


@user.command("list")
@output_option("table", ("table", "json", "yaml"))
@show_ids_option
def list_users(output: str, show_ids: bool) -> None:
    """List users.

    \b
    Example:
      otherix user list -o json
    """
    fmt = validate_output(output, ("table", "json", "yaml"))
    ctx = get_context()
    body = wire(ctx.client().list_users())
    if fmt != "table":
        ctx.write(render_object(body, fmt))
        return
    now = ctx.now()
    rows = []
    for u in body.get("data") or []:
        row = [str(u.get("username", "")), str(u.get("role", "")), age(u.get("created_at"), now)]
        rows.append([str(u.get("id", "")), *row] if show_ids else row)
    headers = ("NAME", "ROLE", "AGE")
    ctx.write(render_table(("ID", *headers) if show_ids else headers, rows))


@user.command("create")
@click.argument("username")
@click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True, help="Role.")
@click.option("--password", help="Password (min 8 characters) [env: OTHERIX_NEW_PASSWORD].")
@output_option("text", ("text", "json"))
def create_user(username: str, role: str, password: str | None, output: str) -> None:
    """Create a user.

    \b
    Example:
      otherix user create alice --role developer --password 's3cret-pass'
    """
    fmt = validate_output(output, ("text", "json"))
    ctx = get_context()
    if not password:
        password = ctx.env.get(ENV_NEW_PASSWORD) or None
    if not password:
        if not ctx.stdin_is_tty():
            raise usage_error(f"missing --password (or set {ENV_NEW_PASSWORD})")
        password = str(
            click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
        )
    created = ctx.client().create_user(username, password, role)
    if fmt == "json":
        ctx.write(render_object(created, fmt))
        return
    ctx.line(f"user {created.username} created (role {created.role})")


@user.command("delete")
@click.argument("user_ref", metavar="USERNAME|ID")
@force_option("Do not ask for confirmation.")
def delete_user(user_ref: str, force: bool) -> None:
    """Delete a user by username or id.

    \b
    Example:
      otherix user delete alice --force
    """
    ctx = get_context()
    require_confirmation(ctx, f"delete user {user_ref}", force=force)
    ctx.client().delete_user(user_ref)
    ctx.line(f"user {user_ref} deleted")


@user.command("disable")
@click.argument("user_ref", metavar="USERNAME|ID")
def disable_user(user_ref: str) -> None:
    """Disable a user and end their sessions.

    Their access and refresh tokens stop working at once; logins and API
    tokens are refused until the user is enabled again.

    \b
    Example:
      otherix user disable alice
    """
    ctx = get_context()
    body = ctx.client().update_user(user_ref, {"disabled": True})
    ctx.line(f"user {body.username} disabled; every session ended")


@user.command("enable")
@click.argument("user_ref", metavar="USERNAME|ID")
def enable_user(user_ref: str) -> None:
    """Enable a disabled user.

    Their API tokens work again; ended sessions do not come back (log in).

    \b
    Example:
      otherix user enable alice
    """
    ctx = get_context()
    body = ctx.client().update_user(user_ref, {"disabled": False})
    ctx.line(f"user {body.username} enabled")
