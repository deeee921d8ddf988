"""The local API on 127.0.0.1: a real HTTP server turning requests into API Gateway v2 events
for functions/query/handler.py (the Lambda's own handler), with the embedded adapters."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

from ragline import factory
from ragline.auth import mint_token
from ragline.ingest.pipeline import IngestItem


@pytest.fixture
def api(app):
    from ragline.server import LocalApiServer

    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/retention.txt",
                                   data=b"Invoices are kept for ten years. Payroll records are kept for seven years."))
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/board.txt",
                                   data=b"Board minutes: the Contoso merger closes in March.", groups=("board",)))
    app.pipeline.ingest(IngestItem(tenant="globex", key="tenants/globex/x.txt", data=b"Globex invoices are kept forever."))
    factory.use(app)
    srv = LocalApiServer("127.0.0.1", 0)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    yield base, app
    srv.shutdown()
    srv.server_close()
    factory.use(None)


def call(base, method, path, token=None, body=None, raw=None, headers=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def tok(app, tenant="acme", user="alice", groups=None, **kw):
    return mint_token(app.settings, tenant, user, groups or [], **kw)


def test_401_without_or_with_bad_token(api):
    base, app = api
    status, body = call(base, "POST", "/v1/query", body={"question": "invoices?"})
    assert status == 401 and "bearer" in body["message"]
    status, body = call(base, "POST", "/v1/query", token="not.a.jwt", body={"question": "invoices?"})
    assert status == 401
    expired = tok(app, ttl_s=-10)
    status, body = call(base, "POST", "/v1/query", token=expired, body={"question": "invoices?"})
    assert status == 401 and "expired" in body["message"]
    from ragline.settings import Settings

    forged = mint_token(Settings(home=app.settings.home, jwt_secret="another-secret-0123456789abcdef012345"), "acme", "mallory")
    status, body = call(base, "POST", "/v1/query", token=forged, body={"question": "invoices?"})
    assert status == 401 and "signature" in body["message"]


def test_query_200_with_citations(api):
    base, app = api
    status, body = call(base, "POST", "/v1/query", token=tok(app), body={"question": "How long are invoices kept?"})
    assert status == 200, body
    assert body["citations"] and body["citations"][0]["source"] == "tenants/acme/retention.txt"
    c = body["citations"][0]
    for field in ("doc_id", "version", "chunk_id", "source", "page", "score", "snippet"):
        assert field in c
    assert body["answer"].startswith("No generative model is configured")
    assert body["cached"] is False and body["latency_ms"] > 0


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({}, "question"),
        ({"question": ""}, "question"),
        ({"question": "x" * 2001}, "question"),
        ({"question": "ok", "top_k": 0}, "top_k"),
        ({"question": "ok", "top_k": 500}, "top_k"),
        ({"question": "ok", "tenant": "globex"}, "tenant"),  # a request field can never choose the tenant
    ],
)
def test_bad_input_is_4xx_with_a_message(api, body, fragment):
    base, app = api
    status, out = call(base, "POST", "/v1/query", token=tok(app), body=body)
    assert 400 <= status < 500
    assert fragment in out["message"]


def test_malformed_json_and_oversize_body(api):
    base, app = api
    status, out = call(base, "POST", "/v1/query", token=tok(app), raw=b"{not json")
    assert 400 <= status < 500 and out["message"]
    status, out = call(base, "POST", "/v1/query", token=tok(app), raw=b'{"question": "' + b"a" * 70000 + b'"}')
    assert status == 413


def test_documents_routes_are_tenant_and_group_scoped(api):
    base, app = api
    status, out = call(base, "GET", "/v1/documents", token=tok(app))
    assert status == 200 and [d["source_key"] for d in out["documents"]] == ["tenants/acme/retention.txt"]
    status, out = call(base, "GET", "/v1/documents", token=tok(app, groups=["board"]))
    assert out["count"] == 2
    board_id = next(d["doc_id"] for d in out["documents"] if d["source_key"].endswith("board.txt"))
    assert call(base, "GET", f"/v1/documents/{board_id}", token=tok(app))[0] == 404
    assert call(base, "GET", f"/v1/documents/{board_id}", token=tok(app, tenant="globex", groups=["board"]))[0] == 404
    assert call(base, "DELETE", f"/v1/documents/{board_id}", token=tok(app, tenant="globex", groups=["board", "admins"]))[0] == 404
    # a member who can see the document still may not delete it: only the tenant's admins
    status, out = call(base, "DELETE", f"/v1/documents/{board_id}", token=tok(app, groups=["board"]))
    assert status == 403 and "admins" in out["message"]
    status, out = call(base, "GET", f"/v1/documents/{board_id}", token=tok(app, groups=["board"]))
    assert status == 200 and out["status"] == "indexed" and out["chunks"] == 1
    status, out = call(base, "DELETE", f"/v1/documents/{board_id}", token=tok(app, groups=["board", "admins"]))
    assert status == 200 and out["status"] == "deleted"
    assert call(base, "GET", f"/v1/documents/{board_id}", token=tok(app, groups=["board"]))[0] == 404


def test_feedback_usage_and_upload_url(api):
    base, app = api
    status, q = call(base, "POST", "/v1/query", token=tok(app), body={"question": "payroll records"})
    assert status == 200
    status, out = call(base, "POST", "/v1/feedback", token=tok(app), body={"query_id": q["query_id"], "rating": 1})
    assert status == 200 and out["recorded"]
    # another tenant cannot rate this query
    status, out = call(base, "POST", "/v1/feedback", token=tok(app, tenant="globex"), body={"query_id": q["query_id"], "rating": -1})
    assert status == 404
    assert call(base, "POST", "/v1/feedback", token=tok(app), body={"query_id": q["query_id"], "rating": 5})[0] == 422
    # usage and uploads are the tenant admins': a member gets a 403 that says so
    for method, path, body in (("GET", "/v1/usage?days=3", None),
                               ("POST", "/v1/documents/upload-url", {"filename": "a.pdf", "size": 1000})):
        status, out = call(base, method, path, token=tok(app), body=body)
        assert status == 403 and "admins" in out["message"], (path, out)
    admin = tok(app, groups=["admins"])
    status, out = call(base, "GET", "/v1/usage?days=3", token=admin)
    assert status == 200 and out["tenant"] == "acme" and out["days"] == 3
    assert call(base, "GET", "/v1/usage?days=0", token=admin)[0] == 422
    status, out = call(base, "POST", "/v1/documents/upload-url", token=admin, body={"filename": "a.pdf", "size": 1000})
    assert status == 200 and out["key"].startswith("tenants/acme/")
    status, out = call(base, "POST", "/v1/documents/upload-url", token=admin, body={"filename": "a.exe", "size": 1000})
    assert status == 400 and "unsupported" in out["message"]
    status, out = call(base, "POST", "/v1/documents/upload-url", token=admin, body={"filename": "a.pdf", "size": 10**12})
    assert status == 400
    status, out = call(base, "POST", "/v1/documents/upload-url", token=admin, body={"filename": "a.pdf", "size": 10, "groups": ["board"]})
    assert status == 403


def test_unknown_route_is_404_and_health_is_open(api):
    base, app = api
    assert call(base, "GET", "/v1/nope", token=tok(app))[0] == 404
    assert call(base, "GET", "/healthz")[0] == 200


def test_concurrent_requests(api):
    base, app = api
    t = tok(app)
    results = []

    def worker():
        results.append(call(base, "POST", "/v1/query", token=t, body={"question": "invoices kept", "use_cache": False})[0])

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert results == [200] * 8


def test_an_upload_content_type_must_be_the_extensions_own(api):
    base, app = api
    admin = tok(app, groups=["admins"])
    for ctype in ("text/html", "text/plain\r\nX-Evil: 1", "application/x-msdownload"):
        status, out = call(base, "POST", "/v1/documents/upload-url", token=admin,
                           body={"filename": "notes.txt", "size": 10, "content_type": ctype})
        assert status in (400, 422) and "content_type" in out["message"], (ctype, out)
    status, out = call(base, "POST", "/v1/documents/upload-url", token=admin,
                       body={"filename": "notes.txt", "size": 10, "content_type": "Text/Plain; charset=utf-8"})
    assert status == 200 and out["fields"]["Content-Type"] == "Text/Plain; charset=utf-8"
