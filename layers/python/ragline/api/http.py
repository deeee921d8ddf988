"""The HTTP API (API Gateway HTTP API v2 events), with Powertools' resolver.

Routes validate their input with pydantic models; domain errors map to HTTP status codes here
and nowhere else; the caller's identity comes only from the authorizer's JWT claims.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestUnsupportedContentType, RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from pydantic import BaseModel, ConfigDict, Field

from ..auth import principal_from_claims
from ..errors import RaglineError
from ..models import Answer, Principal
from ..observability import logger

ServiceProvider = Callable[[], Any]  # returns a ragline.service.Ragline


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1, max_length=2000, description="The question, in plain language")
    top_k: int | None = Field(default=None, ge=1, le=20, description="Passages to cite (default from settings)")
    use_cache: bool = Field(default=True, description="Allow an answer from the semantic cache")


class UploadUrlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filename: str = Field(min_length=1, max_length=255)
    content_type: str | None = Field(default=None, max_length=255)
    size: int = Field(gt=0, description="Size of the file in bytes")
    groups: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(default_factory=list, max_length=20)


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query_id: str = Field(min_length=1, max_length=64)
    rating: Literal[1, -1]
    comment: str | None = Field(default=None, max_length=2000)


class DocumentView(BaseModel):
    doc_id: str
    source_key: str
    title: str | None = None
    status: str
    reason: str | None = None
    version: str | None = None
    chunks: int
    pages: int | None = None
    groups: list[str]
    content_type: str | None = None
    size_bytes: int | None = None
    embedding_model: str | None = None
    chunker: str | None = None
    updated_at: str


class DocumentList(BaseModel):
    documents: list[DocumentView]
    count: int


class ErrorBody(BaseModel):
    """Every error the API returns has this shape (status codes map from domain errors here)."""

    error: str = Field(description="A stable machine-readable code, e.g. invalid_request")
    message: str = Field(description="What went wrong, in words safe to show the caller")
    details: Any | None = Field(default=None, description="Per-field problems, for invalid requests")


_ERRORS = {
    400: "The request is well-formed but not acceptable (e.g. an unsupported file type)",
    401: "Missing, invalid or expired bearer token",
    403: "The caller may not do this",
    404: "No such resource (or not visible to the caller)",
    413: "The request body is too large",
    415: "The request body is not JSON (send Content-Type: application/json)",
    422: "The request does not match the schema",
    429: "The tenant's budget or rate is exhausted",
    500: "An internal error (logged)",
    503: "A dependency (search, model, store) is unavailable; retry later",
}


def _responses(ok_model: Any, description: str = "Successful Response") -> dict[int, Any]:
    """The documented responses of a route: its success body and every error, all in ErrorBody
    shape, so clients and contract tests can rely on them."""
    out: dict[int, Any] = {200: {"description": description, "content": {"application/json": {"model": ok_model}}}}
    for code, text in _ERRORS.items():
        out[code] = {"description": text, "content": {"application/json": {"model": ErrorBody}}}
    return out


def _view(rec) -> dict[str, Any]:
    d = rec.public_view()
    return {k: d.get(k) for k in DocumentView.model_fields}


def _error(status: int, code: str, message: str, details: Any = None) -> Response:
    body: dict[str, Any] = {"error": code, "message": message}
    if details is not None:
        body["details"] = details
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(body))


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MAX_JSON_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


def _refuse(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> dict:
    return {"statusCode": status, "headers": {"Content-Type": "application/json", **(headers or {})},
            "body": json.dumps({"error": code, "message": message})}


def _is_json_media(media: str) -> bool:
    return media == "application/json" or media.endswith("+json")


def _json_problem(text: str) -> str | None:
    """Why ``text`` is not a JSON document the routes can take, in words for the caller, or
    None. Catches what Powertools' own parsing turns into a 500 (nesting past the interpreter's
    recursion limit, an integer literal past Python's digit limit) and what would fail later
    (an unpaired surrogate escape cannot be encoded as UTF-8)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"the request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    except RecursionError:
        return f"the request body is nested too deeply (at most {MAX_JSON_DEPTH} levels)"
    except ValueError:  # int() digit limit ("Exceeds the limit (4300 digits) ...")
        return "the request body is not valid JSON: a number has too many digits"
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                return f"the request body is nested too deeply (at most {MAX_JSON_DEPTH} levels)"
            items = [*node.keys(), *node.values()] if isinstance(node, dict) else node
            stack.extend((v, depth + 1) for v in items)
        elif isinstance(node, str) and _SURROGATE.search(node):
            return "the request body is not valid JSON: it contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)"
    return None


