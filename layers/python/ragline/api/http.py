"""The HTTP API (API Gateway HTTP API v2 events), with Powertools' resolver.

Routes validate their input with pydantic models; domain errors map to HTTP status codes here
and nowhere else; the caller's identity comes only from the authorizer's JWT claims.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError, ServiceError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
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


def _view(rec) -> dict[str, Any]:
    d = rec.public_view()
    return {k: d.get(k) for k in DocumentView.model_fields}


def _error(status: int, code: str, message: str, details: Any = None) -> Response:
    body: dict[str, Any] = {"error": code, "message": message}
    if details is not None:
        body["details"] = details
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body=json.dumps(body))


def build_resolver(service: ServiceProvider, settings_provider: Callable[[], Any]) -> APIGatewayHttpResolver:
    app = APIGatewayHttpResolver(enable_validation=True)

    def principal() -> Principal:
        rc = app.current_event.raw_event.get("requestContext") or {}
        claims = ((rc.get("authorizer") or {}).get("jwt") or {}).get("claims")
        return principal_from_claims(settings_provider(), claims)

    @app.post("/v1/query", summary="Ask a question over your documents", tags=["query"])
    def query(body: QueryRequest) -> Answer:
        who = principal()
        return service().ask(who, body.question, top_k=body.top_k, use_cache=body.use_cache)

    @app.get("/v1/documents", summary="List your documents with their status", tags=["documents"])
    def list_documents() -> DocumentList:
        docs = [_view(r) for r in service().list_documents(principal())]
        return DocumentList.model_validate({"documents": docs, "count": len(docs)})

    @app.get("/v1/documents/<doc_id>", summary="One document's provenance and status", tags=["documents"])
    def get_document(doc_id: Annotated[str, Path(min_length=1, max_length=128)]) -> DocumentView:
        return DocumentView.model_validate(_view(service().get_document(principal(), doc_id)))

    @app.delete("/v1/documents/<doc_id>", summary="Delete a document and all its chunks", tags=["documents"])
    def delete_document(doc_id: Annotated[str, Path(min_length=1, max_length=128)]) -> dict[str, Any]:
        return service().delete_document(principal(), doc_id)

    @app.post("/v1/documents/upload-url", summary="A presigned upload under your tenant", tags=["documents"])
    def upload_url(body: UploadUrlRequest) -> dict[str, Any]:
        return service().upload_url(principal(), body.filename, body.content_type, body.size, body.groups)

    @app.post("/v1/feedback", summary="Thumbs up or down on an answer", tags=["feedback"])
    def feedback(body: FeedbackRequest) -> dict[str, Any]:
        return service().feedback(principal(), body.query_id, body.rating, body.comment)

    @app.get("/v1/usage", summary="Tokens and cost for your tenant", tags=["usage"])
    def usage(days: Annotated[int, Query(ge=1, le=366)] = 7) -> dict[str, Any]:
        return service().usage(principal(), days)

    @app.get("/v1/ops/stats", summary="Operating figures: latency, cache, cost, documents, evaluation, drift", tags=["ops"])
    def ops_stats(days: Annotated[int, Query(ge=1, le=90)] = 7,
                  all_tenants: Annotated[bool, Query(description="Every tenant (needs the admin scope)")] = False) -> dict[str, Any]:
        from ..operations.figures import figures

        who = principal()
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

    @app.exception_handler(NotFoundError)
    def _no_route(exc: NotFoundError) -> Response:
        return _error(404, "not_found", f"no route {app.current_event.http_method} {app.current_event.path}")

    @app.exception_handler(ServiceError)
    def _service_error(exc: ServiceError) -> Response:
        return _error(exc.status_code, "error", exc.msg)

    @app.exception_handler(Exception)
    def _unexpected(exc: Exception) -> Response:
        logger().exception("unhandled error")
        return _error(500, "internal_error", "an internal error occurred; it has been logged")

    return app


def openapi_json(app: APIGatewayHttpResolver) -> str:
    return app.get_openapi_json_schema(
        title="Ragline API", version="1", description="Retrieval-augmented answers over your documents.",
    )
