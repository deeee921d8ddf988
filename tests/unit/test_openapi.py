"""The committed OpenAPI document is the one the resolver generates, and it lists exactly the
routes the API promises."""

from __future__ import annotations

import json
import sys

from ragline_testing import REPO

ROUTES = {
    ("post", "/v1/query"), ("get", "/v1/documents"), ("get", "/v1/documents/{doc_id}"),
    ("delete", "/v1/documents/{doc_id}"), ("post", "/v1/documents/upload-url"), ("post", "/v1/feedback"),
    ("get", "/v1/usage"), ("get", "/v1/ops/stats"),
}


def test_committed_openapi_matches_the_resolver():
    sys.path.insert(0, str(REPO / "tools"))
    from export_openapi import OUT, generate

    assert json.loads(OUT.read_text()) == json.loads(generate()), "run tools/export_openapi.py and commit"


def test_openapi_lists_the_routes():
    doc = json.loads((REPO / "functions" / "query" / "openapi.json").read_text())
    found = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert found == ROUTES
    q = doc["paths"]["/v1/query"]["post"]
    assert "requestBody" in q and "422" in q["responses"]
