"""Items and pure plans for ``create|apply|delete -f`` (docs/pool-contract.md §12).

Owns the step from validated documents to the objects the commands act on:
a ``StoragePool`` expands to one :class:`PoolItem` per node, a ``VM`` is one
:class:`VmItem`; items are stably sorted StoragePool before VM (reversed for
delete). It also owns the diff behind ``apply``: given what the server
holds for an item (observed by ``.run``), :func:`pool_action` and
:func:`vm_action` say ``create``, ``unchanged`` or ``drift`` (with the
reasons). Nothing here does I/O, so plans get table tests.

Drift rules: a pool instance's ``path`` and ``type`` are immutable, so a
difference is drift (delete and re-create to change it). A VM drifts when a
key its manifest sets (with the defaults ``arch: amd64``, ``vcpus: 2``,
``memoryMB: 2048``) differs from the existing VM; keys the manifest leaves
out are the server's business and never drift. ``spec.node`` is compared
with the VM's requested node, ``spec.pool`` with the pool it asked for or
landed on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from otherix.cli.manifest.parse import Document, PoolSpec, VmSpec
from otherix.models.pools import PoolConceptView, StoragePool

__all__ = [
    "Action",
    "Item",
    "PoolItem",
    "VmItem",
    "expand",
    "find_instance",
    "pool_action",
    "vm_action",
]

KIND_ORDER = {"StoragePool": 0, "VM": 1}


@dataclass(frozen=True)
class PoolItem:
    """One pool instance: (name, node) with its type and path."""

    name: str
    node: str
    type: str
    path: str
    kind: str = "StoragePool"

    @property
    def label(self) -> str:
        return f"StoragePool/{self.name} on {self.node}"

    def body(self) -> dict[str, Any]:
        """The ``POST /v1/storage-pools`` body (no ``config``)."""
        return {"node": self.node, "name": self.name, "type": self.type, "path": self.path}


@dataclass(frozen=True)
class VmItem:
    """One VM and its create body."""

    name: str
    spec: VmSpec
    kind: str = "VM"

    @property
    def label(self) -> str:
        return f"VM/{self.name}"


Item = PoolItem | VmItem


@dataclass(frozen=True)
class Action:
    """What ``apply`` does with an item: ``create``, ``unchanged`` or ``drift``."""

    verb: Literal["create", "unchanged", "drift"]
    item: Item
    reasons: tuple[str, ...] = ()

    def text(self) -> str:
        """``create StoragePool/fast on node-2``; drift adds ``: <reasons>``."""
        line = f"{self.verb} {self.item.label}"
        return f"{line}: {'; '.join(self.reasons)}" if self.reasons else line


def expand(docs: Sequence[Document], *, reverse: bool = False) -> list[Item]:
    """Items in execution order: StoragePool then VM (document order within a kind).

    With ``reverse`` (delete) the whole order is reversed: VMs first, later
    documents first.
    """
    items: list[Item] = []
    for doc in docs:
        if isinstance(doc.spec, PoolSpec):
            spec = doc.spec
            items.extend(PoolItem(doc.name, node, spec.type, spec.path) for node in spec.nodes)
        else:
            items.append(VmItem(doc.name, doc.spec))
    items.sort(key=lambda item: KIND_ORDER[item.kind])
    return items[::-1] if reverse else items


def find_instance(concept: PoolConceptView | None, node: str) -> StoragePool | None:
    """The instance of a concept view (``GET /v1/storage-pools/{name}``) on ``node``."""
    if concept is None:
        return None
    for inst in concept.instances:
        if inst.node.lower() == node.lower():
            return inst
    return None


def pool_action(item: PoolItem, concept: PoolConceptView | None) -> Action:
    """Plan one pool instance against the concept view of its name (None: absent)."""
    inst = find_instance(concept, item.node)
    if inst is None:
        return Action("create", item)
    reasons: list[str] = []
    have_path = inst.path
    have_type = inst.type or (concept.type if concept else "")
    immutable = "(immutable; delete and re-create to change)"
    if have_path != item.path:
        reasons.append(f"path is {have_path}, manifest says {item.path} {immutable}")
    if have_type != item.type:
        reasons.append(f"type is {have_type}, manifest says {item.type} {immutable}")
    return Action("drift", item, tuple(reasons)) if reasons else Action("unchanged", item)


#: VM spec key -> field of the VM body it is compared with.
VM_OBSERVED = {
    "imageURL": "image_url",
    "imageSHA256": "image_sha256",
    "imagePullPolicy": "pull_policy",
    "arch": "architecture",
    "vcpus": "vcpus",
    "memoryMB": "memory_mb",
    "format": "format",
    "diskGiB": "disk_gib",
    "pool": "pool",
    "node": "node_hint",
    "powerState": "power_state",
    "restartPolicy": "restart_policy",
}


def vm_action(item: VmItem, vm: Mapping[str, Any] | None) -> Action:
    """Plan one VM against the existing VM body (None: absent)."""
    if vm is None:
        return Action("create", item)
    reasons: list[str] = []
    for key, want in item.spec.spec.items():
        have = vm.get(VM_OBSERVED[key])
        if key == "node" and isinstance(have, str) and have.lower() == str(want).lower():
            continue
        if have != want:
            shown = "unset" if have in (None, "") else have
            reasons.append(f"spec.{key} is {shown}, manifest says {want}")
    if reasons:
        reasons.append("(VMs are not updated in place; delete and re-create to change)")
        return Action("drift", item, tuple(reasons))
    return Action("unchanged", item)
