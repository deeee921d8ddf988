"""Cache Lambda: semantic-cache lookup and invalidation for a tenant, invoked directly by
trusted internal callers (IAM-protected; not exposed through the API). The lookup is the very
code ``ask`` runs, so a hit here is a hit there.

Events: {"action": "lookup", "tenant": T, "groups": [...], "question": Q}
        {"action": "invalidate", "tenant": T, "doc_id": D}   # doc_id omitted: clear the tenant
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from ragline import factory
from ragline.errors import RaglineError
from ragline.models import TenantScope
from ragline.observability import logger, metrics, tracer
from ragline.runtime import invocation_deadline

_NAME = r"^[A-Za-z0-9][\w.@:+-]{0,127}$"


class Lookup(BaseModel):
    action: Literal["lookup"]
    tenant: str = Field(pattern=_NAME)
    groups: list[Annotated[str, Field(pattern=_NAME)]] = Field(default_factory=list, max_length=50)
    question: str = Field(min_length=1, max_length=2000)


class Invalidate(BaseModel):
    action: Literal["invalidate"]
    tenant: str = Field(pattern=_NAME)
    doc_id: str | None = Field(default=None, max_length=128)


CacheRequest = TypeAdapter(Annotated[Lookup | Invalidate, Field(discriminator="action")])


@logger().inject_lambda_context(clear_state=True)
@tracer().capture_lambda_handler(capture_response=False)
@metrics().log_metrics
@invocation_deadline
def lambda_handler(event: dict, context) -> dict:
    try:
        req = CacheRequest.validate_python(event)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in exc.errors()[:5])
        return {"error": "invalid_request", "message": f"the cache request is not valid: {problems}"}
    app = factory.default()
    try:
        if isinstance(req, Lookup):
            return app.cache_lookup(TenantScope(req.tenant, frozenset(req.groups)), req.question)
        return app.cache_invalidate(req.tenant, req.doc_id)
    except RaglineError as exc:
        return {"error": exc.code, "message": exc.message}
