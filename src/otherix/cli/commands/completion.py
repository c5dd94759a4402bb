"""``otherix completion bash|zsh|fish``: print the shell-completion script.

Owns only the printing; completion itself is click's built-in machinery
(``click.shell_completion``), driven by the ``_OTHERIX_COMPLETE`` variable
that ``otherix.cli.main:main`` passes to click.
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from otherix.cli.context import CliError, get_context

__all__ = ["COMPLETE_VAR", "completion"]

COMPLETE_VAR = "_OTHERIX_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish).

    \b
    Examples:
      eval "$(otherix completion bash)"            # in ~/.bashrc
      eval "$(otherix completion zsh)"             # in ~/.zshrc
      otherix completion fish > ~/.config/fish/completions/otherix.fish
    """
    root = ctx.find_root()
    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click ships all three
        raise CliError(f"unsupported shell {shell!r}")
    script = cls(root.command, {}, root.info_name or "otherix", COMPLETE_VAR).source()
    get_context().write(script if script.endswith("\n") else script + "\n")
