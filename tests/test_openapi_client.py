"""The frontend's typed client is generated from the backend's OpenAPI document.

frontend/openapi.json (committed, with frontend/src/api/schema.d.ts generated from it) must be
the document the app serves now, and every operation needs a unique camelCase operationId, the
stable names the generated types and the client are keyed by.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from backend.openapi import openapi_document, openapi_json

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "frontend" / "openapi.json"
SCHEMA_TS = REPO / "frontend" / "src" / "api" / "schema.d.ts"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
CAMEL_CASE = re.compile(r"^[a-z][a-z0-9]*(?:[A-Z][a-z0-9]*)*$")
REGENERATE = "run `make openapi` and commit frontend/openapi.json and frontend/src/api/schema.d.ts"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def _differences(committed: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What changed, by operation and schema, so the failure says where to look."""
    lines = []
    old = {f"{m} {p}": op for m, p, op in _operations(committed)}
    new = {f"{m} {p}": op for m, p, op in _operations(current)}
    lines += [f"  new operation: {k}" for k in sorted(new.keys() - old.keys())]
    lines += [f"  removed operation: {k}" for k in sorted(old.keys() - new.keys())]
    lines += [
        f"  changed operation: {k}" for k in sorted(old.keys() & new.keys()) if old[k] != new[k]
    ]
    old_s = committed.get("components", {}).get("schemas", {})
    new_s = current.get("components", {}).get("schemas", {})
    lines += [f"  new schema: {k}" for k in sorted(new_s.keys() - old_s.keys())]
    lines += [f"  removed schema: {k}" for k in sorted(old_s.keys() - new_s.keys())]
    lines += [
        f"  changed schema: {k}"
        for k in sorted(old_s.keys() & new_s.keys())
        if old_s[k] != new_s[k]
    ]
    if not lines:
        lines.append("  (the difference is outside paths and schemas, or only in formatting)")
    return lines


def test_committed_openapi_json_is_current(document: dict[str, Any]) -> None:
    assert COMMITTED.is_file(), f"{COMMITTED.relative_to(REPO)} is missing: {REGENERATE}"
    text = COMMITTED.read_text(encoding="utf-8")
    if text == openapi_json(document):
        return
    committed = json.loads(text)
    detail = "\n".join(_differences(committed, document))
    pytest.fail(
        f"frontend/openapi.json differs from the backend's OpenAPI document: {REGENERATE}.\n{detail}",
        pytrace=False,
    )


def test_generated_types_exist_and_name_every_operation(document: dict[str, Any]) -> None:
    assert SCHEMA_TS.is_file(), f"{SCHEMA_TS.relative_to(REPO)} is missing: {REGENERATE}"
    generated = SCHEMA_TS.read_text(encoding="utf-8")
    stale = [
        op["operationId"]
        for _, _, op in _operations(document)
        if op.get("operationId") and f"    {op['operationId']}: {{" not in generated
    ]
    assert not stale, f"schema.d.ts lacks operations {stale}: {REGENERATE}"


def test_every_operation_has_a_unique_camel_case_operation_id(document: dict[str, Any]) -> None:
    missing, bad, seen = [], [], {}
    for method, path, operation in _operations(document):
        where = f"{method} {path}"
        op_id = operation.get("operationId")
        if not op_id:
            missing.append(where)
            continue
        if not CAMEL_CASE.match(op_id):
            bad.append(f"{where}: {op_id!r}")
        seen.setdefault(op_id, []).append(where)
    duplicates = {op_id: where for op_id, where in seen.items() if len(where) > 1}
    problems = []
    if missing:
        problems.append(f"no operation_id= on the route: {missing}")
    if bad:
        problems.append(f"operationId not camelCase (e.g. listDatasets): {bad}")
    if duplicates:
        problems.append(f"operationId used more than once: {duplicates}")
    assert not problems, "; ".join(problems)
