"""Generic CLI output renderers: formats, tables, JSON, YAML, sizes and ages.

Owns every resource-independent piece of presentation in the ``otherix`` CLI
(docs/pool-contract.md §11.1, §11.2): ``-o/--output`` validation, kubectl/tabwriter-style
tables, JSON and YAML dumps, IEC byte sizes and the kubectl ``AGE`` column.
Resource layouts (``otherix.cli.views.*``) and the click command modules call
these; nothing here does I/O, talks HTTP or knows about click.

Every renderer returns a complete string ending in a newline, so callers print
it as-is (``click.echo(text, nl=False)``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import yaml
from pydantic import BaseModel

__all__ = [
    "age",
    "check_format",
    "human_bytes",
    "parse_timestamp",
    "render_json",
    "render_table",
    "render_yaml",
    "render_yaml_stream",
    "wire",
]

_PADDING = 2

_KIB = 1 << 10
_UNITS: tuple[tuple[int, str], ...] = (
    (1 << 50, "PiB"),
    (1 << 40, "TiB"),
    (1 << 30, "GiB"),
    (1 << 20, "MiB"),
    (_KIB, "KiB"),
)

_RFC3339 = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})"
    r"(?:\.(?P<frac>\d+))?"
    r"(?P<tz>[Zz]|[+-]\d{2}:?\d{2})?$"
)


def check_format(value: str, allowed: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise ``ValueError``.

    The message lists the allowed formats in the order given, e.g.
    ``--output: unknown format "x" (text, json, table, yaml)``. The caller
    turns it into a usage error before any request is sent.
    """
    if value in allowed:
        return value
    raise ValueError(f'--output: unknown format "{value}" ({", ".join(allowed)})')


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Render left-aligned columns separated by 2 spaces, like kubectl.

    Matches Go's tabwriter (minwidth 0, tabwidth 0, padding 2): every column
    but the last is padded to its widest cell plus two spaces, and trailing
    spaces are stripped from each line. Rows shorter than the header are
    padded with empty cells.
    """
    width = len(headers)
    lines = [list(headers)] + [list(row) + [""] * (width - len(row)) for row in rows]
    widths = [max(len(line[col]) for line in lines) for col in range(width)]
    out: list[str] = []
    for line in lines:
        cells = [cell.ljust(widths[col] + _PADDING) for col, cell in enumerate(line[:-1])]
        cells.append(line[-1] if line else "")
        out.append("".join(cells).rstrip() + "\n")
    return "".join(out)


def wire(model: BaseModel) -> dict[str, Any]:
    """``model`` as its JSON body (times as the server writes them, ``...Z``), for
    the views, which read bodies."""
    return model.model_dump(mode="json")


def render_json(obj: object) -> str:
    """Dump ``obj`` as 2-space indented JSON with a trailing newline.

    Non-ASCII text is kept as-is. Whatever is given is dumped, so a body
    decoded from the server keeps ``null`` versus absent keys.
    """
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def _strip_doc_end(text: str) -> str:
    # safe_dump of a bare scalar appends an explicit "..." document end marker.
    return text.removesuffix("...\n")


def render_yaml(obj: object) -> str:
    """Dump one YAML document: block style, keys in insertion order."""
    text = yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return _strip_doc_end(text)


def render_yaml_stream(docs: Sequence[object]) -> str:
    """Dump several YAML documents separated by ``---`` lines.

    No leading ``---`` before the first document; an empty sequence renders
    as the empty string.
    """
    return "---\n".join(render_yaml(doc) for doc in docs)


def human_bytes(n: int | None) -> str:
    """Format a byte count in IEC units with one decimal, ``-`` for None.

    ``1023`` -> ``1023B``; ``1024`` -> ``1.0KiB``; then MiB, GiB, TiB, PiB.
    """
    if n is None:
        return "-"
    for size, unit in _UNITS:
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n}B"


def parse_timestamp(ts: str | None) -> datetime | None:
    """Parse an RFC3339 timestamp into an aware datetime, or None.

    Accepts ``Z``/``z`` or a numeric offset, a ``T``/``t``/space separator
    and any number of fraction digits (nanoseconds are truncated to
    microseconds). A timestamp without an offset is taken as UTC. Anything
    else, including impossible dates, gives None.
    """
    if not ts:
        return None
    match = _RFC3339.match(ts.strip())
    if match is None:
        return None
    frac = (match["frac"] or "")[:6].ljust(6, "0")
    try:
        parsed = datetime.fromisoformat(f"{match['date']}T{match['time']}.{frac}")
    except ValueError:
        return None
    return parsed.replace(tzinfo=_parse_offset(match["tz"]))


def _parse_offset(tz: str | None) -> timezone:
    if tz is None or tz in ("Z", "z"):
        return UTC
    digits = tz[1:].replace(":", "")
    delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return timezone(-delta if tz[0] == "-" else delta)


def age(ts: datetime | str | None, now: datetime) -> str:
    """Return the kubectl-style age of ``ts`` relative to ``now``.

    ``ts`` is a time as the server wrote it (RFC3339) or as a wire model holds
    it. ``Ns`` under a minute, ``Nm`` under an hour, ``Nh`` under a day, else
    ``Nd`` (all truncated). ``-`` when ``ts`` is None or unparsable; ``0s``
    when ``ts`` is in the future (clock skew). A naive ``now`` or ``ts`` is
    taken as UTC.
    """
    then = ts if isinstance(ts, datetime) else parse_timestamp(ts)
    if then is None:
        return "-"
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    seconds = int((now - then).total_seconds())
    if seconds < 0:
        return "0s"
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"
