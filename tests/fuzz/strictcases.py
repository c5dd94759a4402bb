"""Targeted hostile cases generated from the live OpenAPI document, for
``test_fuzz_strict_input`` (schemathesis cannot produce a lone surrogate).

Owns the walk of each operation's request-body schema (``$ref``, ``anyOf``,
objects, arrays, free-form objects) into the fields a client can fill, and
the cases built from them:

- ``surrogate_cases``: for every operation and every string it takes (each
  string field of the body, each key and value of a free-form object, each
  query and path parameter), the operation with a lone surrogate there;
- ``depth_cases``: every operation with a body, nested 63, 64, 65 and 10,000
  levels deep at its first free-form object (or its first field);
- ``constant_cases``: ``NaN``, ``Infinity``, ``-Infinity`` at every body field;
- ``integer_cases``: 2^63-1, 2^63, 2^64, -1, -(2^63-1), -(2^63) at every
  integer field of a body (over a valid body of that operation) and of a query.

Each case says what must come back: ``refuse`` (400 ``validation_failed``
naming ``field``) or ``any`` (anything but a 5xx: the value is in range, and
the field's own bounds may still refuse it).
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

LONE = "\ud800"
BAD = f"x{LONE}y"
BAD_SHOWN = "x\\ud800y"  # how a key holding it is named in ``details.field``
INT64_MAX = 2**63 - 1
AGENT_OPERATIONS = frozenset({"nodeHeartbeat", "nodeWatch", "nodeTaskUpdate"})
PUBLIC_OPERATIONS = frozenset({"login", "refresh", "joinNode", "healthz", "readyz"})
#: path values when a case is about something else (the node's own name for agent routes)
NODE = "fuzz-node"


@dataclass(frozen=True)
class Field:
    path: tuple[str | int, ...]
    kind: str  # "string", "integer", "number", "boolean", "free" (free-form object), "any"

    @property
    def dotted(self) -> str:
        return ".".join(str(p) for p in self.path)


@dataclass
class Case:
    operation: str
    method: str
    path: str  # with path parameters filled in
    what: str
    body: bytes | None = None
    query: str = ""
    headers: dict[str, Any] = field(default_factory=dict)
    expect: str = "refuse"  # "refuse" or "any"
    field: str = ""  # for "refuse": the name details must give
    where: str = "body"


@dataclass(frozen=True)
class Operation:
    id: str
    method: str
    template: str
    body_schema: dict[str, Any] | None
    parameters: list[dict[str, Any]]


def operations(doc: dict[str, Any]) -> list[Operation]:
    out = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            out.append(
                Operation(
                    op["operationId"],
                    method.upper(),
                    path,
                    body.get("schema"),
                    op.get("parameters", []),
                )
            )
    return out


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = doc["components"]["schemas"].get(name) or schema.get("$defs", {}).get(name, {})
    return schema


def fields(
    doc: dict[str, Any], schema: dict[str, Any], path: tuple[str | int, ...] = ()
) -> list[Field]:
    """Every field a client can fill under ``schema``, free-form objects included."""
    schema = _resolve(doc, schema)
    branches = schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf")
    if branches:
        seen: dict[tuple[str | int, ...], Field] = {}
        for branch in branches:
            for f in fields(doc, branch, path):
                seen.setdefault(f.path, f)
        return list(seen.values())
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        out: list[Field] = []
        for name, sub in schema.get("properties", {}).items():
            out.extend(fields(doc, sub, (*path, name)))
        extra = schema.get("additionalProperties")
        if extra is True or extra == {}:
            out.append(Field(path, "free"))
        elif isinstance(extra, dict):
            out.extend(fields(doc, extra, (*path, "k")))
        return out
    if kind == "array":
        return fields(doc, schema.get("items", {}), (*path, 0))
    if kind in ("string", "integer", "number", "boolean"):
        return [Field(path, kind)]
    if kind == "null":
        return []
    return [Field(path, "any")]


def put(body: Any, path: tuple[str | int, ...], value: Any) -> Any:
    """``body`` (copied) with ``value`` at ``path``, creating what is missing."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        items = list(body) if isinstance(body, list) else []
        if not items:
            items.append({} if rest and isinstance(rest[0], str) else [])
        items[0] = put(items[0], rest, value)
        return items
    out = dict(body) if isinstance(body, dict) else {}
    out[head] = put(out.get(head), rest, value)
    return out


