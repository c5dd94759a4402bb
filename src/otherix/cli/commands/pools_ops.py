"""``otherix pool update`` and ``otherix pool scan``: beyond the reference CLI.

Owns the two pool commands the reference CLI lacks (it had only
list/get/create/delete) but its API has: ``PATCH /v1/storage-pools/{id}``
(rename, replace ``config``) and ``POST /v1/storage-pools/{id}/scan`` (a
task that measures capacity). Both address a pool like ``pool delete``:
a UUID, a unique name, or a name plus ``--node``.

Choices (docs/pool-contract.md leaves them open): an ambiguous name fails with the nodes it
lives on and how to retry; ``update`` with neither ``--name`` nor
``--config-json`` is a usage error; ``scan`` prints the task id at once and
with ``--wait`` polls ``/v1/tasks/{id}`` (same backoff as ``create
--wait``, 60 s) and prints the capacity and available bytes it measured; a
failed or cancelled task is an error, and a timeout says the scan goes on
in the background.
"""

from __future__ import annotations

import json
from typing import Any

import click

from otherix.cli.commands.common import output_option, render_object, validate_output
from otherix.cli.commands.pool_targets import ambiguous_error, resolve_target
from otherix.cli.context import CliContext, CliError, get_context
from otherix.cli.errors import usage_error
from otherix.cli.output import human_bytes, wire
from otherix.cli.wait import poll
from otherix.client.api import ApiClient
from otherix.client.errors import PoolNameAmbiguousError
from otherix.durations import format_duration

__all__ = ["SCAN_WAIT_TIMEOUT", "cordon_pool", "scan_pool", "uncordon_pool", "update_pool"]

#: How long ``scan --wait`` waits for the task to finish.
SCAN_WAIT_TIMEOUT = 60.0
TERMINAL = ("success", "failed", "cancelled")


def _parse_config(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise usage_error(f"--config-json: invalid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise usage_error("--config-json: must be a JSON object")
    return value


@click.command("update")
@click.argument("ref", metavar="NAME|UUID")
@click.option("--node", metavar="NAME", help="With a NAME: update that node's instance.")
@click.option("--name", "new_name", metavar="NEW", help="Rename the instance.")
@click.option("--config-json", metavar="JSON", help="Replace config with this JSON object.")
@output_option("text", ("text", "json"))
def update_pool(
    ref: str, node: str | None, new_name: str | None, config_json: str | None, output: str
) -> None:
    """Rename a pool instance or replace its config (admin).

    A renamed pool that was the cluster default stops being the default.

    \b
    Example:
      otherix pool update fast --node node-a --name fast-nvme
      otherix pool update 8b1d2c3e-… --config-json '{"tier": "ssd"}'
    """
    fmt = validate_output(output, ("text", "json"))
    if new_name is None and config_json is None:
        raise click.UsageError("nothing to update: pass --name and/or --config-json")
    body: dict[str, Any] = {}
    if new_name is not None:
        body["name"] = new_name
    if config_json is not None:
        body["config"] = _parse_config(config_json)
    ctx = get_context()
    api = ctx.client()
    target = resolve_target(api, ref, node)
    try:
        pool = api.update_pool(target.ref, body)
    except PoolNameAmbiguousError as exc:
        raise ambiguous_error(api, target.ref, exc) from exc
    if fmt == "json":
        ctx.write(render_object(pool, fmt))
        return
    ctx.line(f"pool {target.label} updated")
    ctx.line(f"name: {pool.name}")
    ctx.line(f"node: {pool.node}")
    ctx.line(f"config: {json.dumps(pool.config, sort_keys=True)}")


def _wait_task(ctx: CliContext, api: ApiClient, task_id: str) -> dict[str, Any]:
    timeout = format_duration(SCAN_WAIT_TIMEOUT)
    ctx.warn(f"waiting for scan task {task_id} (timeout {timeout})…")
    outcome = poll(
        lambda: wire(api.get_task(task_id)),
        lambda t: t.get("status") in TERMINAL,
        timeout=SCAN_WAIT_TIMEOUT,
        sleep=ctx.sleep,
        monotonic=ctx.monotonic,
    )
    if not outcome.done:
        raise CliError(
            f"scan task {task_id} did not finish within {timeout} "
            f'(last status "{outcome.value.get("status")}"); it goes on in the background'
        )
    return outcome.value


def _task_failure(task: dict[str, Any]) -> str:
    if task.get("status") == "cancelled":
        return f"pool scan task {task.get('id', '')} was cancelled"
    error = task.get("error") or {}
    code = error.get("code") or "unknown"
    return f"pool scan failed: {code}: {error.get('message') or 'no message'}"


@click.command("scan")
@click.argument("ref", metavar="NAME|UUID")
@click.option("--node", metavar="NAME", help="With a NAME: scan that node's instance.")
@click.option("--wait", is_flag=True, help="Wait (up to 1m) and print what the scan measured.")
@output_option("text", ("text", "json"))
def scan_pool(ref: str, node: str | None, wait: bool, output: str) -> None:
    """Ask the node's agent to measure a pool's capacity (admin, operator).

    Prints the task id; with --wait, the measured capacity and free space.

    \b
    Example:
      otherix pool scan default --node node-a --wait
    """
    fmt = validate_output(output, ("text", "json"))
    ctx = get_context()
    api = ctx.client()
    target = resolve_target(api, ref, node)
    try:
        accepted = api.scan_pool(target.ref)
    except PoolNameAmbiguousError as exc:
        raise ambiguous_error(api, target.ref, exc) from exc
    task_id = accepted.task_id
    if fmt == "text":
        ctx.line(f"scan of pool {target.label} queued: task {task_id}")
    if not wait:
        if fmt == "json":
            ctx.write(render_object(accepted, fmt))
        return
    task = _wait_task(ctx, api, task_id)
    if fmt == "json":
        ctx.write(render_object(task, fmt))
    elif task.get("status") == "success":
        result = task.get("result") or {}
        ctx.line(f"capacity: {human_bytes(result.get('capacity_bytes'))}")
        ctx.line(f"available: {human_bytes(result.get('available_bytes'))}")
        if result.get("reported_at"):
            ctx.line(f"reported_at: {result['reported_at']}")
    if task.get("status") != "success":
        raise CliError(_task_failure(task))


def _cordon(ref: str, node: str | None, cordoned: bool) -> None:
    ctx = get_context()
    api = ctx.client()
    target = resolve_target(api, ref, node)
    try:
        api.cordon_pool(target.ref, cordoned)
    except PoolNameAmbiguousError as exc:
        raise ambiguous_error(api, target.ref, exc) from exc
    ctx.line(f"pool {target.label} {'cordoned' if cordoned else 'uncordoned'}")


@click.command("cordon")
@click.argument("ref", metavar="NAME|UUID")
@click.option("--node", metavar="NAME", help="With a NAME: that node's instance.")
def cordon_pool(ref: str, node: str | None) -> None:
    """Keep new VMs off a pool instance (admin); the VMs on it stay.

    Placement skips it; a VM created with --pool naming it is refused
    (pool_cordoned) when every instance of the pool is cordoned.

    \b
    Example:
      otherix pool cordon fast --node node-a
    """
    _cordon(ref, node, True)


@click.command("uncordon")
@click.argument("ref", metavar="NAME|UUID")
@click.option("--node", metavar="NAME", help="With a NAME: that node's instance.")
def uncordon_pool(ref: str, node: str | None) -> None:
    """Let placement use a pool instance again (admin).

    \b
    Example:
      otherix pool uncordon fast --node node-a
    """
    _cordon(ref, node, False)
