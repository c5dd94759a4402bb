"""Pieces shared by the command modules: ``-o``, ``--show-ids``, confirmation.

Owns the option decorators every resource module repeats (``-o/--output``
with its allowed formats, ``--show-ids``, ``--force``), the format check that
turns a bad ``-o`` into ``error: --output: unknown format …`` before any
request, the ``[y/N]`` confirmation used by destructive commands, and
printing a body in the chosen format. No HTTP here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from otherix.cli.context import CliContext, CliError
from otherix.cli.output import check_format, render_json, render_yaml, render_yaml_stream
from otherix.cli.views.pools import paging_footer

__all__ = [
    "confirm",
    "force_option",
    "output_option",
    "render_object",
    "show_ids_option",
    "validate_output",
]

F = TypeVar("F", bound=Callable[..., Any])


def output_option(default: str, allowed: Sequence[str]) -> Callable[[F], F]:
    """``-o/--output``, checked by :func:`validate_output` inside the command.

    A plain string (not ``click.Choice``) so a bad value gives the contract's
    ``--output: unknown format "x" (…)`` message and exit 1.
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
    """Return ``value`` if allowed, else raise :class:`CliError` (no request sent)."""
    try:
        return check_format(value, allowed)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


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


def render_object(obj: Any, fmt: str) -> str:
    """Dump a decoded body as ``json`` or ``yaml``."""
    return render_yaml(obj) if fmt == "yaml" else render_json(obj)


def write_list_page(
    ctx: CliContext,
    command_path: str,
    body: dict[str, Any],
    fmt: str,
    *,
    table: Callable[[list[dict[str, Any]]], str],
    manifests: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
) -> None:
    """One page of a list command: json (the whole body), yaml (manifests on
    stdout, the paging footer on stderr so stdout stays valid YAML) or a table
    followed by the footer."""
    data = body.get("data") or []
    footer = paging_footer(command_path, (body.get("meta") or {}).get("next_cursor"))
    if fmt == "json":
        ctx.write(render_object(body, fmt))
    elif fmt == "yaml":
        ctx.write(render_yaml_stream(manifests(data)))
        ctx.err(footer)
    else:
        ctx.write(table(data))
        ctx.write(footer)
