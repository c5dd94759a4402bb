"""``otherix create|apply|delete -f``: declarative manifests (docs/pool-contract.md §12).

Owns the three top-level commands and their flags. Each reads every ``-f``
input and validates every document first (``otherix.cli.manifest.parse``):
if any document is invalid, every problem is printed as ``Error: manifest:
…`` and nothing is sent. Then the items (``.plan``) run through
``otherix.cli.manifest.run``.

Choices docs/pool-contract.md leaves open (documented in ``--help``, tested):

- ``create -f`` counts an object that already exists as a failure (exit 1);
  ``apply -f`` is the idempotent command.
- ``apply -f`` (not in the reference) creates what is missing, prints
  ``unchanged <obj>`` for what matches and ``drift <obj>: <why>`` for what
  differs, never changes an existing object, and exits 1 when anything
  drifted, so a pipeline notices.
- ``--dry-run`` of ``create -f`` and ``apply -f`` asks the server: each
  create is sent with ``?dry_run=true``, which runs every check of a real
  create (validation, node lookup, allowlist, uniqueness, default pool) and
  writes nothing. Accepted objects print ``would create <obj>`` (``create
  <obj>`` in the apply plan), refused ones ``<obj>: refused: <why>`` on
  stderr, and the command exits 1 when anything would be refused (or, for
  apply, drifted). ``delete -f --dry-run`` only lists what it would delete.
- ``delete -f`` reports an object that is already gone (``not found``), a
  blocked pool (``blocked by vm_disks: 1 (skipped, not forced)``) and a
  running VM (``running: stop it first ... (skipped, not forced)``; ``--force``
  only skips the prompt, unlike ``vm delete --force``) and exits 1 after
  trying the rest. It follows the destructive-command rule
  (``commands.common``): one prompt listing the objects on a terminal,
  refused without one, unless ``--force``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from otherix.cli.commands.common import require_confirmation
from otherix.cli.context import CliContext, CliError, get_context
from otherix.cli.manifest.load import ManifestError, read_sources
from otherix.cli.manifest.parse import parse_sources
from otherix.cli.manifest.plan import Item, expand
from otherix.cli.manifest.run import Runner
from otherix.cli.progress import parse_timeout

__all__ = ["apply_manifests", "create_manifests", "delete_manifests"]

F = TypeVar("F", bound=Callable[..., Any])


def _read_stdin() -> str:
    return sys.stdin.read() if sys.stdin is not None else ""


DRY_RUN_CREATE = "Ask the server to check every object (it writes nothing); print its verdict."
DRY_RUN_DELETE = "Print what would be deleted; send nothing."


def _common(wait_help: str, dry_run_help: str = DRY_RUN_CREATE) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        options = [
            click.option(
                "-f",
                "--filename",
                "files",
                multiple=True,
                required=True,
                metavar="FILE|DIR|-",
                help="Manifest file, directory (*.yaml, *.yml) or - for stdin; repeatable.",
            ),
            click.option("--dry-run", is_flag=True, help=dry_run_help),
            click.option("--wait", is_flag=True, help=wait_help),
            click.option(
                "--wait-timeout",
                default="5m",
                show_default=True,
                metavar="DURATION",
                help="Give up waiting after this long (e.g. 90s, 10m).",
            ),
        ]
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _load(files: tuple[str, ...], *, reverse: bool = False) -> list[Item]:
    """Every item of every input, validated before anything is sent."""
    try:
        docs = parse_sources(read_sources(files, _read_stdin))
    except ManifestError as exc:
        ctx = get_context()
        for problem in exc.problems[:-1]:
            ctx.warn(f"Error: {problem}")
        raise CliError(exc.problems[-1]) from exc
    return expand(docs, reverse=reverse)


def _finish(runner: Runner, total: int) -> None:
    if runner.failures:
        raise CliError(f"{runner.failures} of {total} objects failed")


def _runner(ctx: CliContext, wait: bool, timeout: float) -> Runner:
    return Runner(ctx, ctx.client(), wait=wait, timeout=timeout)


WAIT_CREATE = "Wait for pools to reconcile (ready/failed) and VM disks to be ready."


@click.command("create")
@_common(WAIT_CREATE)
def create_manifests(files: tuple[str, ...], dry_run: bool, wait: bool, wait_timeout: str) -> None:
    """Create every object in the manifests (StoragePool, then VM).

    A StoragePool with spec.nodeList is one pool instance per node. Every
    document is validated first; any problem fails the command before a
    request is sent. Then each object is tried; one that already exists is
    reported and the command exits 1 (use apply to skip existing objects).
    --dry-run sends each object as a server-side dry run: every check of a
    real create runs, nothing is written, and a refusal exits 1.

    \b
    Example:
      otherix create -f pools.yaml -f vms/ --wait
      otherix pool get fast -o yaml | otherix create -f - --dry-run
    """
    timeout = parse_timeout("--wait-timeout", wait_timeout)
    items = _load(files)
    ctx = get_context()
    runner = _runner(ctx, wait, timeout)
    if dry_run:
        runner.rehearse(items)
        if runner.failures:
            raise CliError(
                f"dry run: {runner.failures} of {len(items)} objects would be refused "
                "(nothing was created)"
            )
        return
    runner.create(items)
    _finish(runner, len(items))


@click.command("apply")
@_common(WAIT_CREATE + " Only objects created by this run are waited for.")
def apply_manifests(files: tuple[str, ...], dry_run: bool, wait: bool, wait_timeout: str) -> None:
    """Create what is missing; leave what matches; report drift, never change it.

    Idempotent: re-running it on an applied manifest prints only
    "unchanged" lines and exits 0. A pool instance whose path or type
    differs, or a VM whose spec differs, is reported as drift (exit 1) and
    left as it is: delete and re-create it to change it. --dry-run prints
    the plan (create / unchanged / drift) per node; each create in it is
    checked by the server as a dry run, and a refusal or a drift exits 1.

    \b
    Example:
      otherix apply -f pools.yaml --dry-run
      otherix apply -f pools.yaml -f vms.yaml --wait
    """
    timeout = parse_timeout("--wait-timeout", wait_timeout)
    items = _load(files)
    ctx = get_context()
    runner = _runner(ctx, wait, timeout)
    actions = runner.plan(items)
    if dry_run:
        for action in actions:
            if action.verb == "create":
                runner.rehearse([action.item], verb="create")
            else:
                ctx.line(action.text())
        refused = runner.failures
        drifted = sum(1 for a in actions if a.verb == "drift")
        if drifted or refused:
            what = [f"{drifted} drifted"] if drifted else []
            what += [f"{refused} would be refused"] if refused else []
            raise CliError(
                f"dry run: of {len(items)} objects, {' and '.join(what)} (nothing was changed)"
            )
        return
    runner.apply(actions)
    _finish(runner, len(items))


@click.command("delete")
@_common(
    "Wait for each VM's vm.delete task, so a following pool delete is not blocked.",
    DRY_RUN_DELETE,
)
@click.option("--force", is_flag=True, help="Do not ask (required when stdin is not a terminal).")
def delete_manifests(
    files: tuple[str, ...], dry_run: bool, wait: bool, wait_timeout: str, force: bool
) -> None:
    """Delete every object in the manifests, in reverse order (VM, then StoragePool).

    Each pool (name, node) is resolved to its instance UUID first. A pool
    still holding VM disks is reported and skipped (never forced); so is a
    running VM (stop it first) and an object that does not exist; the
    command then exits 1. Asks for
    confirmation when stdin is a terminal and refuses without one, unless
    --force.

    \b
    Example:
      otherix delete -f demo.yaml --wait --force
    """
    timeout = parse_timeout("--wait-timeout", wait_timeout)
    items = _load(files, reverse=True)
    ctx = get_context()
    if dry_run:
        for item in items:
            ctx.line(f"would delete {item.label}")
        return
    labels = ", ".join(item.label for item in items)
    require_confirmation(
        ctx,
        f"delete {len(items)} objects",
        force=force,
        question=f"delete {len(items)} objects ({labels})?",
    )
    runner = _runner(ctx, wait, timeout)
    runner.delete(items)
    _finish(runner, len(items))