def raw(value: Any) -> bytes:
    """JSON with escapes, NaN and Infinity as Python writes them."""
    return json.dumps(value).encode("ascii")


def fill(template: str, **values: str) -> str:
    out = template
    for name in ("name", "id", "task_id", "token_id", "user_id", "user_ref"):
        out = out.replace("{" + name + "}", values.get(name, NODE if name == "name" else "x"))
    return out


# the cases ---------------------------------------------------------------------------------


def surrogate_cases(doc: dict[str, Any]) -> list[Case]:
    cases: list[Case] = []
    for op in operations(doc):
        url = fill(op.template)
        if op.body_schema is not None:
            for f in fields(doc, op.body_schema):
                if f.kind in ("string", "any"):
                    cases.append(
                        Case(
                            op.id,
                            op.method,
                            url,
                            f"string {f.dotted}",
                            raw(put({}, f.path, BAD)),
                            field=f.dotted,
                        )
                    )
                elif f.kind == "free":
                    value = put({}, (*f.path, "k"), BAD)
                    cases.append(
                        Case(
                            op.id,
                            op.method,
                            url,
                            f"value in {f.dotted}",
                            raw(value),
                            field=".".join(str(p) for p in (*f.path, "k")),
                        )
                    )
                    key = put({}, (*f.path, BAD), 1)
                    cases.append(
                        Case(
                            op.id,
                            op.method,
                            url,
                            f"key in {f.dotted}",
                            raw(key),
                            field=".".join(str(p) for p in (*f.path, BAD_SHOWN)),
                        )
                    )
        for p in op.parameters:
            if p["in"] == "query":
                cases.append(
                    Case(
                        op.id,
                        op.method,
                        url,
                        f"query {p['name']}",
                        query=f"{p['name']}=%ED%A0%80",
                        field=f"query.{p['name']}",
                        where="query",
                    )
                )
                cases.append(
                    Case(
                        op.id,
                        op.method,
                        url,
                        f"query {p['name']} (not UTF-8)",
                        query=f"{p['name']}=%FF",
                        field=f"query.{p['name']}",
                        where="query",
                    )
                )
            elif p["in"] == "path":
                bad_url = op.template
                for other in op.parameters:
                    if other["in"] == "path":
                        value = "%ED%A0%80" if other is p else fill("{" + other["name"] + "}")
                        bad_url = bad_url.replace("{" + other["name"] + "}", value)
                cases.append(
                    Case(
                        op.id,
                        op.method,
                        bad_url,
                        f"path {p['name']}",
                        field=f"path.{p['name']}",
                        where="path",
                    )
                )
        # a header every operation reads (mutating ones read Idempotency-Key too)
        header = "Idempotency-Key" if op.method != "GET" else "X-Request-Id"
        cases.append(
            Case(
                op.id,
                op.method,
                url,
                f"header {header}",
                headers={header: b"k\xed\xa0\x80"},
                field=f"header.{header.lower()}",
                where="header",
            )
        )
    return cases


def _depth_target(doc: dict[str, Any], op: Operation) -> tuple[str | int, ...]:
    assert op.body_schema is not None
    found = fields(doc, op.body_schema)
    free = [f for f in found if f.kind == "free"]
    return (*free[0].path, "k") if free else found[0].path


def depth_cases(doc: dict[str, Any]) -> list[Case]:
    cases = []
    for op in operations(doc):
        if op.body_schema is None:
            continue
        target = _depth_target(doc, op)
        # the body and every object or array on the way to ``target`` are a level each,
        # so with k arrays at ``target`` the body is len(target) + k deep
        for depth in (63, 64, 65, 10_000):
            arrays = depth - len(target)
            text = "[" * arrays + "1" + "]" * arrays
            body = raw(put({}, target, "@@"))
            body = body.replace(b'"@@"', text.encode())
            name = ".".join(str(p) for p in target)
            deep = depth > 64
            cases.append(
                Case(
                    op.id,
                    op.method,
                    fill(op.template),
                    f"depth {depth} at {name}",
                    body,
                    expect="refuse" if deep else "any",
                    field=name + ".0" * (65 - len(target) - 1) if deep else "",
                )
            )
    return cases


