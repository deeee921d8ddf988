"""The local API: each HTTP request becomes an API Gateway HTTP API (v2) event, and the very
handler the query Lambda runs (``functions/query/handler.py``) answers it.

The server does what API Gateway's JWT authorizer does in AWS: it verifies the bearer token
(signature, issuer, audience, expiry) and puts its claims in
``requestContext.authorizer.jwt.claims``. A request without a valid token gets 401.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from . import factory
from .auth import verify_token
from .errors import Unauthorized


def functions_dir() -> Path:
    env = os.environ.get("RAGLINE_FUNCTIONS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "functions"


def load_handler(name: str) -> ModuleType:
    """Import ``functions/<name>/handler.py`` as the Lambda runtime would."""
    path = functions_dir() / name / "handler.py"
    if not path.exists():
        raise FileNotFoundError(f"no Lambda handler at {path}")
    mod_name = f"ragline_function_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module


class LambdaContext:
    """The attributes of the Lambda context object that handlers and Powertools read."""

    def __init__(self, name: str, timeout_s: float = 30.0):
        self.function_name = f"ragline-{name}-local"
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 1024
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{self.function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _as_gateway_claim(value: Any) -> str:
    """A verified token's claim as API Gateway's JWT authorizer hands it on: every value a
    string, an array as ``[a b c]``, a boolean as ``true`` / ``false``. The local server passes
    claims in that form too, so both read identity through exactly the same parsing."""
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_as_gateway_claim(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, type(None))):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def http_event(method: str, raw_path: str, headers: dict[str, str], body: bytes, claims: dict | None,
               source_ip: str = "127.0.0.1") -> dict:
    """An API Gateway HTTP API payload v2.0 event, shaped as AWS sends it."""
    parts = urlsplit(raw_path)
    now = datetime.now(UTC)
    # repeated parameters joined with commas, as API Gateway's payload 2.0 does (Powertools
    # splits them again), so "?days=3&days=30" is refused here exactly as in AWS
    query: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        query[name] = f"{query[name]},{value}" if name in query else value
    # as API Gateway does: a UTF-8 body travels as text, any other as base64 (isBase64Encoded);
    # the handler's precheck then refuses a non-UTF-8 JSON body, here exactly as in AWS
    text_body: str | None = None
    is_base64 = False
    if body:
        try:
            text_body = body.decode("utf-8")
        except UnicodeDecodeError:
            text_body, is_base64 = base64.b64encode(body).decode("ascii"), True
    event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.path,
        "rawQueryString": parts.query,
        "headers": {k.lower(): v for k, v in headers.items()},
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": "127.0.0.1",
            "domainPrefix": "local",
            "http": {"method": method, "path": parts.path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                     "userAgent": headers.get("User-Agent", "")},
            "requestId": uuid.uuid4().hex,
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": is_base64,
    }
    if query:
        event["queryStringParameters"] = query
    if text_body is not None:
        event["body"] = text_body
    if claims is not None:
        event["requestContext"]["authorizer"] = {"jwt": {"claims": {k: _as_gateway_claim(v) for k, v in claims.items()},
                                                         "scopes": None}}
    return event


def web_page() -> bytes:
    """The small operator page shipped in the package (static HTML with its own JS; no CDN)."""
    return (Path(__file__).resolve().parent / "data" / "web" / "index.html").read_bytes()


_DIGITS = re.compile(r"[0-9]+")


class _Handler(BaseHTTPRequestHandler):
    server_version = "ragline-local"
    protocol_version = "HTTP/1.1"
    timeout = 60  # seconds a connection may stall (a body shorter than its Content-Length, an idle keep-alive)

    def log_message(self, fmt, *args):  # quiet by default
        if os.environ.get("RAGLINE_ACCESS_LOG"):
            super().log_message(fmt, *args)

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        for k, v in hdrs.items():
            if k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":  # the answer to HEAD has the headers of the response, never its body
            self.wfile.write(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors (an unknown method, a malformed request line or header) in the
        API's JSON error shape instead of the stdlib's HTML page; an unknown method is a 405."""
        self.close_connection = True
        if code == 501:
            self._send(405, json.dumps({"error": "method_not_allowed",
                                        "message": f"method {getattr(self, 'command', '?')} is not allowed"}).encode(),
                       {"Allow": "GET, POST, DELETE", "Connection": "close"})
            return
        if getattr(self, "request_version", None) is None:  # the request line itself was unreadable
            self.request_version = "HTTP/1.0"
        self._send(code, json.dumps({"error": "bad_request" if code < 500 else "internal_error",
                                     "message": message or "the request could not be parsed"}).encode(),
                   {"Connection": "close"})

    def _json_error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps({"error": code, "message": message}).encode(), headers)

    def _refuse_framing(self, status: int, code: str, message: str) -> None:
        """A request whose body cannot be delimited: answer, then close the connection (what
        follows on it cannot be told apart from the body)."""
        self.close_connection = True
        self._json_error(status, code, message, {"Connection": "close"})

    def _content_length(self) -> int | None:
        """The body length, or None after refusing a request whose framing is unusable: a
        Transfer-Encoding (chunked bodies are not supported: send Content-Length), a
        Content-Length that is not a non-negative integer, or several that disagree."""
        if self.headers.get("Transfer-Encoding"):
            self._refuse_framing(411, "length_required",
                                 "Transfer-Encoding is not supported: send the body with a Content-Length")
            return None
        values = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        if not values:
            return 0
        if len(values) > 1:
            self._refuse_framing(400, "bad_request", "conflicting Content-Length headers")
            return None
        value = values.pop()
        if not _DIGITS.fullmatch(value):
            self._refuse_framing(400, "bad_request",
                                 f"Content-Length must be a non-negative integer, not {value[:40]!r}")
            return None
        return int(value) if len(value) <= 18 else sys.maxsize  # no int() of a 60 KB header

    def _dispatch(self, method: str) -> None:
        settings = factory.current_settings()
        length = self._content_length()
        if length is None:
            return
        try:
            if length > settings.max_body_bytes:
                unread = length > settings.max_body_bytes * 4  # then the rest stays unread: close
                self.close_connection = self.close_connection or unread
                self.rfile.read(min(length, settings.max_body_bytes * 4))
                self._json_error(413, "payload_too_large", f"the request body is over {settings.max_body_bytes} bytes",
                                 {"Connection": "close"} if unread else None)
                return
            body = self.rfile.read(length) if length else b""
        except OSError:  # the client went away, or sent less than its Content-Length (timeout)
            self.close_connection = True
            return
        if len(body) < length:  # the client closed the connection before the whole body
            self.close_connection = True
            return
        path = urlsplit(self.path).path
        if path in ("/healthz",):
            self._send(200, b'{"ok": true}')
            return
        if method in ("GET", "HEAD") and path in ("/", "/index.html"):
            # the operator page itself needs no token; its API calls carry the one the user pastes
            self._send(200, web_page(), {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store",
                                          "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'; "
                                                                     "style-src 'unsafe-inline'; img-src 'self' data:"})
            return
        auth = self.headers.get("Authorization", "")
        if not auth.lower().startswith("bearer "):
            self._json_error(401, "unauthorized", "missing bearer token: get one with `ragline token --tenant T --user U`")
            return
        try:
            claims = verify_token(settings, auth[7:].strip())
        except Unauthorized as exc:
            self._json_error(401, "unauthorized", exc.message)
            return
        event = http_event(method, self.path, dict(self.headers.items()), body, claims, self.client_address[0])
        try:
            # one request at a time through the handler, as one Lambda instance serves them: its
            # Powertools resolver (and logger, metrics) keep the current event on themselves, so two
            # requests at once could run with each other's claims, another tenant's principal
            with self.server.query_lock:
                result = self.server.query_handler.lambda_handler(event, LambdaContext("query"))
        except Exception:  # noqa: BLE001 - the handler maps errors itself; this is a last resort
            self._json_error(500, "internal_error", "an internal error occurred")
            return
        out = result.get("body") or ""
        if result.get("isBase64Encoded"):
            raw = base64.b64decode(out)
        else:
            raw = out.encode() if isinstance(out, str) else out
        headers = dict(result.get("headers") or {})
        self._send(int(result.get("statusCode", 200)), raw, headers)

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")


class LocalApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int):
        super().__init__((host, port), _Handler)
        self.query_handler = load_handler("query")
        self.query_lock = threading.Lock()


def serve(host: str = "127.0.0.1", port: int = 8080) -> None:
    srv = LocalApiServer(host, port)
    factory.default()  # build the service now so the first request does not pay for it
    print(f"Ragline local API on http://{host}:{srv.server_address[1]}  (Ctrl-C to stop)", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
