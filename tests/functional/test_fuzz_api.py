"""Property-based fuzzing of the local API against its own OpenAPI document (technique:
schemathesis generates requests from functions/query/openapi.json, sends them over real HTTP to
ragline.server.LocalApiServer on 127.0.0.1 — embedded adapters, hashing embedder — with a valid
bearer token, and checks every response: never a 5xx, and the body matches the schema declared
for its status code). A second part sends what schemathesis will not: no token, a bad token, an
oversized body, broken JSON, unknown routes."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from ragline_testing import REPO
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from ragline import factory
from ragline.auth import mint_token
from ragline.ingest.pipeline import IngestItem

SCHEMA = schemathesis.openapi.from_path(str(REPO / "functions" / "query" / "openapi.json"))


@pytest.fixture
def api(make_app):
    from ragline.server import LocalApiServer

    app = make_app()
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/retention.txt",
                                   data=b"Invoices are kept for ten years. Payroll records are kept for seven years."))
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/board.md", groups=("board",),
                                   data=b"# Board\n\nThe merger closes in March."))
    factory.use(app)
    srv = LocalApiServer("127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    token = mint_token(app.settings, "acme", "fuzzer", ["board", "admins"])  # every route
    yield f"http://127.0.0.1:{srv.server_address[1]}", token
    srv.shutdown()
    srv.server_close()
    factory.use(None)


@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case, api):
    base, token = api
    case.call_and_validate(base_url=base, headers={"Authorization": f"Bearer {token}"},
                           checks=[not_a_server_error, response_schema_conformance], timeout=30)


def _raw(base, method, path, body=None, headers=None):
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_requests_outside_the_schema_get_clear_4xx(api):
    base, token = api
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    cases = [
        ("POST", "/v1/query", b'{"question": "x"}', {"Content-Type": "application/json"}, 401),
        ("POST", "/v1/query", b'{"question": "x"}', {"Authorization": "Bearer nope"}, 401),
        ("POST", "/v1/query", b'{"question": ', auth, 422),
        ("POST", "/v1/query", b"\xff\xfe\x00garbage", auth, 422),
        ("POST", "/v1/query", json.dumps({"question": "q" * 70_000}).encode(), auth, 413),
        ("POST", "/v1/query", json.dumps({"question": "q" * 2001}).encode(), auth, 422),
        ("POST", "/v1/query", json.dumps({"question": "invoices", "top_k": 1000}).encode(), auth, 422),
        ("POST", "/v1/documents/upload-url", json.dumps({"filename": "x.exe", "size": 10}).encode(), auth, 400),
        ("POST", "/v1/documents/upload-url", json.dumps({"filename": "x.pdf", "size": 10**12}).encode(), auth, 400),
        ("GET", "/v1/nowhere", None, auth, 404),
        ("GET", "/v1/documents/doc_does_not_exist", None, auth, 404),
    ]
    for method, path, body, headers, want in cases:
        status, payload = _raw(base, method, path, body, headers)
        assert status == want, (method, path, status, payload)
        assert set(payload) >= {"error", "message"} and payload["message"], payload