def precheck(event: dict, max_body_bytes: int) -> dict | None:
    """Refusals made before routing, as API Gateway v2 responses, and the normalisation of what
    it accepts, so that the Lambda and the local server (which runs this same handler) answer a
    request alike:

    * a body over the limit (413; counted in bytes after base64 decoding);
    * a body that is not JSON by its media type (415; every route takes JSON, and Powertools'
      multipart parser would otherwise fail on a malformed multipart header with a 500);
    * on a method that carries a body, a body that is not UTF-8, not valid JSON, nested over
      ``MAX_JSON_DEPTH`` or with a number past Python's digit limit (422 ``invalid_json``, as
      any malformed JSON; Powertools would answer some of these with a 500).

    An accepted body is left in the event as UTF-8 text (``isBase64Encoded`` false) and its
    JSON media type (any case, ``+json``, parameters) as ``content-type: application/json``,
    the only spelling Powertools' validation accepts."""
    body = event.get("body") or ""
    raw: bytes
    if event.get("isBase64Encoded") and body:
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return _refuse(400, "bad_request", "the request body is not valid base64 (isBase64Encoded is set)")
    else:
        raw = body.encode("utf-8", errors="surrogatepass") if isinstance(body, str) else bytes(body)
    size = len(raw)
    if size > max_body_bytes:
        return _refuse(413, "payload_too_large", f"the request body is over {max_body_bytes} bytes")
    headers = event.get("headers") or {}
    ctype_keys = [k for k in headers if k.lower() == "content-type"]
    ctype = str(headers[ctype_keys[0]]) if ctype_keys else ""
    media = ctype.split(";")[0].strip().lower()
    if size and media and not _is_json_media(media):
        return _refuse(415, "unsupported_media_type",
                       f"the request body must be JSON (application/json or a +json type), not {media[:100]}")
    method = str(((event.get("requestContext") or {}).get("http") or {}).get("method") or "").upper()
    if size and method in _BODY_METHODS:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return _refuse(422, "invalid_json",
                           f"the request body is not UTF-8 (invalid byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                           "JSON must be sent as UTF-8")
        problem = _json_problem(text)
        if problem:
            return _refuse(422, "invalid_json", problem)
        event["body"] = text
        event["isBase64Encoded"] = False
    if media:
        for k in ctype_keys:
            del headers[k]
        headers["content-type"] = "application/json"
    return None


_SEGMENT = r"[-._~()'!*:@,;=+&$%<> \[\]{}|^\w]+"


class RouteTable:
    """Declares routes on the resolver and remembers them: Powertools keeps no public route
    table, and the 405 handler needs the methods a known path takes (its ``Allow`` header).
    ``table.get(rule, ...)`` is ``app.get(rule, ...)``, and so on for every method."""

    def __init__(self, app: APIGatewayHttpResolver):
        self.app = app
        self.routes: list[tuple[re.Pattern[str], str]] = []
        self.declared: list[tuple[str, str]] = []  # (method, rule) as declared

    @staticmethod
    def pattern(rule: str) -> re.Pattern[str]:
        # "<name>" matches what it matches in Powertools' dynamic routes (the RFC 3986 safe and
        # unsafe characters and word characters, never "/"); the rest is literal
        parts = re.split(r"<\w+>", rule)
        return re.compile("^" + _SEGMENT.join(re.escape(part) for part in parts) + "$")

    def _declare(self, method: str):
        def declare(rule: str, *args, **kwargs):
            self.routes.append((self.pattern(rule), method.upper()))
            self.declared.append((method, rule))
            return getattr(self.app, method)(rule, *args, **kwargs)

        return declare

    def __getattr__(self, method: str):
        if method not in ("get", "post", "put", "patch", "delete", "head"):
            raise AttributeError(method)
        return self._declare(method)

    def allowed(self, path: str) -> list[str]:
        """The methods the declared routes take at ``path`` (empty: no such route)."""
        return sorted({method for rule, method in self.routes if rule.match(path)})


def build_resolver(service: ServiceProvider, settings_provider: Callable[[], Any]) -> APIGatewayHttpResolver:
    app = APIGatewayHttpResolver(enable_validation=True)
    routes = app.ragline_routes = RouteTable(app)

    def principal() -> Principal:
        rc = app.current_event.raw_event.get("requestContext") or {}
        claims = ((rc.get("authorizer") or {}).get("jwt") or {}).get("claims")
        return principal_from_claims(settings_provider(), claims)

    @routes.post("/v1/query", summary="Ask a question over your documents", tags=["query"],
             responses=_responses(Answer))
    def query(body: QueryRequest) -> Answer:
        who = principal()
        return service().ask(who, body.question, top_k=body.top_k, use_cache=body.use_cache)

    @routes.get("/v1/documents", summary="List your documents with their status", tags=["documents"],
             responses=_responses(DocumentList))
    def list_documents() -> DocumentList:
        docs = [_view(r) for r in service().list_documents(principal())]
        return DocumentList.model_validate({"documents": docs, "count": len(docs)})

    @routes.get("/v1/documents/<doc_id>", summary="One document's provenance and status", tags=["documents"],
             responses=_responses(DocumentView))
    def get_document(doc_id: Annotated[str, Path(min_length=1, max_length=128)]) -> DocumentView:
        return DocumentView.model_validate(_view(service().get_document(principal(), doc_id)))

    @routes.delete("/v1/documents/<doc_id>", summary="Delete a document and all its chunks", tags=["documents"],
             responses=_responses(dict[str, Any]))
    def delete_document(doc_id: Annotated[str, Path(min_length=1, max_length=128)]) -> dict[str, Any]:
        return service().delete_document(principal(), doc_id)

    @routes.post("/v1/documents/upload-url", summary="A presigned upload under your tenant", tags=["documents"],
             responses=_responses(dict[str, Any]))
    def upload_url(body: UploadUrlRequest) -> dict[str, Any]:
        return service().upload_url(principal(), body.filename, body.content_type, body.size, body.groups)

    @routes.post("/v1/feedback", summary="Thumbs up or down on an answer", tags=["feedback"],
             responses=_responses(dict[str, Any]))
    def feedback(body: FeedbackRequest) -> dict[str, Any]:
        return service().feedback(principal(), body.query_id, body.rating, body.comment)

    @routes.get("/v1/usage", summary="Tokens and cost for your tenant", tags=["usage"],
             responses=_responses(dict[str, Any]))
    def usage(days: Annotated[int, Query(ge=1, le=366)] = 7) -> dict[str, Any]:
        return service().usage(principal(), days)

    @routes.get("/v1/ops/stats", summary="Operating figures: latency, cache, cost, documents, evaluation, drift", tags=["ops"],
             responses=_responses(dict[str, Any]))
    def ops_stats(days: Annotated[int, Query(ge=1, le=90)] = 7,
                  all_tenants: Annotated[bool, Query(description="Every tenant (needs the admin scope)")] = False) -> dict[str, Any]:
        from ..operations.figures import figures

        who = principal()
        # the tenant's costs, latency and document counts (of documents its members may not all
        # see) are the tenant admins' view
        service().require_admin(who, "reading the operating figures")
        if all_tenants and settings_provider().admin_scope not in who.scopes:
            from ..errors import Forbidden

            raise Forbidden("the cross-tenant view needs the admin scope")
        return figures(service(), None if all_tenants else who.tenant, days=days)

    @app.exception_handler(RaglineError)
    def _domain_error(exc: RaglineError) -> Response:
        if exc.http_status >= 500:
            logger().warning("request failed", extra={"error": exc.code, "reason": exc.message})
        return _error(exc.http_status, exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    def _invalid(exc: RequestValidationError) -> Response:
        details = [
            {"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "problem": e.get("msg")}
            for e in exc.errors()
        ]
        summary = "; ".join(f"{d['field'] or 'body'}: {d['problem']}" for d in details[:5])
        return _error(422, "invalid_request", f"the request is not valid: {summary}", details)

    @app.exception_handler(RequestUnsupportedContentType)
    def _unsupported_type(exc: RequestUnsupportedContentType) -> Response:
        ctype = app.current_event.headers.get("content-type") or "(none)"
        return _error(415, "unsupported_media_type", f"the request body must be JSON (application/json), not {ctype[:100]}")

    @app.exception_handler(NotFoundError)
    def _no_route(exc: NotFoundError) -> Response:
        method, path = app.current_event.http_method.upper(), app.current_event.path
        allowed = routes.allowed(path)
        if allowed:  # a known route, another method: 405 with the methods it takes (RFC 9110 15.5.6)
            return Response(status_code=405, content_type=content_types.APPLICATION_JSON,
                            headers={"Allow": ", ".join(allowed)},
                            body=json.dumps({"error": "method_not_allowed",
                                             "message": f"{path} does not take {method[:16]}; it takes {', '.join(allowed)}"}))
        return _error(404, "not_found", f"no route {method[:16]} {path[:200]}")

    @app.exception_handler(ServiceError)
    def _service_error(exc: ServiceError) -> Response:
        return _error(exc.status_code, "error", exc.msg)

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response:
        logger().exception("unhandled error")
        return _error(500, "internal_error", "an internal error occurred; it has been logged")

    return app


def openapi_json(app: APIGatewayHttpResolver) -> str:
    from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

    return app.get_openapi_json_schema(
        title="Ragline API", version="1", description="Retrieval-augmented answers over your documents.",
        security_schemes={"bearerAuth": HTTPBearer(scheme="bearer", bearerFormat="JWT",
                                                   description="A JWT; API Gateway's authorizer verifies it")},
        security=[{"bearerAuth": []}],
    )
