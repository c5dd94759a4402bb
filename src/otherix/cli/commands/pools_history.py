"""``otherix pool history``: a pool instance's capacity samples and its trend (issue 16.6).

Reads ``GET /v1/storage-pools/{id}/capacity-history`` (every role that may read
pools). A pool is addressed like ``pool scrub``: a UUID, a unique name, or a name
plus ``--node``. ``--since`` takes a duration back from now (``24h``) or an RFC 3339
time; the samples print oldest first, then the trend line; ``-o json|yaml`` prints
the body as the server sent it (the web console's graph reads the same).
"""

from __future__ import annotations

from datetime import UTC, timedelta

import click

from otherix.cli.commands.common import output_option, render_object, validate_output
from otherix.cli.commands.pool_targets import ambiguous_error, resolve_target
from otherix.cli.context import get_context
from otherix.cli.errors import usage_error
from otherix.cli.output import parse_timestamp, wire
from otherix.cli.views.capacity import history_table, trend_text
from otherix.client.errors import PoolNameAmbiguousError
from otherix.durations import parse_duration

__all__ = ["pool_history"]


def _since(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        back = parse_duration(text)
    except ValueError:
        at = parse_timestamp(text)
        if at is None:
            raise usage_error(
                f'--since "{text}" is neither a duration (24h) nor an RFC 3339 time'
            ) from None
        return at.astimezone(UTC).isoformat()
    return (get_context().now() - timedelta(seconds=back)).astimezone(UTC).isoformat()


@click.command("history")
@click.argument("ref", metavar="POOL")
@click.option("--node", metavar="NAME", help="With a NAME: that node's instance.")
@click.option(
    "--since", metavar="DURATION|TIME", help="Only samples since then: 24h back, or a time."
)
@click.option("--limit", type=click.IntRange(1, 5000), default=None, help="At most this many.")
@output_option("table", ("table", "json", "yaml"))
def pool_history(
    ref: str, node: str | None, since: str | None, limit: int | None, output: str
) -> None:
    """Show a pool instance's capacity history and its time to full.

    Prints the samples of used bytes (one per capacity.sample_interval,
    kept for capacity.retention), oldest first, then the trend: the growth
    of used bytes per day and the estimated time to full ("not filling"
    when it does not grow; "unknown" before 3 samples over 2 intervals).
    Every role that may read pools may run it.

    \b
    Example:
      otherix pool history default --node node-a --since 24h
      otherix pool history 8b1d2c3e-… -o json
    """
    fmt = validate_output(output, ("table", "json", "yaml"))
    ctx = get_context()
    api = ctx.client()
    target = resolve_target(api, ref, node)
    try:
        found = api.pool_capacity_history(target.ref, since=_since(since), limit=limit)
    except PoolNameAmbiguousError as exc:
        raise ambiguous_error(api, target.ref, exc) from exc
    if fmt != "table":
        ctx.write(render_object(found, fmt))
        return
    body = wire(found)
    samples = body.get("samples") or []
    if samples:
        ctx.write(history_table(samples))
    else:
        ctx.line(f"no samples of pool {target.label} yet")
    if body.get("next_since"):
        ctx.line(f"(more samples: --since {body['next_since']})")
    ctx.line(f"trend: {trend_text(body.get('trend'))}")
