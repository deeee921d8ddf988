"""Query Lambda: API Gateway HTTP API (v2) -> the Ragline HTTP routes.

Thin by design: the resolver, routes and error mapping live in ``ragline.api.http``; the
service is built once per container by ``ragline.factory``.
"""

from __future__ import annotations

import json

from ragline import factory
from ragline.api.http import build_resolver
from ragline.observability import logger, metrics, tracer
from ragline.runtime import set_deadline_from

app = build_resolver(factory.default, factory.current_settings)


@logger().inject_lambda_context(correlation_id_path="requestContext.requestId", clear_state=True)
@tracer().capture_lambda_handler(capture_response=False)
@metrics().log_metrics
def lambda_handler(event: dict, context) -> dict:
    set_deadline_from(context)
    body = event.get("body") or ""
    if len(body.encode() if isinstance(body, str) else body) > factory.current_settings().max_body_bytes:
        return {
            "statusCode": 413,
            "headers": {"Content-Type": "application/json"},
            "body": json.dumps({"error": "payload_too_large",
                                "message": f"the request body is over {factory.current_settings().max_body_bytes} bytes"}),
        }
    return app.resolve(event, context)
