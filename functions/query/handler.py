"""Query Lambda: API Gateway HTTP API (v2) -> the Ragline HTTP routes.

Thin by design: the resolver, routes and error mapping live in ``ragline.api.http``; the
service is built once per container by ``ragline.factory``.
"""

from __future__ import annotations

from ragline import factory
from ragline.api.http import build_resolver, precheck
from ragline.observability import logger, metrics, tracer
from ragline.runtime import invocation_deadline

app = build_resolver(factory.default, factory.current_settings)


@logger().inject_lambda_context(correlation_id_path="requestContext.requestId", clear_state=True)
@tracer().capture_lambda_handler(capture_response=False)
@metrics().log_metrics
@invocation_deadline
def lambda_handler(event: dict, context) -> dict:
    refused = precheck(event, factory.current_settings().max_body_bytes)
    if refused is not None:
        return refused
    return app.resolve(event, context)
