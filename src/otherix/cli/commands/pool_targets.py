"""Which pool instance a pool command acts on: UUID, name, or name + ``--node``.

Owns the client-side addressing rules shared by ``pool delete``, ``pool
update`` and ``pool scan`` (docs/pool-contract.md §11.4): an identifier that parses as a UUID
targets one instance; a name goes to the server as-is (which answers
``pool_name_ambiguous`` when it has several instances); a name with
``--node`` is resolved here with a GET by name to that node's instance UUID,
and the label printed to the operator becomes ``<name> on node <node>``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from otherix.cli.context import CliError
from otherix.cli.errors import usage_error
from otherix.cli.output import wire
from otherix.cli.views.pools import ORPHANED
from otherix.client.api import ApiClient
from otherix.client.errors import ApiError, ClientError
from otherix.errors import ErrorCode
from otherix.models.pools import PoolConceptView, StoragePool

__all__ = [
    "AMBIGUOUS",
    "Target",
    "ambiguous_error",
    "ambiguous_instances",
    "instances_of",
    "is_uuid",
    "resolve_target",
]

#: The code a JSON answer names for an ambiguous pool name (the server's own).
AMBIGUOUS = str(ErrorCode.POOL_NAME_AMBIGUOUS)


def is_uuid(ref: str) -> bool:
    """Whether ``ref`` parses as a UUID (then it names one instance)."""
    try:
        uuid.UUID(ref)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Target:
    """``ref`` is sent to the API; ``label`` is what the operator reads."""

    ref: str
    label: str


def _node(inst: dict[str, Any]) -> str:
    return str(inst.get("node") or ORPHANED)


def instances_of(found: StoragePool | PoolConceptView) -> list[StoragePool]:
    """The instances of a name's concept view; none when the server answered one
    instance (it took the name for a UUID)."""
    return found.instances if isinstance(found, PoolConceptView) else []


def resolve_target(api: ApiClient, ref: str, node: str | None) -> Target:
    """Turn ``<name|uuid> [--node N]`` into the identifier to send.

    ``--node`` with a UUID is an error (a UUID already targets one
    instance). With a name, a missing instance on that node is an error that
    lists the nodes the name does live on.
    """
    if not node:
        return Target(ref, ref)
    if is_uuid(ref):
        raise usage_error(
            "--node cannot be combined with an instance UUID: a UUID already targets one instance"
        )
    instances = instances_of(api.get_pool(ref))
    for inst in instances:
        if inst.node.lower() == node.lower():
            return Target(inst.id, f"{ref} on node {inst.node}")
    where = ", ".join(inst.node or ORPHANED for inst in instances) or "<none>"
    raise CliError(f'pool "{ref}" has no instance on node "{node}"; instances exist on: {where}')


def ambiguous_instances(api: ApiClient, name: str, exc: ApiError) -> list[dict[str, Any]]:
    """The instances behind an ambiguous name, as bodies: a GET by name, else the
    error's details."""
    try:
        instances = instances_of(api.get_pool(name))
        if instances:
            return [wire(inst) for inst in instances]
    except ClientError:
        pass
    fallback = exc.details.get("instances")
    return fallback if isinstance(fallback, list) else []


def ambiguous_error(api: ApiClient, name: str, exc: ApiError) -> CliError:
    """The error for ``update``/``scan`` on an ambiguous name: nodes, and how to retry."""
    instances = ambiguous_instances(api, name, exc)
    nodes = ", ".join(_node(i) for i in instances)
    return CliError(
        f'pool "{name}" is ambiguous: {len(instances)} instances (on nodes {nodes}); '
        "pass --node <node> or an instance UUID"
    )
