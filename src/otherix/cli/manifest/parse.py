"""Validate loaded manifest documents into typed documents (docs/pool-contract.md §12).

Owns the step from loaded documents (``.load``) to validated ones: checking
each document (``apiVersion``, ``kind``, ``metadata.name``, the allowed keys
of ``metadata`` and ``spec`` and their types, ``node``/``nodeList``) and
duplicates across documents. Every problem names the document and the line
it is on, found from ``yaml.compose``-level nodes:
``manifest: document 2 (StoragePool/fast) line 7: unknown spec field "x"``.
With several ``-f`` inputs the message starts with the input's name and the
document index counts within that input. All problems of all documents are
collected and reported together; nothing here talks to a server.

Called by ``otherix.cli.commands.manifests``; the results go to ``.plan``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from otherix.cli.manifest.load import ManifestError, Source, load_documents

__all__ = [
    "API_VERSION",
    "Document",
    "ManifestError",
    "PoolSpec",
    "VmSpec",
    "parse_sources",
]

API_VERSION = "otherix/v1"
KINDS = ("StoragePool", "VM")
TOP_KEYS = ("apiVersion", "kind", "metadata", "spec")
METADATA_KEYS = ("name",)
POOL_KEYS = ("type", "path", "node", "nodeList")
#: VM spec key -> (expected type, wire field of ``POST /v1/vms``).
VM_KEYS: dict[str, tuple[type, str]] = {
    "imageURL": (str, "image_url"),
    "imageSHA256": (str, "image_sha256"),
    "imagePullPolicy": (str, "pull_policy"),
    "arch": (str, "arch"),
    "vcpus": (int, "vcpus"),
    "memoryMB": (int, "memory_mb"),
    "format": (str, "format"),
    "diskGiB": (int, "disk_gib"),
    "pool": (str, "pool"),
    "node": (str, "node"),
    "powerState": (str, "power_state"),
    "restartPolicy": (str, "restart_policy"),
}
VM_DEFAULTS: dict[str, Any] = {"arch": "amd64", "vcpus": 2, "memoryMB": 2048}
DEFAULT_POOL_TYPE = "local_dir"


@dataclass(frozen=True)
class PoolSpec:
    type: str
    path: str
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class VmSpec:
    #: The manifest spec with defaults applied (camelCase keys).
    spec: dict[str, Any]

    def body(self, name: str) -> dict[str, Any]:
        """The ``POST /v1/vms`` body."""
        out: dict[str, Any] = {"name": name}
        out.update({VM_KEYS[key][1]: value for key, value in self.spec.items()})
        return out


@dataclass(frozen=True)
class Document:
    """A valid document: where it came from, kind, name and spec."""

    where: str
    kind: str
    name: str
    spec: PoolSpec | VmSpec = field(compare=False)


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _key_nodes(node: yaml.Node) -> dict[str, tuple[int, yaml.Node]]:
    """For a mapping node: key -> (line of the key, value node)."""
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): (_line(k), v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}


@dataclass
class _Checker:
    """Collects the problems of one document."""

    prefix: str
    index: int
    node: yaml.Node
    kind: str = "?"
    name: str = "?"
    problems: list[tuple[int, str]] = field(default_factory=list)

    def add(self, line: int, message: str) -> None:
        self.problems.append((line, message))

    def messages(self) -> list[str]:
        head = f"manifest: {self.prefix}document {self.index} ({self.kind}/{self.name})"
        return [f"{head} line {line}: {msg}" for line, msg in self.problems]


def _unknown(
    check: _Checker, data: dict[str, Any], node: yaml.Node, allowed: Sequence[str], what: str
) -> None:
    lines = _key_nodes(node)
    for key in data:
        if key not in allowed:
            line = lines.get(str(key), (_line(node), node))[0]
            check.add(line, f'unknown {what}field "{key}"')


def _pool(check: _Checker, spec: dict[str, Any], node: yaml.Node) -> PoolSpec | None:
    keys = _key_nodes(node)

    def line(key: str) -> int:
        return keys[key][0] if key in keys else _line(node)

    before = len(check.problems)
    pool_type = spec.get("type")
    if pool_type is None:
        pool_type = DEFAULT_POOL_TYPE
    elif not isinstance(pool_type, str) or not pool_type.strip():
        check.add(line("type"), "spec.type must be a non-empty string")
    path = spec.get("path")
    if path is None:
        check.add(_line(node), "spec.path is required")
    elif not isinstance(path, str) or not path.strip():
        check.add(line("path"), "spec.path must be a non-empty string")
    single, many = spec.get("node"), spec.get("nodeList")
    nodes: list[str] = []
    if single is not None and many is not None:
        check.add(line("nodeList"), "spec.node and spec.nodeList are mutually exclusive")
    elif single is None and many is None:
        check.add(_line(node), "one of spec.node or spec.nodeList is required")
    elif single is not None:
        if not isinstance(single, str) or not single.strip():
            check.add(line("node"), "spec.node must be a non-empty node name")
        else:
            nodes.append(single.strip())
    elif not isinstance(many, list) or not many:
        check.add(line("nodeList"), "spec.nodeList must be a non-empty list of node names")
    else:
        for entry in many:
            if not isinstance(entry, str) or not entry.strip():
                check.add(line("nodeList"), "spec.nodeList contains an empty node name")
                break
            if entry.strip() not in nodes:
                nodes.append(entry.strip())
    if len(check.problems) > before:
        return None
    return PoolSpec(str(pool_type).strip(), str(path).strip(), tuple(nodes))


def _vm(check: _Checker, spec: dict[str, Any], node: yaml.Node) -> VmSpec | None:
    keys = _key_nodes(node)
    before = len(check.problems)
    if spec.get("imageURL") is None:
        check.add(_line(node), "spec.imageURL is required")
    out = dict(VM_DEFAULTS)
    for key, value in spec.items():
        if key not in VM_KEYS or value is None:
            continue
        want = VM_KEYS[key][0]
        if want is int and (isinstance(value, bool) or not isinstance(value, int)):
            check.add(keys[key][0], f"spec.{key} must be an integer")
        elif want is str and (not isinstance(value, str) or not value.strip()):
            check.add(keys[key][0], f"spec.{key} must be a non-empty string")
        else:
            out[key] = value.strip() if isinstance(value, str) else value
    if len(check.problems) > before:
        return None
    return VmSpec(out)


def _document(
    prefix: str, index: int, node: yaml.Node, data: Any
) -> tuple[Document | None, _Checker]:
    check = _Checker(prefix, index, node)
    if not isinstance(data, dict):
        check.add(_line(node), "a document must be a mapping")
        return None, check
    keys = _key_nodes(node)
    kind, meta = data.get("kind"), data.get("metadata")
    check.kind = str(kind) if kind is not None else "?"
    if isinstance(meta, dict) and isinstance(meta.get("name"), str) and meta["name"].strip():
        check.name = meta["name"].strip()
    _unknown(check, data, node, TOP_KEYS, "")
    if "apiVersion" not in data:
        check.add(_line(node), "apiVersion is required")
    elif data.get("apiVersion") != API_VERSION:
        where = keys.get("apiVersion", (_line(node), node))[0]
        check.add(where, f'apiVersion must be "{API_VERSION}" (got {data.get("apiVersion")!r})')
    if kind not in KINDS:
        where = keys.get("kind", (_line(node), node))[0]
        check.add(where, f"kind must be one of {', '.join(KINDS)} (got {kind!r})")
    if not isinstance(meta, dict):
        check.add(keys.get("metadata", (_line(node), node))[0], "metadata must be a mapping")
    else:
        meta_node = keys.get("metadata", (0, node))[1]
        _unknown(check, meta, meta_node, METADATA_KEYS, "metadata ")
        if check.name == "?":
            check.add(_line(meta_node), "metadata.name is required")
    spec = data.get("spec")
    if not isinstance(spec, dict):
        check.add(keys.get("spec", (_line(node), node))[0], "spec must be a mapping")
        return None, check
    spec_node = keys.get("spec", (0, node))[1]
    allowed = POOL_KEYS if kind == "StoragePool" else tuple(VM_KEYS)
    if kind not in KINDS:
        return None, check
    _unknown(check, spec, spec_node, allowed, "spec ")
    parsed = _pool(check, spec, spec_node) if kind == "StoragePool" else _vm(check, spec, spec_node)
    if parsed is None or check.problems:
        return None, check
    return Document(f"{prefix}document {index}", str(kind), check.name, parsed), check


def parse_sources(sources: Sequence[Source]) -> list[Document]:
    """Validate every document of every source; raise :class:`ManifestError` on any problem.

    An input with no documents at all is an error too (nothing to do is
    more likely a wrong path than an intent).
    """
    problems: list[str] = []
    docs: list[Document] = []
    many = len(sources) > 1
    for source in sources:
        prefix = f"{source.name}: " if many else ""
        try:
            loaded = load_documents(source)
        except ManifestError as exc:
            problems.extend(exc.problems)
            continue
        for index, (node, data) in enumerate(loaded, start=1):
            doc, check = _document(prefix, index, node, data)
            problems.extend(check.messages())
            if doc is not None:
                docs.append(doc)
    problems.extend(_duplicates(docs))
    if problems:
        raise ManifestError(problems)
    if not docs:
        raise ManifestError(["manifest: no documents found"])
    return docs


def _duplicates(docs: Sequence[Document]) -> list[str]:
    seen: dict[tuple[str, str, str], str] = {}
    problems: list[str] = []
    for doc in docs:
        nodes = doc.spec.nodes if isinstance(doc.spec, PoolSpec) else ("",)
        for node in nodes:
            key = (doc.kind, doc.name, node.lower())
            if key in seen:
                what = f"{doc.kind}/{doc.name}" + (f" on {node}" if node else "")
                problems.append(f"manifest: {doc.where}: duplicate {what} (also {seen[key]})")
            else:
                seen[key] = doc.where
    return problems
