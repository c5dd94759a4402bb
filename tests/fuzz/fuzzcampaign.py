"""A schemathesis campaign against a running control plane, for ``test_fuzz_openapi``.

Owns: seeding a server with one of everything (a ready node with a pool, a
default pool, a VM with its task, a scan task, a join token, an API token), the
per-operation strategies (schemathesis' coverage cases, then Hypothesis-driven
positive and negative cases, some aimed at the seeded resources), sending each
case to the live server and sorting every response into one of:

- ``server_errors``: a 5xx, or a connection that broke (``lost``);
- ``violations``: a response the schema does not allow (body, content type),
  or an undocumented status whose body is not the error envelope;
- ``undocumented``: an undocumented 4xx that is a well-formed error envelope
  (``{"error": {"code", "message", "details?"}}`` with a code of
  ``otherix.errors`` sent with that code's status). The OpenAPI document lists
  no error responses today (only FastAPI's 422, which the server never sends),
  so these are tallied as a known gap, not mixed up with real breakage.

Every count is incremented as the request is sent, never derived.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup, ServerError
from schemathesis.core.result import Err, Ok
from schemathesis.openapi.checks import UndefinedStatusCode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from otherix.errors import OtherixError


def _loaded(result: Ok[Any] | Err[Any]) -> Any:
    """The operation of one ``get_all_operations`` result; raises what failed to load."""
    if isinstance(result, Err):
        raise result.err()
    return result.ok()


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
#: routes that take a node credential, not a user token
AGENT_OPERATIONS = frozenset({"nodeHeartbeat", "nodeWatch", "nodeTaskUpdate"})
#: routes where a 401 is an answer about the request's own credentials, not our token
CREDENTIAL_OPERATIONS = frozenset({"login", "refresh", "joinNode", "rejoinNode"}) | AGENT_OPERATIONS
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NODE = "fuzz-node"
POOL = "fuzz-pool"
VM = "fuzz-vm"
POOLS_PREFIX = "/var/lib/otherix/pools/"  # in make_settings' allowlist; the API writes no files


def error_statuses() -> dict[str, set[int]]:
    """code -> the statuses the error tree sends it with (some codes have two)."""
    out: dict[str, set[int]] = defaultdict(set)
    stack: list[type[OtherixError]] = [OtherixError]
    while stack:
        cls = stack.pop()
        out[str(cls.code)].add(cls.http_status)
        stack.extend(cls.__subclasses__())
    return dict(out)


ERROR_STATUSES = error_statuses()


def is_error_envelope(status: int, body: bytes) -> bool:
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    if not isinstance(doc, dict) or set(doc) != {"error"} or not isinstance(doc["error"], dict):
        return False
    err = doc["error"]
    return (
        set(err) <= {"code", "message", "details"}
        and status in ERROR_STATUSES.get(cast(str, err.get("code")), set())
        and isinstance(err.get("message"), str)
        and bool(err["message"])
        and isinstance(err.get("details", {}), dict)
    )


# seeding ---------------------------------------------------------------------------------


@dataclass
class Seed:
    """Real resources, so that part of the cases get past ``404 not_found``."""

    node_credential: str
    pool_id: str
    vm_task_id: str
    scan_task_id: str
    join_token_id: str
    api_token_id: str
    own_user_id: str
    other_user_ids: list[str]

    def path_values(self, path: str) -> list[dict[str, str]]:
        """Path-parameter sets naming seeded resources for an operation's path template."""
        if path.startswith("/v1/nodes/join-tokens/"):
            return [{"token_id": self.join_token_id}]
        if path == "/v1/nodes/{name}/tasks/{task_id}":
            return [{"name": NODE, "task_id": t} for t in (self.vm_task_id, self.scan_task_id)]
        if path.startswith("/v1/nodes/{name}"):
            return [{"name": NODE}]
        if path.startswith("/v1/vms/{name}"):
            return [{"name": VM}]
        if path.startswith("/v1/storage-pools/{id}"):
            return [{"id": self.pool_id}, {"id": POOL}]
        if path.startswith("/v1/tasks/{task_id}"):
            return [{"task_id": self.vm_task_id}, {"task_id": self.scan_task_id}]
        if path == "/v1/users/{user_ref}/api-tokens/{token_id}":
            return [
                {"user_ref": ref, "token_id": self.api_token_id} for ref in ("me", self.own_user_id)
            ]
        if path.startswith("/v1/users/{user_ref}"):
            return [{"user_ref": ref} for ref in ("me", self.own_user_id, *self.other_user_ids)]
        if path.startswith("/v1/users/{user_id}"):
            return [{"user_id": ref} for ref in (self.own_user_id, *self.other_user_ids)]
        return []


