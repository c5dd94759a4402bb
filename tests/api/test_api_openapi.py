"""The OpenAPI document is a contract: the generated schema must equal the
committed snapshot ``docs/openapi.json``, and every operation has a stable
operationId.

Regenerate the snapshot after an intended API change with:

    /tmp/venv/bin/python tests/api/test_api_openapi.py

(or any interpreter with the package installed), then review the diff.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = ROOT / "docs" / "openapi.json"
REGENERATE = "python tests/api/test_api_openapi.py"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def generate(data_dir: Path) -> str:
    from otherix.api.app import create_app
    from otherix.api.bootstrap import open_deps
    from support.server import make_settings

    deps = open_deps(make_settings(data_dir))
    try:
        schema = create_app(deps, run_workers=False).openapi()
    finally:
        deps.db.close()
    return json.dumps(schema, sort_keys=True, indent=2) + "\n"


@pytest.fixture(scope="module")
def schema_text(tmp_path_factory) -> str:
    return generate(tmp_path_factory.mktemp("openapi"))


@pytest.fixture(scope="module")
def schema(schema_text) -> dict[str, Any]:
    return json.loads(schema_text)


def _operations(schema: dict[str, Any]):
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield method.upper(), path, op


def test_schema_matches_the_committed_snapshot(schema_text):
    assert SNAPSHOT.exists(), f"{SNAPSHOT} is missing; create it with: {REGENERATE}"
    committed = SNAPSHOT.read_text(encoding="utf-8")
    if committed != schema_text:
        pytest.fail(
            f"the OpenAPI schema drifted from docs/openapi.json: {_drift(committed, schema_text)}."
            f" If the change is intended, regenerate the snapshot with `{REGENERATE}`, review"
            " the diff and commit it.",
            pytrace=False,
        )


def _changed(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[str]]:
    return {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(k for k in set(old) & set(new) if old[k] != new[k]),
    }


def _drift(committed: str, generated: str) -> str:
    old, new = json.loads(committed), json.loads(generated)
    parts = {
        "paths": _changed(old.get("paths", {}), new.get("paths", {})),
        "schemas": _changed(
            old.get("components", {}).get("schemas", {}),
            new.get("components", {}).get("schemas", {}),
        ),
    }
    text = "; ".join(
        f"{where} {kind}: {names}"
        for where, kinds in parts.items()
        for kind, names in kinds.items()
        if names
    )
    return text or "formatting or top-level fields differ"


def test_every_operation_has_a_unique_operation_id(schema):
    ids = []
    for method, path, op in _operations(schema):
        assert op.get("operationId"), f"{method} {path} has no operationId"
        ids.append(op["operationId"])
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_operation_ids_are_camel_case(schema):
    for method, path, op in _operations(schema):
        assert re.fullmatch(r"[a-z][A-Za-z0-9]*", op["operationId"]), (method, path)


def test_schema_documents_the_pool_contract(schema):
    paths = schema["paths"]
    assert paths["/v1/storage-pools"]["post"]["operationId"] == "createStoragePool"
    assert paths["/v1/storage-pools"]["get"]["operationId"] == "listStoragePools"
    assert paths["/v1/storage-pools/{id}"]["delete"]["operationId"] == "deleteStoragePool"
    assert paths["/v1/cluster/default-pool"]["put"]["operationId"] == "setDefaultPool"
    create = paths["/v1/storage-pools"]["post"]
    assert "201" in create["responses"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body["additionalProperties"] is False
    assert set(body["required"]) >= {"node", "name", "path"}
    assert "/metrics" not in paths  # scraped, not part of the API


def test_snapshot_is_sorted_and_indented():
    text = SNAPSHOT.read_text(encoding="utf-8")
    assert text == json.dumps(json.loads(text), sort_keys=True, indent=2) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "tests"))
    with tempfile.TemporaryDirectory() as tmp:
        SNAPSHOT.write_text(generate(Path(tmp)), encoding="utf-8")
    print(f"wrote {SNAPSHOT}")
