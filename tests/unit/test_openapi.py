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


def test_the_route_table_behind_405_is_the_resolvers_routes():
    # the 405 handler's Allow header comes from ragline.api.http.RouteTable, not Powertools'
    # private tables: it must list exactly the routes the resolver serves
    from ragline.api.http import RouteTable, build_resolver

    app = build_resolver(lambda: None, lambda: None)
    declared = {(m, rule.replace("<", "{").replace(">", "}")) for m, rule in app.ragline_routes.declared}
    assert declared == ROUTES
    one_segment = RouteTable.pattern("/v1/documents/<doc_id>")
    assert one_segment.match("/v1/documents/doc_1") and one_segment.match("/v1/documents/a.b-c")
    assert not one_segment.match("/v1/documents/doc_1/chunks") and not one_segment.match("/v1/documents/")
    assert not one_segment.match('/v1/documents/a"b')  # a character Powertools' route does not take: a 404
    assert not RouteTable.pattern("/v1/ops/stats").match("/v1/opsXstats")  # literal parts are literal
    assert app.ragline_routes.allowed("/v1/documents/doc_1") == ["DELETE", "GET"]
    assert app.ragline_routes.allowed("/v1/nowhere") == []
