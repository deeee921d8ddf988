"""Bad API requests get a clear 4xx, never a 500, and the query Lambda handler (fed API Gateway
v2 events) and the local server (a real HTTP server in front of that same handler) answer the
same request the same way: malformed, too deep or too large JSON, a body that is not UTF-8, JSON
media types in any spelling, a broken Content-Length, a known route with the wrong method, and
names with a trailing newline."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading

import pytest

from ragline import factory
from ragline.auth import mint_token, principal_from_claims
from ragline.errors import Unauthorized
from ragline.ingest.pipeline import IngestItem
from ragline.server import LambdaContext, http_event, load_handler

CLAIMS = {"sub": "alice", "custom:tenant": "acme"}
QUESTION = b'{"question": "How long are invoices kept?"}'


@pytest.fixture
def app_installed(app):
    app.pipeline.ingest(IngestItem(tenant="acme", key="tenants/acme/retention.txt",
                                   data=b"Invoices are kept for ten years. Payroll records are kept for seven years."))
    factory.use(app)
    yield app
    factory.use(None)


@pytest.fixture
def server(app_installed):
    from ragline.server import LocalApiServer

    srv = LocalApiServer("127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1], mint_token(app_installed.settings, "acme", "alice", [])
    srv.shutdown()
    srv.server_close()


def lambda_call(method, path, body=b"", headers=None, *, base64_body=False, claims=CLAIMS):
    """The query Lambda fed an API Gateway v2 event; ``base64_body`` encodes the body as API
    Gateway does for a request without a text content type."""
    event = http_event(method, path, dict(headers or {}), body, claims)
    if base64_body and body:
        event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode(), True
    out = load_handler("query").lambda_handler(event, LambdaContext("query"))
    return out["statusCode"], {k.lower(): v for k, v in (out.get("headers") or {}).items()}, (out.get("body") or "").encode()


def local_call(server, method, path, body=b"", headers=None):
    port, token = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body or None, headers={"Authorization": f"Bearer {token}", **(headers or {})})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


@pytest.fixture(params=["lambda", "local"])
def send(request, app_installed):
    """One client per path: both must answer alike."""
    if request.param == "lambda":
        return lambda_call
    srv = request.getfixturevalue("server")
    return lambda method, path, body=b"", headers=None: local_call(srv, method, path, body, headers)


JSON = {"Content-Type": "application/json"}


# -- bug 4: JSON that Powertools' parser turns into a 500 ------------------------------------------

@pytest.mark.parametrize("body,fragment", [
    (b'{"question":' + b"[" * 2000 + b"]" * 2000 + b"}", "nested too deeply"),  # RecursionError
    (b'{"question":' + b"[" * 100 + b"]" * 100 + b"}", "nested too deeply"),  # deep, not past the limit
    (b'{"question": "x", "top_k": ' + b"1" * 4301 + b"}", "too many digits"),  # int digit limit
    (b'{"question": ', "not valid JSON"),
    (b"{not json", "not valid JSON"),
    (b'{"question": "caf\\ud800?"}', "surrogate"),  # valid syntax, not encodable as UTF-8
])
def test_bad_json_is_422_invalid_json_with_a_clear_message(send, body, fragment):
    status, _, out = send("POST", "/v1/query", body, JSON)
    assert status == 422, out
    payload = json.loads(out)
    assert payload["error"] == "invalid_json"
    assert fragment in payload["message"]
    assert "JSON decode error" not in payload["message"] and "Traceback" not in payload["message"]


def test_ordinary_bad_json_names_the_position(send):
    status, _, out = send("POST", "/v1/query", b'{"question": "x",}', JSON)
    assert status == 422
    assert json.loads(out)["message"].startswith("the request body is not valid JSON: ") and "line 1, column" in json.loads(out)["message"]


def test_a_valid_body_still_answers(send):
    status, _, out = send("POST", "/v1/query", QUESTION, JSON)
    assert status == 200 and json.loads(out)["citations"], out


# -- bug 5: a body that is not UTF-8 --------------------------------------------------------------

LATIN1 = b'{"question": "caf\xe9?"}'


def test_non_utf8_body_is_4xx_alike_on_lambda_and_local(server):
    # API Gateway base64-encodes a body sent without a text content type
    ls, _, lb = lambda_call("POST", "/v1/query", LATIN1, {}, base64_body=True)
    ss, _, sb = local_call(server, "POST", "/v1/query", LATIN1, {})
    assert ls == ss == 422
    assert json.loads(lb) == json.loads(sb)
    assert json.loads(lb)["error"] == "invalid_json" and "not UTF-8" in json.loads(lb)["message"]
    # and with a JSON content type
    ss, _, sb = local_call(server, "POST", "/v1/query", b"\xff\xfe\x00garbage", JSON)
    assert ss == 422 and "not UTF-8" in json.loads(sb)["message"]


def test_base64_utf8_body_is_accepted_on_lambda(app_installed):
    status, _, out = lambda_call("POST", "/v1/query", QUESTION, {}, base64_body=True)
    assert status == 200, out


def test_base64_body_size_is_counted_decoded(app_installed):
    """A body just under the limit is not a 413 because base64 makes it a third larger."""
    limit = app_installed.settings.max_body_bytes
    body = b'{"question": "' + b"q" * (limit - 20) + b'"}'
    assert len(body) <= limit < len(base64.b64encode(body))
    status, _, out = lambda_call("POST", "/v1/query", body, {}, base64_body=True)
    assert status == 422 and json.loads(out)["error"] == "invalid_request"  # too long a question, not too large a body


# -- bug 6: JSON media types in any case, and +json ------------------------------------------------

@pytest.mark.parametrize("ctype", ["Application/JSON", "application/vnd.api+json", "APPLICATION/JSON; charset=utf-8",
                                   "application/json;charset=UTF-8"])
def test_json_media_types_are_case_insensitive(send, ctype):
    status, _, out = send("POST", "/v1/query", QUESTION, {"Content-Type": ctype})
    assert status == 200, out


def test_non_json_media_type_is_still_415(send):
    status, _, out = send("POST", "/v1/query", QUESTION, {"Content-Type": "text/plain"})
    assert status == 415 and json.loads(out)["error"] == "unsupported_media_type"


# -- bug 7: the local server's Content-Length -------------------------------------------------------

def _raw_request(port, head: bytes, body: bytes = b"") -> bytes:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(head + body)
        data = b""
        while chunk := s.recv(65536):  # the server must answer and close, not hang
            data += chunk
        return data
    finally:
        s.close()


@pytest.mark.parametrize("header,status,fragment", [
    (b"Content-Length: abc", 400, b"Content-Length"),
    (b"Content-Length: -1", 400, b"Content-Length"),
    (b"Content-Length: +5", 400, b"Content-Length"),
    (b"Content-Length: 5\r\nContent-Length: 7", 400, b"Content-Length"),
    (b"Transfer-Encoding: chunked", 411, b"Content-Length"),
])
def test_local_bad_content_length_is_4xx_and_closes(server, capsys, header, status, fragment):
    port, token = server
    head = (b"POST /v1/query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode()
            + b"\r\nContent-Type: application/json\r\n" + header + b"\r\n\r\n")
    data = _raw_request(port, head, b"5\r\nhello\r\n0\r\n\r\n" if b"chunked" in header else b"")
    assert data.startswith(b"HTTP/1.1 %d " % status), data[:200]
    assert fragment in data.split(b"\r\n\r\n", 1)[1]
    assert b"Traceback" not in data and "Traceback" not in capsys.readouterr().err
    # the server still answers
    assert local_call(server, "POST", "/v1/query", QUESTION, JSON)[0] == 200


# -- suspicion 3: a known route with the wrong method -----------------------------------------------

@pytest.mark.parametrize("method,path,allow", [
    ("PUT", "/v1/query", "POST"),
    ("GET", "/v1/query", "POST"),
    ("PATCH", "/v1/documents", "GET"),
    ("POST", "/v1/documents/doc_1", "DELETE, GET"),
])
def test_wrong_method_on_a_known_route_is_405_with_allow(send, method, path, allow):
    status, headers, out = send(method, path, b"{}" if method in ("PUT", "PATCH", "POST") else b"", JSON)
    assert status == 405, out
    assert headers["allow"] == allow
    assert json.loads(out)["error"] == "method_not_allowed"


def test_unknown_route_is_still_404(send):
    status, headers, out = send("GET", "/v1/nowhere")
    assert status == 404 and "allow" not in headers and json.loads(out)["error"] == "not_found"


def test_head_is_405_without_a_body_on_the_local_server(server):
    status, headers, out = local_call(server, "HEAD", "/v1/documents")
    assert status == 405 and headers["allow"] == "GET" and out == b""
    status, headers, out = local_call(server, "HEAD", "/v1/nowhere")
    assert status == 404 and out == b""
    # the same connection serves the next request with its body
    port, token = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("HEAD", "/v1/documents", headers={"Authorization": f"Bearer {token}"})
    r = conn.getresponse()
    assert r.status == 405 and r.read() == b""
    conn.request("GET", "/v1/documents", headers={"Authorization": f"Bearer {token}"})
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["count"] == 1
    conn.close()


def test_head_on_lambda_is_405_with_allow(app_installed):
    status, headers, _ = lambda_call("HEAD", "/v1/documents")
    assert status == 405 and headers["allow"] == "GET"


# -- bug 10: a name with a trailing newline -----------------------------------------------------------

def test_tenant_and_group_with_trailing_newline_are_refused(app_installed):
    settings = app_installed.settings
    with pytest.raises(Unauthorized):
        principal_from_claims(settings, {"sub": "alice", "custom:tenant": "acme\n"})
    p = principal_from_claims(settings, {"sub": "alice", "custom:tenant": "acme", "cognito:groups": '["board\\n", "ok"]'})
    assert p.groups == frozenset({"ok"})
    for tenant, groups in [("acme\n", []), ("acme", ["board\n"])]:
        with pytest.raises(ValueError):
            mint_token(settings, tenant, "alice", groups)
    status, _, out = lambda_call("GET", "/v1/documents", claims={"sub": "alice", "custom:tenant": "acme\n"})
    assert status == 401, out


def test_key_and_slug_patterns_refuse_a_trailing_newline():
    from ragline.adapters.local.tenant_index import tenant_slug
    from ragline.ingest.events import tenant_of

    assert tenant_of("tenants/acme/a.txt") == ("acme", "a.txt")
    assert tenant_of("tenants/acme/a.txt\n") is None  # not ("acme", "a.txt"): that is another key
    assert tenant_slug("acme") == "acme"
    assert tenant_slug("acme\n") != "acme\n" and tenant_slug("acme\n").startswith("h.")


def test_a_repeated_query_parameter_is_refused_alike(send):
    # API Gateway joins repeated parameters with commas; the local server did "last one wins",
    # which answered 200 with days=30 (or hid an out-of-range days=400) where AWS says 422
    for query in ("days=3&days=30", "days=400&days=3"):
        status, _, out = send("GET", f"/v1/usage?{query}")
        assert status == 422, (query, out)
        assert json.loads(out)["error"] == "invalid_request"
    assert send("GET", "/v1/usage?days=3")[0] == 403  # one value passes validation (this user is no admin)
