"""The ``otherix`` root command: global flags, error rendering, ``main()``.

Owns the composition root of the CLI process: the root click group with the
global flags of docs/pool-contract.md §11.5 (``--endpoint``, ``--token``, ``--cluster``,
``--config``, ``--debug``, ``--version``), the check that refuses unknown
``OTHERIX_`` environment variables before any command runs
(``otherix.config.check_env``), the registration of one command group per
resource (``otherix.cli.commands.*``) plus the three manifest commands
``create -f``, ``apply -f`` and ``delete -f``, and the translation of every
failure into one sentence, ``Error: <sentence>`` on stderr
(``otherix.cli.errors.describe``). Console script:
``otherix = otherix.cli.main:main``.

Exit codes:

- ``0`` success.
- ``1`` every command failure: an API error (``Error: pool "x" not found;
  run 'otherix pool list' to see the pools``), a transport error
  (``Error: cannot connect to the control plane at http://...: connection
  refused``), config-file, environment and resolution errors, failed waits,
  a confirmation prompt answered "no" (``Error: aborted: did not delete
  ...``), and unexpected exceptions. A traceback, and the API error's code,
  status and details, are printed only with ``--debug`` (which also reports
  where the endpoint and token came from: ``flag``, ``env`` or
  ``config:<name>``).
- ``2`` usage errors, in click's ``Usage: …`` / ``Error: …`` form: click's
  own (unknown command or option, missing required option or argument, a
  value outside an ``IntRange``) and ours (an ``-o`` format the command does
  not have, an unparsable duration or JSON flag, a missing required input,
  and a destructive command run without a terminal and without ``--force``).
  Scripts can tell "you called it wrong" (2) apart from "it failed" (1).

Shell completion is click's: ``otherix completion bash|zsh|fish`` prints the
script (``eval "$(otherix completion bash)"``), and the script calls back
through the ``_OTHERIX_COMPLETE`` variable that click's ``main`` handles.
"""

from __future__ import annotations

import traceback
from typing import Any

import click

from otherix import __version__
from otherix.cli.commands.cluster import cluster
from otherix.cli.commands.completion import completion
from otherix.cli.commands.config import config
from otherix.cli.commands.manifests import apply_manifests, create_manifests, delete_manifests
from otherix.cli.commands.nodes import node
from otherix.cli.commands.pools import pool
from otherix.cli.commands.tasks import task
from otherix.cli.commands.tokens import token
from otherix.cli.commands.users import user
from otherix.cli.commands.version import version
from otherix.cli.commands.vms import vm
from otherix.cli.commands.vms_import import import_vm
from otherix.cli.context import CliContext, CliError
from otherix.cli.errors import debug_detail, describe
from otherix.config import ConfigError as EnvError
from otherix.config import check_env

__all__ = ["cli", "error_message", "main"]

PROG = "otherix"


def error_message(exc: BaseException) -> str:
    """The sentence after ``Error: `` for a failure escaping a command."""
    return describe(exc)


class OtherixGroup(click.Group):
    """A group that renders command failures as ``Error: <sentence>``, exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException, BrokenPipeError):
            raise  # click renders these (a closed pipe exits 1 quietly)
        except Exception as exc:
            obj = ctx.find_object(CliContext) or CliContext()
            if obj.debug:
                obj.err(traceback.format_exc())
                if (detail := debug_detail(exc)) is not None:
                    obj.err(detail + "\n")
            obj.err(f"Error: {error_message(exc)}\n")
            raise click.exceptions.Exit(1) from exc


@click.group(name=PROG, cls=OtherixGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--endpoint",
    metavar="URL",
    help="Control-plane URL (overrides $OTHERIX_SERVER and the config file). "
    "The config file's token is sent only to its own server: give --token for another.",
)
@click.option(
    "--token",
    metavar="TOKEN",
    help="API token or access token (overrides $OTHERIX_API_TOKEN and the config file).",
)
@click.option(
    "--cluster",
    "cluster_name",
    metavar="NAME",
    help="Use this config-file cluster entry instead of the current one.",
)
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="Config file (default: $OTHERIX_CONFIG, then ~/.otherix/config).",
)
@click.option(
    "--debug",
    is_flag=True,
    help="Say where the endpoint and token came from; print a traceback on failure.",
)
@click.version_option(__version__, "--version", prog_name=PROG, message="%(prog)s %(version)s")
@click.pass_context
def cli(
    ctx: click.Context,
    endpoint: str | None,
    token: str | None,
    cluster_name: str | None,
    config_path: str | None,
    debug: bool,
) -> None:
    """Manage an Otherix cluster: storage pools, VMs, tasks, nodes, users and tokens.

    \b
    Endpoint and token come from, in order: --endpoint/--token,
    $OTHERIX_SERVER/$OTHERIX_API_TOKEN, the --cluster entry or the current
    entry of ~/.otherix/config.

    \b
    Example:
      otherix config add cluster --name dev --server http://cp:8080 --login admin
      otherix pool list
    """
    obj = ctx.ensure_object(CliContext)
    obj.flag_endpoint = endpoint
    obj.flag_token = token
    obj.flag_cluster = cluster_name
    obj.flag_config = config_path
    obj.debug = debug
    ctx.call_on_close(obj.close)
    try:
        check_env(obj.env)
    except EnvError as exc:
        raise CliError(str(exc)) from exc


for _group in (config, user, token, node, pool, vm, task, cluster, completion):
    cli.add_command(_group)
for _command in (create_manifests, apply_manifests, delete_manifests, version):
    cli.add_command(_command)
vm.add_command(import_vm)  # drift (issue 16): its own module, beside the vm group


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and exit with its status."""
    cli.main(args=argv, prog_name=PROG, complete_var="_OTHERIX_COMPLETE")
