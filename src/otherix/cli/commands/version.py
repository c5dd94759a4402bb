"""``otherix version``: the client's version and the control plane's.

Owns the one global command that reads the server without a token: the
server's version comes from ``GET /healthz`` (public), so it works before
logging in. With no cluster configured, or a server that does not answer, it
prints the client's version and then the error (exit 1).
"""

from __future__ import annotations

import click

from otherix import __version__
from otherix.cli.commands.common import output_option, render_object, validate_output
from otherix.cli.context import get_context

__all__ = ["version"]

FORMATS = ("text", "json")


@click.command("version")
@output_option("text", FORMATS)
def version(output: str) -> None:
    """Print the client's version and the control plane's.

    Agents may be one minor version older than the control plane, never newer
    (docs/operations.md, Upgrades).

    \b
    Example:
      otherix version
      otherix --cluster prod version -o json
    """
    fmt = validate_output(output, FORMATS)
    ctx = get_context()
    if fmt == "text":
        ctx.write(f"client: {__version__}\n")
    resolved = ctx.resolve()  # no endpoint configured: an error after the client line
    urls = resolved.urls
    api = ctx.client_for(urls[0] if len(urls) == 1 else urls, resolved.token or None)
    server = api.server_version()
    if fmt == "json":
        ctx.write(render_object({"client": __version__, "server": server}, fmt))
    else:
        ctx.write(f"server: {server} ({resolved.endpoint})\n")