def _ok(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
    body: dict[str, Any] = r.json()
    return body


def heartbeat_body(pools: list[dict[str, Any]]) -> dict[str, Any]:
    digest = hashlib.sha256(json.dumps(pools, sort_keys=True).encode()).hexdigest()
    return {
        "agent_version": "fuzz",
        "architecture": "amd64",
        "revision": 0,
        "digest": digest,
        "pools": pools,
    }


def seed(url: str, tokens: dict[str, str], role: str) -> Seed:
    """Create one of everything as admin; the API token belongs to ``role``."""

    def client(token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=url, headers=headers, timeout=30)

    with client(tokens["admin"]) as admin, client(None) as anon:
        join = _ok(admin.post("/v1/nodes/join-tokens", json={"max_uses": 1}), 201)
        spare = _ok(admin.post("/v1/nodes/join-tokens", json={}), 201)
        node = _ok(
            anon.post("/v1/nodes/join", json={"join_token": join["token"], "name": NODE}), 201
        )
        agent = {"Authorization": f"Bearer {node['credential']}"}
        _ok(anon.post(f"/v1/nodes/{NODE}/heartbeat", json=heartbeat_body([]), headers=agent), 200)
        body = {"node": NODE, "name": POOL, "type": "local_dir", "path": POOLS_PREFIX + POOL}
        pool = _ok(admin.post("/v1/storage-pools", json=body), 201)
        report = {
            "name": POOL,
            "reconciliation_status": "ready",
            "capacity_bytes": 1 << 40,
            "available_bytes": 1 << 39,
        }
        _ok(
            anon.post(f"/v1/nodes/{NODE}/heartbeat", json=heartbeat_body([report]), headers=agent),
            200,
        )
        _ok(admin.put("/v1/cluster/default-pool", json={"name": POOL}), 200)
        scan = _ok(admin.post(f"/v1/storage-pools/{pool['id']}/scan"), 202)
        vm_body = {
            "name": VM,
            "image_url": "http://images.invalid/fuzz.qcow2",
            "arch": "amd64",
            "vcpus": 1,
            "memory_mb": 64,
            "disk_gib": 1,
        }
        vm = _ok(admin.post("/v1/vms", json=vm_body), 201)
        users = {u["username"]: u["id"] for u in _ok(admin.get("/v1/users"), 200)["data"]}
    assert vm["status"]["task_id"], vm  # placed on the seeded node: a vm.create task exists
    with client(tokens[role]) as own:
        api_token = _ok(own.post("/v1/users/me/api-tokens", json={"name": "fuzz"}), 201)
    return Seed(
        node_credential=node["credential"],
        pool_id=pool["id"],
        vm_task_id=vm["status"]["task_id"],
        scan_task_id=scan["task_id"],
        join_token_id=spare["id"],
        api_token_id=api_token["id"],
        own_user_id=users[role],
        other_user_ids=[uid for name, uid in sorted(users.items()) if name != role],
    )


# the campaign ----------------------------------------------------------------------------


@dataclass
class Finding:
    operation: str
    kind: str  # "5xx", "lost", "schema" or "undocumented"
    status: int | None
    request: str
    response: str

    def __str__(self) -> str:
        return (
            f"{self.operation} -> {self.status} [{self.kind}]\n  {self.request}\n  {self.response}"
        )


@dataclass
class Campaign:
    role: str
    token: str
    seed: Seed
    coverage_cap: int  # coverage-phase cases per operation (0: no coverage phase)
    max_examples: int  # Hypothesis examples per operation
    cases: Counter[str] = field(default_factory=Counter)  # per operation label
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)
    failed_cases: int = 0  # cases with at least one 5xx/schema/undocumented finding
    undocumented_only: int = 0  # of those, cases whose only finding is an undocumented status
    operations: list[str] = field(default_factory=list)  # every label in the schema
    #: labels of routes that judge credentials sent in the request (login, agent routes...)
    credential_operations: set[str] = field(default_factory=set)
    seconds: float = 0.0  # wall time of ``run``
    final_me: int = 0  # status of GET /v1/users/me with our token after the run
    final_health: int = 0  # status of GET /healthz after the run

    # what a case is sent with ---------------------------------------------------------
    def _auth(self, operation: Any) -> dict[str, str]:
        token = self.seed.node_credential if self._as_agent(operation) else self.token
        return {"Authorization": f"Bearer {token}"}

    def _as_agent(self, operation: Any) -> bool:
        # Agent routes get the node's credential in the admin run (so heartbeats, watches
        # and task reports are processed), and the role's user token otherwise (401).
        op_id = operation.schema.get_operation_id(operation)
        return self.role == "admin" and op_id in AGENT_OPERATIONS

    def send(self, operation: Any, case: Any, idempotency_key: str | None) -> None:
        label = operation.label
        headers = self._auth(operation)
        if idempotency_key is not None and case.method.upper() in MUTATING:
            headers["Idempotency-Key"] = idempotency_key
        self.cases[label] += 1
        try:
            response = case.call(headers=headers, timeout=30)
        except requests.RequestException as exc:
            self.findings.append(Finding(label, "lost", None, _curl(case), repr(exc)))
            self.failed_cases += 1
            return
        status = response.status_code
        self.statuses[(label, status)] += 1
        kinds: list[str] = []
        if status >= 500:
            kinds.append("5xx")
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as group:
            for failure in group.exceptions:
                if isinstance(failure, ServerError):
                    kinds.append("5xx")
                elif isinstance(failure, UndefinedStatusCode) and (
                    400 <= status < 500 and is_error_envelope(status, response.content)
                ):
                    kinds.append("undocumented")
                else:
                    kinds.append(f"schema: {type(failure).__name__}: {failure.title}")
        for kind in dict.fromkeys(kinds):
            self.findings.append(
                Finding(
                    label,
                    kind,
                    status,
                    _curl(case),
                    response.content[:300].decode(errors="replace"),
                )
            )
        if kinds:
            self.failed_cases += 1
            self.undocumented_only += set(kinds) == {"undocumented"}

    # per operation ---------------------------------------------------------------------
    def strategy(self, schema: Any, operation: Any) -> st.SearchStrategy[Any]:
        query = {"timeout": 0} if self._as_agent(operation) and operation.method == "get" else None
        branches = [operation.as_strategy(mode, query=query) for mode in MODES]
        for values in self.seed.path_values(operation.path):
            branches += [
                operation.as_strategy(mode, path_parameters=values, query=query) for mode in MODES
            ]
        return st.one_of(branches)

    def run_operation(self, schema: Any, operation: Any) -> None:
        if self.coverage_cap:
            generation = schema.config.generation_for(operation=operation, phase="coverage")
            cases = schema.iter_coverage_cases(
                operation, generation_modes=MODES, generation_config=generation
            )
            for case in itertools.islice(cases, self.coverage_cap):
                if self._as_agent(operation) and (case.path_parameters or {}).get("name") == NODE:
                    case.query = {**(case.query or {}), "timeout": 0}  # never a 25 s long poll
                self.send(operation, case, None)

        # Mostly no key; else one of two keys per operation (a repeat replays or, with
        # another body, is 409 idempotency_key_mismatch) or any printable key up to 300
        # characters (over 255 is refused).
        label = operation.label.replace(" ", "")
        keys = st.one_of(
            st.none(),
            st.none(),
            st.none(),
            st.sampled_from([f"{label}-1", f"{label}-2"]),
            st.text(
                st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=300
            ),
        )

        @settings(
            max_examples=self.max_examples,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=self.strategy(schema, operation), key=keys)
        def fuzz(case: Any, key: str | None) -> None:
            self.send(operation, case, key)

        fuzz()

    def run(self, base_url: str) -> None:
        config = schemathesis.Config.from_dict({"generation": {"deterministic": True}})
        schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config)
        results = list(schema.get_all_operations())
        operations = [_loaded(r) for r in results]  # raises on a schema schemathesis cannot load
        self.operations = [op.label for op in operations]
        self.credential_operations = {
            op.label for op in operations if schema.get_operation_id(op) in CREDENTIAL_OPERATIONS
        }
        # Deletes last, so the seeded node, pool and VM serve the other operations first.
        for operation in sorted(operations, key=lambda op: op.method == "delete"):
            self.run_operation(schema, operation)

    # summaries -------------------------------------------------------------------------
    def of_kind(self, *kinds: str) -> list[Finding]:
        return [f for f in self.findings if f.kind.split(":")[0] in kinds]

    def refused_our_token(self) -> dict[str, int]:
        """401s on routes where only our own, valid token was presented: had the campaign
        lost its identity half-way, the rest would have tested nothing but the 401 path."""
        return {
            label: n
            for (label, status), n in self.statuses.items()
            if status == 401 and label not in self.credential_operations
        }


def _curl(case: Any) -> str:
    try:
        return str(case.as_curl_command())
    except Exception as exc:  # a curl rendering problem must not hide the finding
        return f"<{case.method} {case.formatted_path}: {exc!r}>"