def constant_cases(doc: dict[str, Any]) -> list[Case]:
    cases = []
    for op in operations(doc):
        if op.body_schema is None:
            continue
        for f in fields(doc, op.body_schema):
            path = (*f.path, "k") if f.kind == "free" else f.path
            name = ".".join(str(p) for p in path)
            constants = (
                ("NaN", "Infinity", "-Infinity")
                if f.kind in ("integer", "number", "any", "free")
                else ("NaN",)
            )
            for constant in constants:
                body = raw(put({}, path, "@@")).replace(b'"@@"', constant.encode())
                cases.append(
                    Case(
                        op.id,
                        op.method,
                        fill(op.template),
                        f"{constant} at {name}",
                        body,
                        field=name,
                    )
                )
    return cases


INTEGERS = [
    (INT64_MAX, "any"),
    (INT64_MAX + 1, "refuse"),
    (2**64, "refuse"),
    (-1, "any"),
    (-INT64_MAX, "any"),
    (-INT64_MAX - 1, "refuse"),
]


def templates(task_id: str) -> dict[str, Any]:
    """Valid bodies, so an in-range integer is judged by its field (and stored)."""
    return {
        "nodeHeartbeat": {
            "agent_version": "fuzz",
            "architecture": "amd64",
            "revision": 0,
            "digest": "0" * 64,
            "pools": [
                {
                    "name": "fuzz-pool",
                    "reconciliation_status": "ready",
                    "capacity_bytes": 1 << 40,
                    "available_bytes": 1 << 39,
                    "images": [
                        {
                            "name": "fuzz.qcow2",
                            "sha256": "0" * 64,
                            "size_bytes": 1,
                            "virtual_size_bytes": 1,
                            "format": "qcow2",
                            "imported_at": "2026-01-01T00:00:00Z",
                        }
                    ],
                }
            ],
            "resources": {"cpu_cores_total": 2},
        },
        "nodeTaskUpdate": {"status": "running", "progress": 1},
        "createJoinToken": {"ttl_seconds": 3600, "max_uses": 1},
        "createVm": {
            "name": f"int-{uuid.uuid4().hex[:8]}",
            "image_url": "http://images.invalid/int.qcow2",
            "arch": "amd64",
            "vcpus": 1,
            "memory_mb": 64,
            "disk_gib": 0,
        },
        "_task": task_id,
    }


def integer_cases(doc: dict[str, Any], task_id: str) -> list[Case]:
    cases = []
    for op in operations(doc):
        url = fill(op.template, task_id=task_id)
        if op.body_schema is not None:
            for f in fields(doc, op.body_schema):
                if f.kind != "integer":
                    continue
                for value, expect in INTEGERS:
                    base = copy.deepcopy(templates(task_id).get(op.id, {}))
                    body = raw(put(base, f.path, value))
                    cases.append(
                        Case(
                            op.id,
                            op.method,
                            url,
                            f"{value} at {f.dotted}",
                            body,
                            expect=expect,
                            field=f.dotted,
                        )
                    )
        for p in op.parameters:
            kinds = [s.get("type") for s in p["schema"].get("anyOf", [p["schema"]])]
            if p["in"] == "query" and "integer" in kinds:
                for value, expect in INTEGERS:
                    query = f"{p['name']}={value}"
                    if op.id == "nodeWatch":
                        query += "&timeout=0" + ("" if p["name"] == "revision" else "&revision=0")
                    cases.append(
                        Case(
                            op.id,
                            op.method,
                            url,
                            f"query {p['name']}={value}",
                            query=query,
                            expect=expect,
                            field=p["name"],
                            where="query",
                        )
                    )
    return cases
