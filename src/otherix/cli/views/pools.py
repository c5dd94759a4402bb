"""Storage-pool presentation for the CLI (docs/pool-contract.md §11.4).

Owns how pools look to an operator: the ``STATUS`` and ``AVAILABLE`` cells,
the ``pool list`` table and paging footer, the ``pool get`` text layouts for
the flat instance (``StoragePool``) and the concept view
(``PoolConceptView``), the ``-o yaml`` manifest projection, the blocked and
ambiguous ``pool delete`` messages and the ``cluster get-default-pool`` text.
The ``pool`` and ``cluster`` command modules call these with bodies exactly as
the REST API returns them; nothing here does I/O.

Choices docs/pool-contract.md leaves open (documented, tested):

- An orphaned instance (its node was soft-deleted, so ``node`` is ``""``)
  shows ``<orphaned>`` wherever a node name is printed (list ``NODE`` column,
  text views, ambiguous listing) instead of an empty cell.
- The YAML projection skips orphaned instances: they cannot be re-created
  from a manifest. Projecting a flat orphaned instance, or a concept whose
  instances are all orphaned, is an error; :func:`list_manifests` skips
  orphaned rows for ``pool list -o yaml``.
- Blocking resources are listed sorted by kind.
- ``pool get`` prints ``reconciliation_reason`` after ``reconciliation_error``
  when set, and ``vm_disks: N`` (``N (M missing)`` when some are) when the
  pool holds VM disks; a pool without disks keeps the plain layout.
- ``pool get`` prints a ``scrub:`` block (issue 16) once the agent reported one:
  last completion and rate, the scrub running now (bytes done of total), and
  every quarantined entry (image, expected and found sha256, where it lies).
- Timestamps in the text views are printed as the server sent them.
- ``pool get`` prints a ``usage:`` block (issue 16: VM disks, provisioned and
  the overcommit ratio, image cache, scratch, other) when the agent measured
  the pool, on the name view summed with the capacity; ``pool list -o wide``
  adds ``CAPACITY VM-DISKS PROVISIONED CACHE SCRATCH OTHER`` (``-`` when not
  measured).
- Text says what the JSON says: a null ``disk_pressure`` is ``none`` (no
  pressure recorded; ``-`` before the agent's first report, when nothing is
  known), never ``ok``; a null byte count is ``-``.

Every text function returns whole lines ending in a newline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from otherix.cli.output import age, human_bytes, render_table
from otherix.cli.views.capacity import has_samples, trend_text

__all__ = [
    "ORPHANED",
    "ambiguous_text",
    "available_cell",
    "blocked_delete_text",
    "concept_text",
    "default_pool_text",
    "list_manifests",
    "paging_footer",
    "pool_list_table",
    "pool_list_wide_table",
    "pool_manifests",
    "pool_status",
    "pool_text",
]

Pool = Mapping[str, Any]

ORPHANED = "<orphaned>"
API_VERSION = "otherix/v1"
KIND = "StoragePool"

_LIST_HEADERS = ("NAME", "NODE", "TYPE", "PATH", "AVAILABLE", "STATUS", "DEFAULT", "AGE")


def _node_label(p: Pool) -> str:
    node = p.get("node")
    return str(node) if node else ORPHANED


def _is_orphaned(p: Pool) -> bool:
    return not p.get("node")


def pool_status(p: Pool) -> str:
    """Return the worst-of ``STATUS`` cell for one instance.

    First match wins: ``failed`` (reconciliation) > ``unreachable`` (node) >
    ``cordoned`` (the node, or the pool instance itself: ``pool cordon``) >
    ``under_pressure`` (``disk_pressure`` set) >
    ``pending`` (reconciliation) > ``ready``. A node that is ``draining``,
    ``gone`` or null falls through to the pool-level checks.
    """
    reconciliation = p.get("reconciliation_status")
    node_status = p.get("node_status")
    if reconciliation == "failed":
        return "failed"
    if node_status == "unreachable":
        return "unreachable"
    if node_status == "cordoned" or p.get("cordoned"):
        return "cordoned"
    if p.get("disk_pressure") is not None:
        return "under_pressure"
    if reconciliation == "pending":
        return "pending"
    return "ready"


def available_cell(p: Pool) -> str:
    """Human ``available_bytes``, plus ``(effective X free)`` when it differs."""
    raw = p.get("available_bytes")
    effective = p.get("available_bytes_effective")
    cell = human_bytes(raw)
    if effective is not None and effective != raw:
        cell += f" (effective {human_bytes(effective)} free)"
    return cell


def _pressure_text(p: Pool, now: datetime) -> str:
    """``disk_pressure`` as the JSON says it: ``none`` for null (no pressure
    recorded), ``-`` when the agent has not reported the pool yet (null too,
    and nothing is known), else since when."""
    pressure = p.get("disk_pressure")
    if pressure is None:
        return "none" if p.get("reported_at") or p.get("available_bytes") is not None else "-"
    since = age(pressure.get("since"), now)
    return f"active since {since} ago (consecutive_count={pressure.get('consecutive_count', 0)})"


def _disks_text(p: Pool) -> str | None:
    """``vm_disks: 3 (1 missing)``, or None when the pool holds no VM disks."""
    counts = p.get("vm_disks")
    if not isinstance(counts, Mapping) or not counts.get("total"):
        return None
    text = f"vm_disks: {counts.get('total', 0)}"
    if counts.get("missing"):
        text += f" ({counts['missing']} missing)"
    return text


def _image_text(img: Mapping[str, Any]) -> str:
    sha = str(img.get("sha256") or "")[:12]
    return f"{img.get('name', '')} (sha {sha}, {human_bytes(img.get('size_bytes'))})"


def pool_list_table(pools: Sequence[Pool], now: datetime, show_ids: bool) -> str:
    """Render the ``pool list`` table, one row per instance.

    Columns ``NAME NODE TYPE PATH AVAILABLE STATUS DEFAULT AGE``, with ``ID``
    first when ``show_ids``. ``DEFAULT`` is ``yes`` or empty; ``AGE`` comes
    from ``created_at``. With no pools only the header line is printed.
    """
    headers = ("ID", *_LIST_HEADERS) if show_ids else _LIST_HEADERS
    return render_table(headers, _list_rows(pools, now, show_ids))


def _list_rows(pools: Sequence[Pool], now: datetime, show_ids: bool) -> list[list[str]]:
    rows: list[list[str]] = []
    for p in pools:
        row = [
            str(p.get("name", "")),
            _node_label(p),
            str(p.get("type", "")),
            str(p.get("path", "")),
            available_cell(p),
            pool_status(p),
            "yes" if p.get("is_cluster_default") else "",
            age(p.get("created_at"), now),
        ]
        rows.append([str(p.get("id", "")), *row] if show_ids else row)
    return rows


_WIDE_HEADERS = ("CAPACITY", "VM-DISKS", "PROVISIONED", "CACHE", "SCRATCH", "OTHER")
_WIDE_KEYS = (
    "vm_disk_bytes",
    "vm_provisioned_bytes",
    "image_cache_bytes",
    "scratch_bytes",
    "other_bytes",
)


def _usage(p: Pool) -> Mapping[str, Any]:
    usage = p.get("usage")
    return usage if isinstance(usage, Mapping) else {}


def pool_list_wide_table(pools: Sequence[Pool], now: datetime, show_ids: bool) -> str:
    """``pool list -o wide``: the table, then ``CAPACITY VM-DISKS PROVISIONED CACHE
    SCRATCH OTHER`` (human bytes, ``-`` where the pool was not measured)."""
    headers = ("ID", *_LIST_HEADERS) if show_ids else _LIST_HEADERS
    rows: list[list[str]] = []
    for p, row in zip(pools, _list_rows(pools, now, show_ids), strict=True):
        usage = _usage(p)
        extra = [human_bytes(p.get("capacity_bytes"))]
        extra += [human_bytes(usage.get(k)) for k in _WIDE_KEYS]
        rows.append([*row, *extra])
    return render_table((*headers, *_WIDE_HEADERS), rows)


def _usage_lines(usage: Mapping[str, Any], indent: str) -> list[str]:
    """The ``usage:`` block (nothing when the pool was not measured)."""
    if not usage:
        return []
    ratio = usage.get("overcommit_ratio")
    return [
        f"{indent}usage:",
        f"{indent}  vm_disks: {human_bytes(usage.get('vm_disk_bytes'))}",
        f"{indent}  vm_provisioned: {human_bytes(usage.get('vm_provisioned_bytes'))}"
        + ("" if ratio is None else f" (overcommit {ratio:g}x)"),
        f"{indent}  image_cache: {human_bytes(usage.get('image_cache_bytes'))}",
        f"{indent}  scratch: {human_bytes(usage.get('scratch_bytes'))}",
        f"{indent}  other: {human_bytes(usage.get('other_bytes'))}",
    ]


def _scrub_lines(scrub: object, indent: str) -> list[str]:
    """The ``scrub:`` block (nothing before the agent reported a scrub)."""
    if not isinstance(scrub, Mapping):
        return []
    rate = scrub.get("bytes_per_second")
    lines = [
        f"{indent}scrub:",
        f"{indent}  last_completed_at: {scrub.get('last_completed_at') or 'never'}"
        + (f" ({human_bytes(int(rate))}/s)" if isinstance(rate, int | float) else ""),
    ]
    running = scrub.get("running")
    if isinstance(running, Mapping):
        lines.append(
            f"{indent}  running: {human_bytes(running.get('bytes_done'))} of "
            f"{human_bytes(running.get('bytes_total'))}"
        )
    quarantined = [q for q in scrub.get("quarantined") or [] if isinstance(q, Mapping)]
    if not quarantined:
        lines.append(f"{indent}  quarantined: none")
        return lines
    lines.append(f"{indent}  quarantined:")
    for q in quarantined:
        lines.append(
            f"{indent}    - {q.get('image')}: expected {q.get('sha256_expected') or '?'}, "
            f"found {q.get('sha256_found') or '?'}, at {q.get('quarantined_at')} "
            f"in {q.get('path')}"
        )
    return lines


def paging_footer(command: str, next_cursor: str | None) -> str:
    """Return the "next page" hint printed after a list, or ``""``.

    ``command`` is the command line that ran the list with its filters
    (``otherix pool list --type local_dir``), so the hint is ready to run.
    """
    if not next_cursor:
        return ""
    return f"\nMore results - next page:\n  {command} --cursor {next_cursor}\n"


def pool_text(p: Pool, now: datetime) -> str:
    """Render the flat instance (``pool get <uuid>``) as ``key: value`` lines."""
    lines = [
        f"id: {p.get('id', '')}",
        f"name: {p.get('name', '')}",
        f"node: {_node_label(p)}",
        f"type: {p.get('type', '')}",
        f"path: {p.get('path', '')}",
        f"available: {available_cell(p)}",
        f"capacity_bytes: {human_bytes(p.get('capacity_bytes'))}",
    ]
    if p.get("reported_at"):
        lines.append(f"reported_at: {p['reported_at']}")
    lines.append(f"is_cluster_default: {'true' if p.get('is_cluster_default') else 'false'}")
    if p.get("cordoned"):
        lines.append("cordoned: true (placement skips it: 'otherix pool uncordon')")
    lines.append("pressure:")
    lines.append(f"  disk: {_pressure_text(p, now)}")
    for key in (
        "reconciliation_status",
        "last_reconciled_at",
        "reconciliation_error",
        "reconciliation_reason",
    ):
        if p.get(key):
            lines.append(f"{key}: {p[key]}")
    if (disks := _disks_text(p)) is not None:
        lines.append(disks)
    lines.extend(_usage_lines(_usage(p), ""))
    if has_samples(p.get("capacity_trend")):  # time to full (issue 16.6)
        lines.append(f"capacity_trend: {trend_text(p.get('capacity_trend'))}")
    lines.extend(_scrub_lines(p.get("scrub"), ""))
    images = p.get("images") or []
    if images:
        lines.append("images:")
        lines.extend(f"  - {_image_text(img)}" for img in images)
    conditions = p.get("conditions") or []
    if conditions:  # issue 12: overlapping paths from before the rule, orphaned pools
        lines.append("conditions:")
        lines.extend(f"  - {c.get('type', '')}: {c.get('message', '')}" for c in conditions)
    lines.append(f"created_at: {p.get('created_at', '')}")
    lines.append(f"updated_at: {p.get('updated_at', '')}")
    return "".join(f"{line}\n" for line in lines)


def concept_text(c: Pool, now: datetime) -> str:
    """Render the concept view (``pool get <name>``): header, then instances."""
    lines = [
        f"name: {c.get('name', '')}",
        f"type: {c.get('type', '')}",
        f"is_cluster_default: {'true' if c.get('is_cluster_default') else 'false'}",
    ]
    if (disks := _disks_text(c)) is not None:
        lines.append(disks)
    if c.get("capacity_bytes") is not None:
        lines.append(f"capacity_bytes: {human_bytes(c.get('capacity_bytes'))}")
        lines.append(f"available_bytes: {human_bytes(c.get('available_bytes'))}")
    lines.extend(_usage_lines(_usage(c), ""))
    instances = c.get("instances") or []
    if not instances:
        lines.append("instances: <none>")
    else:
        lines.append("instances:")
    for inst in instances:
        lines.append(f"  - node: {_node_label(inst)}")
        lines.append(f"    id: {inst.get('id', '')}")
        lines.append(f"    path: {inst.get('path', '')}")
        lines.append(f"    available: {available_cell(inst)}")
        lines.append(f"    disk_pressure: {_pressure_text(inst, now)}")
        lines.append(f"    reconciliation_status: {inst.get('reconciliation_status', '')}")
        if inst.get("cordoned"):
            lines.append("    cordoned: true")
        if inst.get("reconciliation_error"):
            lines.append(f"    reconciliation_error: {inst['reconciliation_error']}")
        if inst.get("reconciliation_reason"):
            lines.append(f"    reconciliation_reason: {inst['reconciliation_reason']}")
        if (disks := _disks_text(inst)) is not None:
            lines.append(f"    {disks}")
        lines.extend(_usage_lines(_usage(inst), "    "))
        if has_samples(inst.get("capacity_trend")):  # time to full (issue 16.6)
            lines.append(f"    capacity_trend: {trend_text(inst.get('capacity_trend'))}")
        lines.extend(_scrub_lines(inst.get("scrub"), "    "))
        lines.extend(f"    image: {_image_text(img)}" for img in inst.get("images") or [])
        lines.extend(
            f"    condition: {c.get('type', '')}: {c.get('message', '')}"
            for c in inst.get("conditions") or []
        )
    return "".join(f"{line}\n" for line in lines)


def _manifest(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec}


def _instance_manifest(p: Pool) -> dict[str, Any]:
    spec = {"type": p.get("type", ""), "path": p.get("path", ""), "node": p.get("node", "")}
    return _manifest(str(p.get("name", "")), spec)


def pool_manifests(obj: Pool) -> list[dict[str, Any]]:
    """Project a pool body into apply-ready ``StoragePool`` manifests.

    A flat instance (has ``id`` and ``node``) gives one document with
    ``spec {type, path, node}``. A concept view (has ``instances``) gives one
    document with ``spec.nodeList`` (instance order) when every instance
    shares type and path, else one document per instance. Never carries ids,
    the default flag, timestamps, status, reconciliation or ``config``.

    Raises ``ValueError`` for a concept with no (non-orphaned) instances, an
    orphaned flat instance, or a body of neither shape.
    """
    if "instances" in obj:
        name = str(obj.get("name", ""))
        live = [i for i in obj.get("instances") or [] if not _is_orphaned(i)]
        if not live:
            raise ValueError(f'manifest: pool concept "{name}" has no instances to project')
        shapes = {(i.get("type", obj.get("type", "")), i.get("path", "")) for i in live}
        if len(shapes) > 1:
            return [_instance_manifest(i) for i in live]
        ((pool_type, path),) = shapes
        spec = {"type": pool_type, "path": path, "nodeList": [str(i["node"]) for i in live]}
        return [_manifest(name, spec)]
    if "id" in obj and "node" in obj:
        if _is_orphaned(obj):
            raise ValueError(
                f'manifest: pool "{obj.get("name", "")}" instance {obj["id"]} is orphaned '
                "(its node was removed) and cannot be projected"
            )
        return [_instance_manifest(obj)]
    raise ValueError("manifest: not a storage pool instance or concept view")


def list_manifests(pools: Sequence[Pool]) -> list[dict[str, Any]]:
    """Project ``pool list`` rows, one manifest each, skipping orphaned rows."""
    return [_instance_manifest(p) for p in pools if not _is_orphaned(p)]


def blocked_delete_text(label: str, blocking: Mapping[str, int], vms: Sequence[str] | None) -> str:
    """Render the 409 "blocked by" block of ``pool delete``."""
    lines = [f"cannot delete pool {label} — blocked by:"]
    lines.extend(f"  - {kind}: {count}" for kind, count in sorted(blocking.items()))
    if vms:
        lines.append("")
        lines.append("VMs with a disk on this pool:")
        lines.extend(f"  - {vm}" for vm in vms)
    lines.append("")
    lines.append("clean up the listed dependents before retrying delete.")
    return "".join(f"{line}\n" for line in lines)


def ambiguous_text(name: str, instances: Sequence[Pool]) -> str:
    """Render the ``pool_name_ambiguous`` listing and the two ways to retry."""
    lines = [f'pool "{name}" maps to multiple per-node instances — pick one:', ""]
    lines.extend(f"  node {_node_label(i):<14}  {i.get('id', '')}" for i in instances)
    lines.append("retry by node:")
    lines.append(f"  otherix pool delete {name} --node <node>")
    lines.append("or by instance UUID:")
    lines.append("  otherix pool delete <uuid>")
    return "".join(f"{line}\n" for line in lines)


def default_pool_text(name: str | None) -> str:
    """Render ``cluster get-default-pool``: the name, or how to set one."""
    if name:
        return f"default-pool: {name}\n"
    return (
        "no default pool configured (run 'otherix cluster set-default-pool <name>' to configure)\n"
    )
