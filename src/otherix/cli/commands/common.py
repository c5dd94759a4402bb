"""Pieces shared by the command modules: ``-o``, ``--show-ids``, confirmation.

Owns the option decorators every resource module repeats (``-o/--output``
with its allowed formats, ``--show-ids``, ``--force``), the format check that
turns a bad ``-o`` into a usage error (exit 2: ``Error: --output: unknown
format …``) before any request, the confirmation rule of every destructive
command (:func:`require_confirmation`), printing a body in the chosen format,
and the list-page footer. No HTTP here.

The destructive-command rule (every ``delete``, ``token revoke``, ``cluster
unset-default-pool``, ``config remove``, ``delete -f``, and any new command
that destroys or resets something: call :func:`require_confirmation`):

- ``--force``: go ahead, no question.
- stdin is a terminal: ask ``<question> [y/N]: `` on stderr; "no" (or an
  empty answer, or EOF) exits 1 with ``Error: aborted: did not <action>``.
- stdin is not a terminal: refuse before doing anything, exit 2, with
  ``Error: refusing to <action> without confirmation: stdin is not a
  terminal; pass --force to <action> without being asked``.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
from click.core import ParameterSource
from pydantic import BaseModel

from otherix.cli.context import CliContext
from otherix.cli.errors import Declined, NeedsForce, usage_error
from otherix.cli.output import check_format, render_json, render_yaml, render_yaml_stream, wire
from otherix.cli.views.pools import paging_footer

__all__ = [
    "confirm",
    "force_option",
    "next_page_command",
    "output_option",
    "render_object",
    "require_confirmation",
    "show_ids_option",
    "validate_output",
    "wire",
    "write_list_page",
]

F = TypeVar("F", bound=Callable[..., Any])


def output_option(default: str, allowed: Sequence[str]) -> Callable[[F], F]:
    """``-o/--output``, checked by :func:`validate_output` inside the command.

    A plain string (not ``click.Choice``) so a bad value gives the documented
    ``--output: unknown format "x" (…)`` message (a usage error, exit 2).
    """
    return click.option(
        "-o",
        "--output",
        "output",
        default=default,
        show_default=True,
        metavar="FORMAT",
        help=f"Output format: {', '.join(allowed)}.",
    )


def validate_output(value: str, allowed: Sequence[str]) -> str:
    """Return ``value`` if allowed, else raise a usage error, exit 2 (no request sent)."""
    try:
        return check_format(value, allowed)
    except ValueError as exc:
        raise usage_error(str(exc)) from exc


def show_ids_option(func: F) -> F:
    return click.option("--show-ids", is_flag=True, help="Include resource UUIDs.")(func)


def force_option(help_text: str) -> Callable[[F], F]:
    return click.option("--force", is_flag=True, help=help_text)


def confirm(ctx: CliContext, question: str, *, accept_yes_word: bool = False) -> bool:
    """Ask ``<question> [y/N]: `` on stderr; True when the answer confirms.

    By default any answer starting with ``y``/``Y`` confirms (``pool
    delete``); with ``accept_yes_word`` only ``y`` or ``yes`` in any case do
    (``cluster unset-default-pool``). EOF or an empty answer declines.
    """
    answer = ctx.ask(f"{question} [y/N]: ")
    if accept_yes_word:
        return answer.lower() in ("y", "yes")
    return answer[:1] in ("y", "Y")


def require_confirmation(
    ctx: CliContext,
    action: str,
    *,
    force: bool,
    question: str | None = None,
    accept_yes_word: bool = False,
) -> None:
    """Return only when ``action`` (``"delete pool fast"``) may go ahead.

    ``--force`` goes ahead; on a terminal the operator is asked
    ``<question or action?> [y/N]: `` and a "no" raises :class:`Declined`
    (exit 1); without a terminal it raises :class:`NeedsForce` (exit 2), so a
    script that forgot ``--force`` never destroys anything by accident.
    """
    if force:
        return
    if not ctx.stdin_is_tty():
        raise NeedsForce(
            f"refusing to {action} without confirmation: stdin is not a terminal; "
            f"pass --force to {action} without being asked",
            ctx=click.get_current_context(silent=True),
        )
    if not confirm(ctx, question or f"{action}?", accept_yes_word=accept_yes_word):
        raise Declined(f"aborted: did not {action}")


def render_object(obj: Any, fmt: str) -> str:
    """Dump a decoded body, or a wire model as the server sends it, as ``json`` or ``yaml``."""
    if isinstance(obj, BaseModel):
        obj = wire(obj)
    return render_yaml(obj) if fmt == "yaml" else render_json(obj)


#: Never repeated in a next-page hint: the page itself, a secret, a debug switch.
_NOT_REPEATED = frozenset({"cursor", "token", "debug"})


def next_page_command(cctx: click.Context) -> str:
    """The command line that ran this list, minus ``--cursor``, to repeat for the next page.

    Every option given on the command line (or from the environment) is
    repeated, from the root's ``--cluster``/``--endpoint``/``--config`` to the
    list's filters (``--type local_dir --node a``) and ``--limit``/``-o``, so
    the next page comes from the same cluster with the same filters; the
    token and ``--debug`` are left out.
    """
    words: list[str] = []
    for level in reversed(_chain(cctx)):
        words.append(level.info_name or "")
        for param in level.command.params:
            name = param.name
            if not isinstance(param, click.Option) or name is None or name in _NOT_REPEATED:
                continue
            source = level.get_parameter_source(name)
            if source not in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
                continue
            value = level.params.get(name)
            flag = max(param.opts, key=len)
            if param.is_flag:
                if value:
                    words.append(flag)
            elif value is not None:
                words.extend((flag, str(value)))
    return " ".join(shlex.quote(w) for w in words if w)


def _chain(cctx: click.Context) -> list[click.Context]:
    chain = []
    current: click.Context | None = cctx
    while current is not None:
        chain.append(current)
        current = current.parent
    return chain


def write_list_page(
    ctx: CliContext,
    next_page: str,
    body: dict[str, Any],
    fmt: str,
    *,
    table: Callable[[list[dict[str, Any]]], str],
    manifests: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
) -> None:
    """One page of a list command: json (the whole body), yaml (manifests on
    stdout, the paging footer on stderr so stdout stays valid YAML) or a table
    followed by the footer. ``next_page`` is :func:`next_page_command`."""
    data = body.get("data") or []
    footer = paging_footer(next_page, (body.get("meta") or {}).get("next_cursor"))
    if fmt == "json":
        ctx.write(render_object(body, fmt))
    elif fmt == "yaml":
        ctx.write(render_yaml_stream(manifests(data)))
        ctx.err(footer)
    else:
        ctx.write(table(data))
        ctx.write(footer)
